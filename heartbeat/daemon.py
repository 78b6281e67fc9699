"""The daemon: a Heartbeat (client + scheduler + watch list) and its lifecycle.

:class:`Heartbeat` is the library API, for connectors that embed heartbeat in their
own event loop::

    async with Heartbeat(config) as hb:
        hb.watch("job-id")
        ...

:func:`serve` is ``heartbeat run``: a Heartbeat plus signals (SIGTERM/SIGINT stop,
SIGHUP reloads the configuration). Sources of job ids, metrics and sd_notify hook in
here; this module does not speak HTTP itself.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from heartbeat import config as configuration
from heartbeat import logs
from heartbeat._version import __version__
from heartbeat.client import Client
from heartbeat.clock import Clock
from heartbeat.config import Config
from heartbeat.errors import ConfigError
from heartbeat.scheduler import JobView, Scheduler

log = structlog.get_logger("heartbeat")


def register_secrets(config: Config) -> None:
    es = config.elasticsearch
    for secret in (es.api_key, es.password, es.bearer_token):
        if secret is not None:
            logs.register_secret(secret.get_secret_value())


class Heartbeat:
    """Checks watched sync jobs in, inside the caller's event loop."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        register_secrets(config)
        self._client = Client(config.elasticsearch, max_in_flight=config.schedule.max_in_flight)
        self.scheduler = Scheduler(
            self._client.check_in,
            schedule=config.schedule,
            backoff_settings=config.backoff,
            clock=clock,
        )
        self._tg: TaskGroup | None = None
        self._retired: list[Client] = []

    @property
    def client(self) -> Client:
        return self._client

    async def __aenter__(self) -> Heartbeat:
        await self._client.open()
        self.scheduler.watch_many(self.config.jobs.ids, "config")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.scheduler.run, name="heartbeat scheduler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.scheduler.stop()
        try:
            if self._tg is not None:
                await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                for client in (*self._retired, self._client):
                    await client.close()

    def start_soon(self, func: Any, *args: Any, name: str | None = None) -> None:
        """Run a helper task (a source, a listener) for as long as the Heartbeat runs."""
        if self._tg is None:
            raise RuntimeError("Heartbeat is not running")
        self._tg.start_soon(func, *args, name=name)

    # The library API.

    def watch(self, job_id: str, source: str = "api") -> bool:
        """Watch ``job_id``; True when it was not watched before. Raises InvalidJobId."""
        return self.scheduler.watch(job_id, source)

    def watch_many(self, job_ids: Iterable[str], source: str = "api") -> int:
        return self.scheduler.watch_many(job_ids, source)

    def unwatch(self, job_id: str) -> bool:
        """Stop watching ``job_id``; False when it was not watched."""
        return self.scheduler.unwatch(job_id, reason="unwatched")

    def jobs(self) -> list[JobView]:
        return self.scheduler.jobs()

    async def apply(self, new: Config) -> list[str]:
        """Apply a new configuration in place; returns the sections that changed."""
        old = self.config
        changed = [
            section
            for section in ("elasticsearch", "schedule", "backoff", "jobs", "logging")
            if getattr(old, section) != getattr(new, section)
        ]
        register_secrets(new)
        check_in = None
        if "elasticsearch" in changed or old.schedule.max_in_flight != new.schedule.max_in_flight:
            client = Client(new.elasticsearch, max_in_flight=new.schedule.max_in_flight)
            await client.open()
            # In-flight requests finish on the old session; it is closed at exit.
            for retired in self._retired:
                await retired.close()
            self._retired = [self._client]
            self._client = client
            check_in = client.check_in
        self.scheduler.reconfigure(
            schedule=new.schedule, backoff_settings=new.backoff, check_in=check_in
        )
        old_ids, new_ids = set(old.jobs.ids), set(new.jobs.ids)
        for job_id in old.jobs.ids:
            if job_id not in new_ids:
                self.scheduler.unwatch(job_id, reason="config", source="config")
        self.scheduler.watch_many([i for i in new.jobs.ids if i not in old_ids], "config")
        self.config = new
        return changed


def warn_if_exposed(path: Path) -> None:
    """A config file holding a secret must not be readable by other users."""
    try:
        data = configuration.read_file(path)
    except ConfigError:
        return
    if configuration.holds_secret(data) and configuration.world_readable(path):
        log.warning(
            "config_file_exposed",
            path=str(path),
            problem="holds a secret and is readable by other users; chmod 0600 or 0640",
        )


async def serve(config: Config, *, path: Path | None, extra_ids: Sequence[str] = ()) -> int:
    """``heartbeat run``: check jobs in until SIGTERM/SIGINT; SIGHUP reloads."""
    if path is not None:
        warn_if_exposed(path)
    stopped_by = "signal"
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with Heartbeat(config) as hb:
            if extra_ids:
                hb.watch_many(extra_ids, "cli")
            log.info(
                "daemon_started",
                version=__version__,
                pid=os.getpid(),
                config=str(path) if path else None,
                hosts=config.elasticsearch.urls(),
                jobs=len(hb.scheduler),
                interval=config.schedule.interval,
            )
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload(hb, path)
                    continue
                stopped_by = signal.Signals(signum).name
                log.info("daemon_stopping", signal=stopped_by, in_flight=hb.scheduler.in_flight)
                break
            jobs = len(hb.scheduler)
    log.info("daemon_stopped", reason=stopped_by, jobs=jobs)
    return 0


async def reload(hb: Heartbeat, path: Path | None) -> bool:
    """Re-read the configuration; keep the running one when the new one is invalid."""
    if path is None:
        log.warning("config_reload_failed", error="no configuration file to re-read")
        return False
    try:
        new = configuration.load(path)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept="running configuration")
        return False
    if new.logging != hb.config.logging:
        logs.configure(format=new.logging.format, level=new.logging.level)
    changed = await hb.apply(new)
    log.info("config_reloaded", path=str(path), changed=changed, jobs=len(hb.scheduler))
    return True
