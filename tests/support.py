"""What tests of every kind share: waiting for a condition, the CLI run to its end, a
free loopback port, a Config or a config file built from sections, and a Heartbeat
running in this process with the sources a test names.

    config = make_config(es.url, QUIET, jobs={"ids": ["job-a"]}, control={"socket": path})
    async with running(config, "file", "control") as (hb, sources):
        await until(lambda: len(es.emu.checkins("job-a")) >= 1)

    path = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": ["job-a"]}))

A config is layers of sections (``{"schedule": {"interval": 1}}``) merged key by key,
later layers winning: a family of tests keeps its defaults as one layer (data, such as
QUIET in tests/helpers_control.py or DAEMON in tests/helpers_daemon.py, not a builder of
its own) and a test adds what it changes. What one family needs besides (the control
API client, the daemon subprocess, scrapes, Redis) stays in tests/helpers_*.py.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from heartbeat.config import Config
from heartbeat.daemon import Heartbeat
from heartbeat.sources import Source, build_sources
from heartbeat.sources.file import FileSource

# -- waiting ---------------------------------------------------------------------------


async def until(
    check: Callable[[], object | Awaitable[object]], within: float = 5.0, *, every: float = 0.01
) -> None:
    """Poll ``check`` (a function or a coroutine function) every ``every`` seconds until
    it returns something true; TimeoutError after ``within`` seconds."""
    with anyio.fail_after(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(every)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the CLI in a subprocess ---------------------------------------------------------

#: The command line of this checkout's heartbeat.
HEARTBEAT = (sys.executable, "-m", "heartbeat")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its HEARTBEAT_* variables, and ``extra``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    environment.update(extra)
    return environment


async def heartbeat_cli(
    *args: str, env: dict[str, str] | None = None, within: float = 60, cwd: Path | None = None
) -> tuple[int, str, str]:
    """``python -m heartbeat ARGS`` run to its end: ``(exit code, stdout, stderr)``.
    ``env`` is the whole environment (default :func:`clean_env`); stdin is /dev/null."""
    with anyio.fail_after(within):
        result = await anyio.run_process(
            [*HEARTBEAT, *args],
            check=False,
            env=env or clean_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# -- configuration ---------------------------------------------------------------------

Section = Mapping[str, Any]
Sections = Mapping[str, Section]

#: A key set to DELETE in a later layer is removed from the merged section.
DELETE: Any = object()


class Raw(str):
    """A TOML value written as is (a time of day, ``nan``)."""


def merge(*layers: Sections) -> dict[str, dict[str, Any]]:
    """The sections of ``layers``, later layers winning key by key."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, keys in layer.items():
            table = merged.setdefault(section, {})
            for key, value in keys.items():
                if value is DELETE:
                    table.pop(key, None)
                else:
                    table[key] = value
    return merged


def _hosts(hosts: str | Sequence[str]) -> Sections:
    return {"elasticsearch": {"hosts": [hosts] if isinstance(hosts, str) else list(hosts)}}


def make_config(hosts: str | Sequence[str], *layers: Sections, **sections: Section) -> Config:
    """A Config against ``hosts`` (a URL or several), then ``layers``, then ``sections``."""
    return Config(**merge(_hosts(hosts), *layers, sections))


def toml(hosts: str | Sequence[str], *layers: Sections, **sections: Section) -> str:
    """The same merge as :func:`make_config`, as the text of a config file."""
    lines = []
    for section, keys in merge(_hosts(hosts), *layers, sections).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's (\uXXXX included)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(value)


def write_config(path: Path, text: str, *, mode: int = 0o600) -> Path:
    """``text`` in the file ``path``, mode 0600 unless told (heartbeat warns otherwise)."""
    path.write_text(text)
    path.chmod(mode)
    return path


# -- a Heartbeat in this process -------------------------------------------------------


class Running(NamedTuple):
    hb: Heartbeat
    #: The sources started, by name.
    sources: dict[str, Source]


@asynccontextmanager
async def running(
    config: Config, *names: str, file_poll: float = 0.1, **heartbeat: Any
) -> AsyncIterator[Running]:
    """``Heartbeat(config, **heartbeat)`` with the sources ``names`` of the ones
    ``config`` enables, started in ``heartbeat run``'s order; the file source polls
    every ``file_poll`` seconds. With ``[metrics] listen``, its listener is up."""
    async with Heartbeat(config, **heartbeat) as hb:
        if config.metrics.listen is not None:
            assert hb.listener is not None
        started: dict[str, Source] = {}
        for source in build_sources(config):
            if source.name not in names:
                continue
            if isinstance(source, FileSource):
                source = FileSource(config.jobs.file, poll_interval=file_poll, settle=0.05)
            await hb.start(source.run, hb, name=source.name)
            started[source.name] = source
        yield Running(hb, started)
