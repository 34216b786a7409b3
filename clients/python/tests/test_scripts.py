"""The package runs the very scripts of the Rust runtime: its copies are the originals."""

from __future__ import annotations

import re

import pytest

from keyway import PROTOCOL_VERSION
from keyway._scripts import GROUP_SCRIPTS, PLAIN_SCRIPTS, lua_file, script

from conftest import REPO

ORIGINALS = {**{p.name: p for p in (REPO / "runtime/lua").glob("*.lua")},
             **{p.name: p for p in (REPO / "src/stages/lua").glob("*.lua")}}


@pytest.mark.skipif(not ORIGINALS, reason="not in a Keyway checkout: no originals to compare with")
def test_every_copy_is_byte_for_byte_the_original() -> None:
    names = {f"{n}.lua" for n in GROUP_SCRIPTS + PLAIN_SCRIPTS} | {"helpers.lua"}
    assert names == set(ORIGINALS), "the package knows every script of the repository and no other"
    for name, path in ORIGINALS.items():
        assert lua_file(name).encode() == path.read_bytes(), f"lua/{name} differs from {path}"


def test_group_scripts_are_the_helpers_then_their_file() -> None:
    for name in GROUP_SCRIPTS:
        assert script(name) == lua_file("helpers.lua") + lua_file(f"{name}.lua")
    assert script("publish") == lua_file("publish.lua")
    with pytest.raises(KeyError, match="no script named 'nope'"):
        script("nope")


def test_the_version_the_publish_script_writes_is_the_one_spoken_here() -> None:
    # The version is written by the shared script, never by a client: when the script writes
    # `v`, it must be this package's version.
    found = re.findall(r"'v',\s*'(\d+)'", lua_file("publish.lua"))
    assert all(int(v) == PROTOCOL_VERSION for v in found), found
