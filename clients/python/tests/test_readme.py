"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from conftest import REPO

README = REPO / "README.md"


@pytest.mark.skipif(not README.exists(), reason="not in a Keyway checkout")
async def test_the_readme_example_runs(redis: aioredis.Redis, redis_url: str) -> None:
    section = README.read_text().split("## Using Keyway from Python\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code.strip().splitlines()) <= 20
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO / "clients/python/src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "payments/batch/1 BATCH_STATE_MERGING",
        "handed over payments/batch/1 attempt 1",
    ]
