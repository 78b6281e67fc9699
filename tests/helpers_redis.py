"""A real ``redis-server`` on a loopback port, started and killed by the tests, and
what the queue tests share: their config layer, unique stream names, a producer client.

No persistence (``--save '' --appendonly no``): a restarted server starts empty, as
after losing its data. A missing ``redis-server`` fails the test with a clear message;
it never skips (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from tests.support import Sections, free_port

MISSING = (
    "redis-server is not on the PATH: the queue tests run a real one "
    "(apt-get install redis-server, or run .ci/run which installs it)"
)


def answers_ping(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if password is not None:
                sock.sendall(f"AUTH {password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``start()``, ``kill()`` (SIGKILL, as a crash), ``start()`` again on the same port."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(MISSING, pytrace=False)
        command = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not answers_ping(self.port, self.password):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


# -- for the queue tests -----------------------------------------------------------------

GROUP = "g"
CONSUMER = "c"

#: The layer for the queue tests (add ``queue={"url": ..., "stream": ...}``): the
#: group and consumer above, quick retries, no status reads, no state.
QUEUE: Sections = {
    "queue": {"group": GROUP, "consumer": CONSUMER},
    "schedule": {"status_check_interval": 0, "ramp_rate": 200},
    "backoff": {"initial": 0.05, "multiplier": 2.0, "max": 0.2},
    "state": {"dir": None},
}


def unique(prefix: str = "test") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def producer(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url, password=server.password)
    try:
        yield client
    finally:
        await client.aclose()


async def pending(client: Redis, stream: str, group: str = GROUP) -> int:
    info = await client.xpending(stream, group)
    return int(info["pending"])


async def settled(client: Redis, stream: str, group: str = GROUP) -> bool:
    """Every entry of the stream delivered to ``group`` and acknowledged."""
    groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
    last = await client.xrevrange(stream, count=1)
    group_info = groups.get(group)
    if group_info is None or not last:
        return False
    return bool(group_info["last-delivered-id"] == last[0][0] and group_info["pending"] == 0)
