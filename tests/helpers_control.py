"""Helpers for the control API, watch file and state tests: their config layer, an
HTTP client for the control API (Unix socket or TCP, raw paths sent verbatim), short
socket paths and config files for daemon subprocesses.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from tests.support import Sections


@contextmanager
def short_dir() -> Iterator[Path]:
    """A fresh directory under /tmp (mode 0755): pytest's tmp_path can be too long for
    a Unix socket path (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


#: The layer for these tests: a check-in every 30 s (none due while a test runs), no
#: jitter, a quick stop, no state and no control API unless a test sets them.
QUIET: Sections = {
    "elasticsearch": {"request_timeout": 5},
    "schedule": {"interval": 30, "jitter": 0, "shutdown_timeout": 1},
    "state": {"dir": None},
    "control": {"socket": None},
}


class Answer:
    def __init__(self, status: int, body: bytes, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:200]!r})"


@asynccontextmanager
async def api_client(
    socket: Path | None = None, url: str | None = None, token: str | None = None
) -> AsyncIterator[Any]:
    """``call(method, raw_path, body=None, headers=None) -> Answer``; the path is sent
    exactly as given (no normalisation, no re-encoding)."""
    connector = aiohttp.UnixConnector(path=str(socket)) if socket is not None else None
    base = url or "http://localhost"
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call(
            method: str,
            path: str,
            body: bytes | Any = None,
            headers: dict[str, str] | None = None,
        ) -> Answer:
            sent = dict(headers or {})
            if token is not None:
                sent.setdefault("Authorization", f"Bearer {token}")
            data = json.dumps(body) if isinstance(body, dict | list) else body
            target = URL(base + path, encoded=True)
            async with session.request(method, target, data=data, headers=sent) as response:
                return Answer(response.status, await response.read(), response.headers)

        yield call


#: QUIET for ``heartbeat run`` in a subprocess (``toml(url, QUIET_DAEMON, ...)``):
#: JSON logs, no control socket unless a test sets one.
QUIET_DAEMON: Sections = {
    "elasticsearch": {"request_timeout": 5},
    "schedule": {"interval": 30, "jitter": 0, "shutdown_timeout": 2},
    "jobs": {"ids": []},
    "control": {"socket": ""},
    "logging": {"format": "json", "level": "info"},
}
