"""The worker probes: a pid file read against ``/proc``, and a health URL.

Owns turning ``[worker] pid_file`` and ``health_url`` into one probe result,
:class:`~heartbeat.liveness.Alive` (with the worker's incarnation) or
:class:`~heartbeat.liveness.Dead` (with a short reason). It does not decide what a
result means over time (heartbeat.liveness) or act on it (heartbeat.worker).

* ``pid_file``: the file holds a decimal pid. The worker is alive while that process
  exists and is not a zombie (state ``Z``, or ``X``: dead). Its incarnation is the pid
  plus its start time: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot) plus
  the boot time (``btime`` in ``/proc/stat``), as wall-clock seconds. heartbeat's
  systemd units hide other users' processes (``ProtectProc=invisible``): a sidecar
  drop-in that sets ``pid_file`` must set ``ProtectProc=default``. A missing, empty
  or unreadable file is "down", never an error: a worker that has not written it yet
  is not known to be alive. heartbeat must see the worker's process: the same host, or
  a Kubernetes pod with ``shareProcessNamespace: true``.
* ``health_url``: alive while ``GET`` answers 2xx within ``probe_timeout``. A JSON
  object body with ``started_at`` (ISO 8601) gives the incarnation's start.

With both, the worker is alive only when both say so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import aiohttp

from heartbeat.config import WorkerSettings
from heartbeat.liveness import Alive, Dead, Incarnation, parse_time

__all__ = ["Prober", "boot_time", "probe_pid_file", "process_start"]

#: A health answer longer than this is not read further (its status still counts).
MAX_HEALTH_BODY = 64 * 1024
#: ``/proc/<pid>/stat`` states of a process that has ended but not been reaped.
_DEAD_STATES = frozenset("ZXx")

_boot_time: float | None = None


def boot_time(proc: Path = Path("/proc")) -> float:
    """When the kernel booted, in seconds since the epoch: ``btime`` of /proc/stat, or,
    where /proc/stat is hidden (systemd's ``ProcSubset=pid``), the wall clock minus
    ``CLOCK_BOOTTIME`` (the clock ``/proc/<pid>/stat`` start times count on)."""
    global _boot_time
    if proc != Path("/proc"):
        return _read_btime(proc)
    if _boot_time is None:
        try:
            _boot_time = _read_btime(proc)
        except OSError:
            _boot_time = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return _boot_time


def _read_btime(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError(f"no btime line in {proc / 'stat'}")


def process_start(pid: int, proc: Path = Path("/proc")) -> tuple[str, int, float]:
    """``(state, ticks, start)`` of a process: its one-letter state, its start in clock
    ticks since boot, and that as seconds since the epoch. OSError when there is no
    such process."""
    raw = (proc / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    after = raw[raw.rindex(")") + 2 :].split()
    state, ticks = after[0], int(after[19])  # fields 3 and 22
    return state, ticks, boot_time(proc) + ticks / os.sysconf("SC_CLK_TCK")


def probe_pid_file(path: Path, proc: Path = Path("/proc")) -> Alive | Dead:
    """One look at the pid file and the process it names."""
    try:
        text = path.read_bytes()[:64].decode("ascii").strip()
    except FileNotFoundError:
        return Dead("pid_file_missing", f"{path} does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        return Dead("pid_file_unreadable", f"{path}: {getattr(exc, 'strerror', None) or exc}")
    if not text:
        return Dead("pid_file_empty", f"{path} is empty")
    if not text.isdigit() or int(text) < 1:
        return Dead("pid_file_invalid", f"{path} does not hold a pid")
    pid = int(text)
    try:
        state, ticks, start = process_start(pid, proc)
    except (OSError, ValueError, IndexError):
        return Dead("process_gone", f"no process {pid}")
    if state in _DEAD_STATES:
        return Dead("process_zombie", f"process {pid} has exited (state {state})")
    return Alive(Incarnation(pid=pid, ticks=ticks, start=start))


async def probe_health(
    session: aiohttp.ClientSession, url: str, seconds: float
) -> tuple[bool, str | None, str]:
    """``(alive, started_at, error)`` from one GET of the health URL."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=False
        ) as response:
            raw = await response.content.read(MAX_HEALTH_BODY)
            if not 200 <= response.status < 300:
                return False, None, f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, None, type(exc).__name__ + (f": {exc}" if str(exc) else "")
    started_at: str | None = None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("started_at"), str):
        started_at = body["started_at"]
    return True, started_at, ""


class Prober:
    """Both probes as one: :meth:`probe` is one round."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self.settings.health_url is not None and self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2, force_close=True)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self) -> Alive | Dead:
        settings = self.settings
        incarnation = Incarnation()
        if settings.pid_file is not None:
            result = probe_pid_file(settings.pid_file)
            if isinstance(result, Dead):
                return result
            incarnation = result.incarnation
        if settings.health_url is not None:
            await self.open()
            assert self._session is not None
            alive, started_at, error = await probe_health(
                self._session, settings.health_url, settings.probe_timeout
            )
            if not alive:
                return Dead("health_failed", error)
            start = incarnation.start if incarnation.pid is not None else parse_time(started_at)
            incarnation = Incarnation(
                pid=incarnation.pid, ticks=incarnation.ticks, started_at=started_at, start=start
            )
        return Alive(incarnation)
