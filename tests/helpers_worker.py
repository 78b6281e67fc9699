"""A connector worker stand-in for the [worker] tests: a real process with a pid file,
and a loopback health endpoint that can be switched between 200 and 503.

    worker = WorkerProcess(tmp_path / "worker.pid")
    worker.start()      # a new process; its pid written to the file, atomically
    worker.kill()       # SIGKILL, reaped: the pid file stays behind, as after a crash
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

#: The stand-in: write our own pid to argv[1] atomically, then sleep until killed.
WORKER_CODE = (
    "import os, sys, time\n"
    "path = sys.argv[1]\n"
    "with open(path + '.tmp', 'w') as f: f.write(f'{os.getpid()}\\n')\n"
    "os.replace(path + '.tmp', path)\n"
    "time.sleep(3600)\n"
)


class WorkerProcess:
    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> int:
        """Start a new incarnation and wait until its pid is in the file."""
        self.process = subprocess.Popen([sys.executable, "-c", WORKER_CODE, str(self.pid_file)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.pid_file.read_text().strip() == str(self.process.pid):
                    return self.process.pid
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise AssertionError("the worker stand-in never wrote its pid file")

    def kill(self, *, reap: bool = True) -> None:
        """SIGKILL, as the OOM killer would. Unreaped, the process stays a zombie."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        if reap:
            self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class HealthServer:
    """``GET /healthz``: ``status`` and, when set, ``{"started_at": started_at}``, after
    ``delay`` seconds (a hung worker)."""

    status: int = 200
    started_at: str | None = None
    url: str = ""
    requests: int = 0
    delay: float = 0.0

    async def handle(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        body: dict[str, Any] = {"status": "ok" if self.status < 300 else "failing"}
        if self.started_at is not None:
            body["started_at"] = self.started_at
        return web.json_response(body, status=self.status)


@asynccontextmanager
async def health_server() -> AsyncIterator[HealthServer]:
    server = HealthServer()
    app = web.Application()
    app.router.add_get("/healthz", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/healthz"
    try:
        yield server
    finally:
        await runner.cleanup()
