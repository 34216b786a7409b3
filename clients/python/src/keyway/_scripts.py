"""The Lua scripts of the protocol: the very files of the Rust runtime, shipped in ``lua/``.

A group script is ``helpers.lua`` followed by its own file. ``tests/test_scripts.py`` (and the
workspace's ``tests/clients_python.rs``) fail when a copy here differs from the original.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

#: Script name → its file, as run (group scripts with their helpers).
GROUP_SCRIPTS = ("claim", "recover", "settle")
PLAIN_SCRIPTS = ("publish", "trim", "tend", "store_cas", "store_read",
                 "note_speculation")


def lua_file(name: str) -> str:
    """The text of ``lua/<name>``."""
    return resources.files("keyway").joinpath("lua", name).read_text(encoding="utf-8")


@cache
def script(name: str) -> str:
    """The text of script ``name`` as it is run."""
    if name in GROUP_SCRIPTS:
        return lua_file("helpers.lua") + lua_file(f"{name}.lua")
    if name in PLAIN_SCRIPTS:
        return lua_file(f"{name}.lua")
    raise KeyError(f"no script named {name!r}")
