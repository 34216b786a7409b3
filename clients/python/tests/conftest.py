"""A real redis-server for the tests, on a free loopback port (never 6379), one per session;
every test gets an empty database and a fresh client."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from keyway import Client

REPO = Path(__file__).resolve().parents[3]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A loopback port free now, picked below the kernel's ephemeral range: outgoing connections
    (the tests make many) take their local ports from that range, so none can take this one
    before the server binds it."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10000, low) if low > 10100 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port != 6379:
            return port
    pytest.fail("no free loopback port below the ephemeral range")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not on PATH; install it (Debian/Ubuntu: `apt-get install redis-server`)")
    workdir = tempfile.mkdtemp(prefix="keyway-py-redis-")
    # Ready means this server's own log says so (a PONG on the port could come from another
    # test's server that holds it); a start that lost the port to someone else is retried.
    for attempt in range(10):
        port = _free_port()
        log = Path(workdir) / f"redis-{attempt}.log"
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and "Ready to accept connections" in log.read_text(errors="replace"):
                ready = True
                break
            time.sleep(0.02)
        if ready:
            break
        proc.kill()
        proc.wait(timeout=10)
        said = log.read_text(errors="replace") if log.exists() else ""
        if "Address already in use" not in said:
            tail = " | ".join(said.strip().splitlines()[-3:])
            pytest.fail(f"redis-server on port {port} did not start: {tail or 'no log'}")
    else:
        pytest.fail("redis-server found every free port taken by the time it bound it")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    await r.flushall()
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
async def client(redis: aioredis.Redis) -> Client:
    # Short intervals, so trimming and shutdown happen within a test.
    return Client(redis, trim_interval=0.05, shutdown_deadline=1.0)
