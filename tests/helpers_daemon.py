"""Run ``heartbeat run`` as a real subprocess and read its JSON log lines; DAEMON is
the config layer for it (``write_config(path, toml(url, DAEMON, ...))``).

Used by tests that need real signals and a real process: the daemon's stdout is not a
TTY, so it logs JSON lines, which the reader task parses as they arrive.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from tests.support import Sections

#: Every line any daemon subprocess wrote to stdout during the session (scanned for
#: secrets by tests/test_zz_secrets.py).
OUTPUT: list[str] = []


class Daemon:
    def __init__(self, process: Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = anyio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", errors="replace")
                self.raw.append(text)
                OUTPUT.append(text)
                try:
                    self.events.append(json.loads(text))
                except ValueError:
                    self.events.append({"event": "_unparsed", "text": text})
            self._changed.set()
            self._changed = anyio.Event()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def wait_for(self, event: str, count: int = 1, within: float = 15.0) -> dict[str, Any]:
        """The ``count``-th ``event`` logged; fails after ``within`` seconds."""
        with anyio.fail_after(within):
            while len(self.named(event)) < count:
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"daemon exited ({self.process.returncode}) before {event}: {self.raw}"
                    )
                with anyio.move_on_after(0.2):
                    await self._changed.wait()
        return self.named(event)[count - 1]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signal.Signals(signum))

    async def wait(self, within: float = 20.0) -> int:
        with anyio.fail_after(within):
            return await self.process.wait()


@asynccontextmanager
async def run_daemon(
    config: Path, *args: str, env: dict[str, str] | None = None, command: Sequence[str] = ("run",)
) -> AsyncIterator[Daemon]:
    """Start ``python -m heartbeat run --config CONFIG ARGS``; kill it at the end if alive."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    environment.update(env or {})
    environment["PYTHONUNBUFFERED"] = "1"
    process = await anyio.open_process(
        [sys.executable, "-m", "heartbeat", *command, "--config", str(config), *args],
        env=environment,
        stderr=None,
    )
    daemon = Daemon(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(daemon._read)
        try:
            yield daemon
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await process.wait()
            tg.cancel_scope.cancel()


#: The layer for a daemon under test (``toml(url, DAEMON, ...)``): JSON logs at debug
#: level, a check-in every second, quick retries.
DAEMON: Sections = {
    "elasticsearch": {"request_timeout": 5},
    "schedule": {"interval": 1.0, "jitter": 0.0, "shutdown_timeout": 5.0},
    "backoff": {"initial": 0.2, "max": 1.0},
    "jobs": {"ids": []},
    "logging": {"format": "json", "level": "debug"},
}
