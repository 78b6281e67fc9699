"""Helpers for the control API, watch file and state tests: a Heartbeat with its
sources in this process, an HTTP client for the control API (Unix socket or TCP, raw
paths sent verbatim), short socket paths and config files for daemon subprocesses.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from heartbeat.config import (
    Config,
    ControlSettings,
    ElasticsearchSettings,
    JobsSettings,
    ScheduleSettings,
    StateSettings,
)
from heartbeat.control import ControlSource
from heartbeat.daemon import Heartbeat
from heartbeat.sources.file import FileSource


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


def make_config(
    url: str,
    *,
    ids: Sequence[str] = (),
    file: Path | None = None,
    state: Path | None = None,
    **control: Any,
) -> Config:
    return Config(
        elasticsearch=ElasticsearchSettings(hosts=[url], request_timeout=5),
        schedule=ScheduleSettings(interval=30, jitter=0, shutdown_timeout=1),
        jobs=JobsSettings(ids=list(ids), file=file),
        state=StateSettings(dir=state),
        control=ControlSettings(**{"socket": None, **control}),
    )


@asynccontextmanager
async def running(
    config: Config, *, poll_interval: float = 0.1
) -> AsyncIterator[tuple[Heartbeat, FileSource, ControlSource | None]]:
    """A Heartbeat with the file source (fast polling) and, when configured, the
    control API, as ``heartbeat run`` starts them."""
    async with Heartbeat(config) as hb:
        file_source = FileSource(config.jobs.file, poll_interval=poll_interval, settle=0.05)
        await hb.start(file_source.run, hb)
        control = None
        if config.control.socket is not None or config.control.listen is not None:
            control = ControlSource(config.control)
            await hb.start(control.run, hb)
        yield hb, file_source, control


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


def daemon_config(
    path: Path,
    url: str,
    *,
    socket: Path | None = None,
    state: Path | None = None,
    file: Path | None = None,
    ids: Sequence[str] = (),
) -> Path:
    """A config file for ``heartbeat run`` in a subprocess: JSON logs, the emulator."""
    lines = [
        "[elasticsearch]",
        f"hosts = [{json.dumps(url)}]",
        "request_timeout = 5",
        "[schedule]",
        "interval = 30",
        "jitter = 0",
        "shutdown_timeout = 2",
        "[jobs]",
        f"ids = {json.dumps(list(ids))}",
    ]
    if file is not None:
        lines.append(f"file = {json.dumps(str(file))}")
    if state is not None:
        lines += ["[state]", f"dir = {json.dumps(str(state))}"]
    lines += ["[control]", f"socket = {json.dumps(str(socket) if socket else '')}"]
    lines += ["[logging]", 'format = "json"', 'level = "info"']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path
