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

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from heartbeat import chunked, logs
from heartbeat._version import __version__
from heartbeat.chunked import STEP, Rows, Steps
from heartbeat.client import Client
from heartbeat.clock import Clock
from heartbeat.config import Config
from heartbeat.config.warnings import startup_warnings
from heartbeat.errors import InvalidJobId
from heartbeat.finished import StatusChecker
from heartbeat.health import Health, elasticsearch_state
from heartbeat.identity import ClusterIdentity
from heartbeat.jobid import validate_job_id
from heartbeat.leases import LeaseKeeper, check_ttl
from heartbeat.memory import Tombstone, Tombstones, outcomes_json, parse_outcome
from heartbeat.metrics import Metrics
from heartbeat.reload import reload
from heartbeat.scheduler import TIMER_SLACK, JobView, Scheduler
from heartbeat.sources import build_sources
from heartbeat.state import StateStore
from heartbeat.systemd import Notifier
from heartbeat.worker import WorkerMonitor

if TYPE_CHECKING:
    # aiohttp.web and prometheus_client are loaded only with [metrics] listen.
    from heartbeat.observability import Listener

log = structlog.get_logger("heartbeat")

#: Seconds between two STATUS= updates to systemd.
STATUS_PERIOD = 10.0


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
        # Outlives every client (a reload builds a new one): the expected cluster.
        self.identity = ClusterIdentity(
            config.elasticsearch.cluster_uuid, on_change=self._identity_changed
        )
        self._client = self._new_client(config)
        self.identity.forget([host.url for host in self._client.pool.hosts])
        self.scheduler = Scheduler(
            self._client.check_in,
            schedule=config.schedule,
            backoff_settings=config.backoff,
            clock=clock,
            # Real time only: an injected clock moves when its owner says, to the instant.
            timer_slack=TIMER_SLACK if clock is None else 0.0,
        )
        # Reads job statuses to drop finished jobs; the lambda follows a reloaded client.
        self.status_checker = StatusChecker(
            lambda job_id: self._client.get_job(job_id),
            self.scheduler,
            config.schedule.status_check_interval,
            canceling_grace=config.schedule.canceling_grace,
        )
        #: ``[worker]``: check-ins only while the worker is alive (heartbeat.worker).
        self.worker: WorkerMonitor | None = None
        if config.worker.enabled:
            self.worker = WorkerMonitor(
                config.worker, self.scheduler, lambda job_id: self._client.get_job(job_id)
            )
        self._tg: TaskGroup | None = None
        self._services: TaskGroup | None = None
        self._retired: list[Client] = []
        #: Claims that expire unless renewed (heartbeat.leases).
        self.leases = LeaseKeeper(self.scheduler)
        #: Dropped jobs, kept so that a drop can be undone (heartbeat.memory).
        self.tombstones = Tombstones()
        self.scheduler.change_observers.append(self._watch_list_changed)
        self.state: StateStore | None = None
        if config.state.dir is not None:
            scheduler = self.scheduler
            # Read a chunk of ids at a time by the saver (heartbeat.chunked.Rows).
            self.state = StateStore(
                config.state.dir,
                lambda: Rows(scheduler.__iter__, scheduler.sources_of),
                leases=self.leases.snapshot,
                extras=self._memories,
                outcomes=lambda: Rows(
                    scheduler.__iter__, lambda ids: outcomes_json(scheduler.outcome_rows(ids))
                ),
            )
            state = self.state
            self.scheduler.outcome_observers.append(lambda *_: state.touched())
        # Always kept (cheap, O(1) per check-in): embedding code may read hb.health or
        # expose hb.metrics.registry itself. [metrics] listen only adds the listener.
        self.health = Health(self.scheduler, worker=self.worker)
        self.health.identity = self.identity
        self.metrics = Metrics(self.scheduler, self.health, self.leases)
        self.listener: Listener | None = None

    @property
    def client(self) -> Client:
        return self._client

    def _new_client(self, config: Config) -> Client:
        return Client(
            config.elasticsearch,
            max_in_flight=config.schedule.max_in_flight,
            identity=self.identity,
        )

    def _watch_list_changed(self, change: str, job_id: str, fields: dict[str, Any]) -> None:
        if change == "dropped":
            self.tombstones.add(
                Tombstone(
                    id=job_id,
                    reason=str(fields.get("reason")),
                    status=fields.get("status"),
                    server_reason=fields.get("server_reason"),
                    dropped_at=self.scheduler.clock.wall(),
                    sources=tuple(fields.get("sources", ())),
                )
            )
        elif change == "added":
            self.tombstones.discard(job_id)  # watched again: no longer dropped

    def _memories(self) -> dict[str, Any]:
        """The state file's extras (heartbeat.memory)."""
        return {"cluster_uuid": self.identity.remembered, "dropped": self.tombstones.to_json()}

    def dropped(self) -> list[Tombstone]:
        """The tombstones of dropped jobs, oldest first."""
        return self.tombstones.all(self.scheduler.clock.wall())

    def restore(self, job_id: str) -> Tombstone | None:
        """Watch a dropped job again, with its former sources' claims (permanent ones);
        None when ``job_id`` is not a tombstone."""
        tombstone = self.tombstones.take(job_id)
        if tombstone is None:
            return None
        for source in tombstone.sources or ("control",):
            self.scheduler.watch_many([job_id], source)
        log.info("job_restored", job_id=job_id, sources=list(tombstone.sources))
        if self.state is not None:
            self.state.changed()
        return tombstone

    def _identity_changed(self) -> None:
        if self.state is not None:
            self.state.changed()  # remember the cluster seen first

    async def __aenter__(self) -> Heartbeat:
        if self.state is not None:
            # First, before anything is opened: ConfigError if another process uses it.
            self.state.lock()
        await self._client.open()
        await self._restore()
        # In chunks, yielding between them: a million ids never hold the loop for long.
        await self.scheduler.watch_many_async(self.config.jobs.ids, "config")
        if self.state is not None:
            state = self.state
            self.scheduler.change_observers.append(lambda *_: state.changed())
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.scheduler.run, name="heartbeat scheduler")
        # Sources, the state saver and listeners run in their own group, stopped
        # before the scheduler drains: no new ids arrive during shutdown.
        self._services = anyio.create_task_group()
        await self._services.__aenter__()
        if self.state is not None:
            self._services.start_soon(self.state.run, name="heartbeat state saver")
            self.state.changed()
        self._services.start_soon(self.status_checker.run, name="heartbeat status checks")
        if self.worker is not None:
            self._services.start_soon(self.worker.run, name="heartbeat worker probe")
        self._services.start_soon(self.health.lag_monitor.run, name="heartbeat lag monitor")
        # Here rather than in serve(): a connector embedding heartbeat with [metrics]
        # listen set gets the same endpoints. Listening before READY=1 is sent.
        address = self.config.metrics.address()
        if address is not None:
            from heartbeat import observability

            try:
                self.listener = await self.start(
                    observability.serve, self.metrics, self.health, *address, name="metrics"
                )
            except Exception:
                # A bind failure: undo the half-started Heartbeat, raise it unwrapped.
                await self.__aexit__(None, None, None)
                raise
        return self

    async def _restore(self) -> None:
        """Watch again what the state file says was watched (before any source)."""
        if self.state is None:
            return
        # Parsed a chunk at a time: a million ids never hold the loop for long.
        saved = await self.state.load()
        restored = 0
        by_source = await chunked.drain_async(self._saved_claims(saved), freeze=True)
        for source, ids in by_source.items():
            restored += await self.scheduler.watch_many_async(ids, source)
        # A restart is not a renewal; a lease that ended while we were down ends now.
        self.leases.restore(self.state.loaded_leases)
        extras = self.state.loaded_extras
        remembered = extras.get("cluster_uuid")
        if isinstance(remembered, str) and remembered:
            self.identity.remembered = remembered
            if self.identity.pinned not in (None, remembered):
                log.info(
                    "cluster_uuid_pinned",
                    pinned=self.identity.pinned,
                    remembered=remembered,
                    problem="[elasticsearch] cluster_uuid wins over the remembered cluster",
                )
        self.tombstones.load(extras.get("dropped"), self.scheduler.clock.wall())
        outcomes, self.state.loaded_outcomes = self.state.loaded_outcomes, None
        # Oldest success first (a job that never succeeded counts as oldest). Without
        # saved outcomes every job counts as oldest: the ramp stays as it is.
        if await chunked.drain_async(self._restore_outcomes(outcomes)):
            await self.scheduler.ramp_oldest_first_async()
        if saved:
            log.info("state_loaded", path=str(self.state.path), jobs=restored)

    def _restore_outcomes(self, saved: Any) -> Steps[int]:
        """Give the watched jobs their saved outcomes (``outcomes.json``'s entries,
        consumed: a million of them are freed a few at a time, not in one go); how
        many were usable."""
        usable = 0
        if not isinstance(saved, dict):
            return usable
        while saved:
            for _ in range(min(STEP, len(saved))):
                job_id, entry = saved.popitem()
                outcome = parse_outcome(entry)
                if outcome is not None:
                    usable += 1
                    self.scheduler.restore_outcome(
                        job_id,
                        outcome.last_success,
                        outcome.consecutive_failures,
                        outcome.last_error,
                    )
            yield
        return usable

    def _saved_claims(self, saved: dict[str, tuple[str, ...]]) -> Steps[dict[str, list[str]]]:
        """The valid saved ids by source, a few at a time. The configuration is the
        truth for its own ids: a saved ``config`` claim it no longer gives is left."""
        configured: set[str] = set()
        ids = self.config.jobs.ids
        for start in range(0, len(ids), STEP):
            configured.update(ids[start : start + STEP])
            yield
        by_source: dict[str, list[str]] = {}
        for index, (job_id, sources) in enumerate(saved.items()):
            if not index % STEP:
                yield
            try:
                validate_job_id(job_id)
            except InvalidJobId as exc:
                log.warning("state_entry_invalid", error=str(exc))
                continue
            for source in sources:
                if source != "config" or job_id in configured:
                    by_source.setdefault(source, []).append(job_id)
        return by_source

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._services is not None:
                self._services.cancel_scope.cancel()
                await self._services.__aexit__(None, None, None)
        finally:
            self._services = None
            self.scheduler.stop()
            try:
                if self._tg is not None:
                    if isinstance(exc, Exception):
                        # An error in the caller's block propagates as itself, not
                        # wrapped in an ExceptionGroup by our task group.
                        self._tg.cancel_scope.cancel()
                        await self._tg.__aexit__(None, None, None)
                    else:
                        await self._tg.__aexit__(exc_type, exc, tb)
            finally:
                self._tg = None
                self.leases.close()
                self.status_checker.close()
                self._save_on_exit()
                with anyio.CancelScope(shield=True):
                    for client in (*self._retired, self._client):
                        await client.close()

    def _save_on_exit(self) -> None:
        if self.state is None:
            return
        try:
            self.state.save_now()
            self.state.save_outcomes_now()  # exact after a clean stop
        except OSError as error:
            log.error("state_save_failed", path=str(self.state.path), error=str(error))
        finally:
            self.state.unlock()

    def start_soon(self, func: Any, *args: Any, name: str | None = None) -> None:
        """Run a helper task (a source, a listener) for as long as the Heartbeat runs."""
        if self._services is None:
            raise RuntimeError("Heartbeat is not running")
        self._services.start_soon(func, *args, name=name)

    async def start(self, func: Any, *args: Any, name: str | None = None) -> Any:
        """Like :meth:`start_soon`, but wait for ``task_status.started()``."""
        if self._services is None:
            raise RuntimeError("Heartbeat is not running")
        return await self._services.start(func, *args, name=name)

    async def persisted(self) -> None:
        """Return once every watch-list change made so far is on disk (no-op without
        ``[state] dir``). Acknowledge to a producer only after this."""
        if self.state is not None:
            await self.state.persisted()

    def summary(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        scheduler = self.scheduler
        now = scheduler.clock.monotonic()
        parts = [f"watching {len(scheduler)} jobs"]
        if self.worker is not None and not self.worker.up:
            parts.append("worker down: check-ins paused")
        if scheduler.last_success_at is not None:
            parts.append(f"last check-in {now - scheduler.last_success_at:.0f} s ago")
        if scheduler.outage_since is not None:
            state = elasticsearch_state(scheduler)
            parts.append(f"elasticsearch {state} for {now - scheduler.outage_since:.0f} s")
        elif scheduler.last_contact_ok is False:
            parts.append("elasticsearch failing")
        elif scheduler.last_contact_ok:
            parts.append("elasticsearch ok")
        return ", ".join(parts)

    # The library API.

    def watch(self, job_id: str, source: str = "api", *, ttl: float | None = None) -> bool:
        """Watch ``job_id``; True when it was not watched before. Raises InvalidJobId.

        With ``ttl`` (seconds, at least 1) this claim ends unless renewed (the same
        call again) within it; without, the claim is permanent, and a renewal without
        ``ttl`` makes a leased claim permanent."""
        return self.watch_many([job_id], source, ttl=ttl) == 1

    def watch_many(
        self, job_ids: Iterable[str], source: str = "api", *, ttl: float | None = None
    ) -> int:
        """Watch several ids (all validated first); returns how many were new."""
        if ttl is not None:
            ttl = check_ttl(ttl)
        ids = list(job_ids)
        added = self.scheduler.watch_many(ids, source)
        self._granted(ids, source, ttl)
        return added

    async def watch_many_async(
        self, job_ids: Iterable[str], source: str = "api", *, ttl: float | None = None
    ) -> int:
        """:meth:`watch_many` from async code: the ids are added in chunks, yielding to
        the event loop between them (Scheduler.watch_many_async)."""
        if ttl is not None:
            ttl = check_ttl(ttl)
        ids = list(job_ids)
        added = await self.scheduler.watch_many_async(ids, source)
        self._granted(ids, source, ttl)
        return added

    def _granted(self, ids: list[str], source: str, ttl: float | None) -> None:
        if ttl is not None or len(self.leases.book):
            self.leases.grant(ids, source, ttl)
            if self.state is not None:
                self.state.changed()  # a new expiry must survive a restart

    def unwatch(self, job_id: str) -> bool:
        """Stop watching ``job_id``; False when it was not watched."""
        return self.scheduler.unwatch(job_id, reason="unwatched")

    def jobs(self) -> list[JobView]:
        return self.scheduler.jobs()

    def _needs_client(self, new: Config) -> bool:
        old = self.config
        return (
            old.elasticsearch != new.elasticsearch
            or old.schedule.max_in_flight != new.schedule.max_in_flight
        )

    async def prepare_client(self, new: Config) -> Client | None:
        """The client ``new`` needs, opened (its TLS context built), or None when the
        running one will do. Raises ConfigError; nothing running is touched."""
        if not self._needs_client(new):
            return None
        client = self._new_client(new)
        try:
            await client.open()
        except BaseException:
            await client.close()
            raise
        return client

    async def apply(self, new: Config, *, client: Client | None = None) -> list[str]:
        """Apply a new configuration in place; returns the sections that changed.

        ``client``: from :meth:`prepare_client` (heartbeat.reload prepares it first, so
        that a reload that cannot build it changes nothing); else built here."""
        old = self.config
        changed = [
            section
            # queue and discovery are applied by their sources (serve() reloads them).
            for section in (
                "elasticsearch",
                "schedule",
                "backoff",
                "jobs",
                "logging",
                "queue",
                "discovery",
                "control",
                "worker",
            )
            if getattr(old, section) != getattr(new, section)
        ]
        register_secrets(new)
        check_in = None
        if client is None:
            client = await self.prepare_client(new)
        if client is not None:
            self.identity.pin(new.elasticsearch.cluster_uuid)
            self.identity.forget([host.url for host in client.pool.hosts])
            # In-flight requests finish on the old session; it is closed at exit.
            for retired in self._retired:
                await retired.close()
            self._retired = [self._client]
            self._client = client
            check_in = client.check_in
        self.scheduler.reconfigure(
            schedule=new.schedule, backoff_settings=new.backoff, check_in=check_in
        )
        self.status_checker.set_interval(new.schedule.status_check_interval)
        self.status_checker.canceling_grace = new.schedule.canceling_grace
        if (self.worker is not None) != new.worker.enabled:
            log.warning(
                "worker_restart_needed",
                problem="[worker] probes switched on or off: restart heartbeat to apply it",
            )
        elif self.worker is not None:
            self.worker.reconfigure(new.worker)
        old_ids, new_ids = set(old.jobs.ids), set(new.jobs.ids)
        for job_id in old.jobs.ids:
            if job_id not in new_ids:
                self.scheduler.unwatch(job_id, reason="config", source="config")
        self.scheduler.watch_many([i for i in new.jobs.ids if i not in old_ids], "config")
        self.config = new
        return changed


async def serve(config: Config, *, path: Path | None, extra_ids: Sequence[str] = ()) -> int:
    """``heartbeat run``: check jobs in until SIGTERM/SIGINT; SIGHUP reloads."""
    for warning in startup_warnings(config, path):
        log.warning(warning.event, **warning.fields)
    notifier = Notifier.from_env()
    stopped_by = "signal"
    with (
        anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals,
        _stopping_on_exit(notifier),
    ):
        async with Heartbeat(config) as hb:
            if extra_ids:
                hb.watch_many(extra_ids, "cli")
            # Like the config file, the command line is the truth for its own ids: a
            # --job id restored from the state file but not given this time is released.
            given = set(extra_ids)
            for job_id, claims in hb.scheduler.sources().items():
                if "cli" in claims and job_id not in given:
                    hb.scheduler.unwatch(job_id, reason="source", source="cli")
            sources = build_sources(config)
            for source in sources:
                await hb.start(source.run, hb, name=f"source {source.name}")
            watchdog = notifier.watchdog_interval()
            if watchdog is not None:
                # From the scheduler's own loop: a stuck loop trips systemd's watchdog.
                hb.scheduler.add_periodic(watchdog, lambda _now: notifier.watchdog())
            if notifier.enabled:
                hb.scheduler.add_periodic(STATUS_PERIOD, lambda _now: notifier.status(hb.summary()))
            log.info(
                "daemon_started",
                version=__version__,
                pid=os.getpid(),
                config=str(path) if path else None,
                hosts=config.elasticsearch.urls(),
                jobs=len(hb.scheduler),
                interval=config.schedule.interval,
                # The file source also runs unconfigured (to release restored claims).
                sources=[s.name for s in sources if s.name != "file" or config.jobs.file],
            )
            notifier.ready(status=hb.summary())
            async for signum in signals:
                if signum == signal.SIGHUP:
                    notifier.reloading()
                    if await reload(hb, path, sources):
                        notifier.ready(status=hb.summary())
                    else:
                        notifier.ready(status=f"{hb.summary()}; reload failed, running config kept")
                    continue
                stopped_by = signal.Signals(signum).name
                notifier.stopping()
                log.info("daemon_stopping", signal=stopped_by, in_flight=hb.scheduler.in_flight)
                break
            jobs = len(hb.scheduler)
    log.info("daemon_stopped", reason=stopped_by, jobs=jobs)
    return 0


@contextlib.contextmanager
def _stopping_on_exit(notifier: Notifier) -> Iterator[None]:
    """STOPPING=1 however the daemon ends (a second one after a signal is harmless)."""
    try:
        yield
    finally:
        notifier.stopping()
