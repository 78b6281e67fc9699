"""The library: a Heartbeat (client + scheduler + watch list) and its lifecycle.

:class:`Heartbeat` is the library API, for connectors that embed heartbeat in their
own event loop::

    async with Heartbeat(config) as hb:
        hb.watch("job-id")
        ...

It is also what a source of job ids is handed, seen through the narrow
:class:`heartbeat.sources.base.Feed`. The process around it (signals, reloads,
sd_notify, the sources that ``heartbeat run`` starts) is :mod:`heartbeat.runtime`;
this module imports neither that nor any source, and does not speak HTTP itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from heartbeat import restart
from heartbeat.changes import Change, JobDropped, JobsAdded
from heartbeat.chunked import Rows
from heartbeat.client import Client
from heartbeat.clients import Clients
from heartbeat.clock import Clock
from heartbeat.config import Config
from heartbeat.finished import StatusChecker
from heartbeat.health import Health
from heartbeat.identity import ClusterIdentity
from heartbeat.jobid import validate_many, validate_many_async
from heartbeat.leases import LeaseKeeper, check_ttl
from heartbeat.memory import Tombstone, Tombstones, outcomes_json
from heartbeat.metrics import Metrics
from heartbeat.scheduler import TIMER_SLACK, Scheduler
from heartbeat.state import StateStore
from heartbeat.status import Status, snapshot
from heartbeat.watchlist import ADD_CHUNK, JobView
from heartbeat.worker import WorkerMonitor

if TYPE_CHECKING:
    # aiohttp.web and prometheus_client are loaded only with [metrics] listen.
    from heartbeat.observability import Listener

log = structlog.get_logger("heartbeat")

#: The sections :meth:`Heartbeat.apply` reports when changed (queue, discovery and
#: control are applied by their sources: heartbeat.reload reloads them).
APPLIED = [
    "elasticsearch",
    "schedule",
    "backoff",
    "jobs",
    "logging",
    "queue",
    "discovery",
    "control",
    "worker",
]


class Heartbeat:
    """Checks watched sync jobs in, inside the caller's event loop."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        # Outlives every client (a reload builds a new one): the expected cluster.
        self.identity = ClusterIdentity(
            config.elasticsearch.cluster_uuid, on_change=self._identity_changed
        )
        self._clients = Clients(config, self.identity)
        self.scheduler = Scheduler(
            self._clients.current.check_in,
            schedule=config.schedule,
            backoff_settings=config.backoff,
            clock=clock,
            # Real time only: an injected clock moves when its owner says, to the instant.
            timer_slack=TIMER_SLACK if clock is None else 0.0,
        )
        #: The jobs and their claims (the scheduler times them).
        self.watchlist = self.scheduler.watchlist
        # Reads job statuses to drop finished jobs; the lambda follows a reloaded client.
        self.status_checker = StatusChecker(
            lambda job_id: self._clients.current.get_job(job_id),
            self.scheduler,
            config.schedule.status_check_interval,
            canceling_grace=config.schedule.canceling_grace,
        )
        #: ``[worker]``: check-ins only while the worker is alive (heartbeat.worker).
        self.worker: WorkerMonitor | None = None
        if config.worker.enabled:
            self.worker = WorkerMonitor(
                config.worker, self.scheduler, lambda job_id: self.client.get_job(job_id)
            )
        self._tg: TaskGroup | None = None
        self._services: TaskGroup | None = None
        #: Claims that expire unless renewed (heartbeat.leases).
        self.leases = LeaseKeeper(self.scheduler)
        #: Dropped jobs, kept so that a drop can be undone (heartbeat.memory).
        self.tombstones = Tombstones()
        self.scheduler.change_observers.append(self._watch_list_changed)
        self.state: StateStore | None = None
        if config.state.dir is not None:
            watchlist = self.watchlist
            # Read a chunk of ids at a time by the saver (heartbeat.chunked.Rows).
            self.state = StateStore(
                config.state.dir,
                lambda: Rows(watchlist.__iter__, watchlist.claims_of),
                leases=self.leases.snapshot,
                extras=self._memories,
                outcomes=lambda: Rows(
                    watchlist.__iter__, lambda ids: outcomes_json(watchlist.outcome_rows(ids))
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
        """The Elasticsearch client in use (a reload may replace it)."""
        return self._clients.current

    def _watch_list_changed(self, change: Change) -> None:
        if isinstance(change, JobDropped):
            self.tombstones.add(Tombstone.of_drop(change, self.scheduler.clock.wall()))
        elif isinstance(change, JobsAdded):
            for job_id in change.job_ids:
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
            self.watchlist.watch_many([job_id], source)
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
        await self.client.open()
        if self.state is not None:
            # The saved watch list and what is kept beside it, before any source.
            await restart.restore(
                self.state,
                self.scheduler,
                configured=self.config.jobs.ids,
                leases=self.leases,
                identity=self.identity,
                tombstones=self.tombstones,
            )
        # In chunks, yielding between them: a million ids never hold the loop for long.
        await self.watchlist.watch_many_async(self.config.jobs.ids, "config")
        if self.state is not None:
            state = self.state
            self.scheduler.change_observers.append(lambda _change: state.changed())
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
                if self.state is not None:
                    restart.save_on_exit(self.state)
                with anyio.CancelScope(shield=True):
                    await self._clients.close()

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

    def snapshot(self) -> Status:
        """Heartbeat's state now (heartbeat.status): ``/status``, STATUS=, readiness."""
        return snapshot(
            self.scheduler, worker=self.worker, identity=self.identity, state=self.state
        )

    def summary(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        return self.snapshot().summary()

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
        """Watch several ids (all validated first: for an embedder, this is where they
        enter); returns how many were new."""
        ttl = _lease(ttl)  # before the ids, as always
        return self.claim_valid(validate_many(job_ids), source, ttl=ttl)

    async def watch_many_async(
        self, job_ids: Iterable[str], source: str = "api", *, ttl: float | None = None
    ) -> int:
        """:meth:`watch_many` from async code: the ids are validated, then added, in
        chunks, yielding to the event loop between them (WatchList.watch_many_async)."""
        ttl = _lease(ttl)
        ids = await validate_many_async(job_ids, ADD_CHUNK)
        return await self.claim_valid_async(ids, source, ttl=ttl)

    # What a source is handed (heartbeat.sources.base.Feed and the wider feeds): ids
    # validated where they entered (the source's own check), claimed as they are.

    def claim_valid(self, job_ids: Sequence[str], source: str, *, ttl: float | None = None) -> int:
        """Claim ``job_ids`` (valid ids) for ``source``; how many were not watched."""
        ttl, ids = _lease(ttl), list(job_ids)
        added = self.watchlist.watch_many(ids, source)
        self._granted(ids, source, ttl)
        return added

    async def claim_valid_async(
        self, job_ids: Sequence[str], source: str, *, ttl: float | None = None
    ) -> int:
        """:meth:`claim_valid` in chunks, yielding to the event loop between them."""
        ttl, ids = _lease(ttl), list(job_ids)
        added = await self.watchlist.watch_many_async(ids, source)
        self._granted(ids, source, ttl)
        return added

    def _granted(self, ids: list[str], source: str, ttl: float | None) -> None:
        if ttl is not None or len(self.leases.book):
            self.leases.grant(ids, source, ttl)
            if self.state is not None:
                self.state.changed()  # a new expiry must survive a restart

    def unwatch(self, job_id: str, *, reason: str = "unwatched") -> bool:
        """Stop watching ``job_id`` (every source's claim); False when it was not watched."""
        return self.watchlist.unwatch(job_id, reason=reason)

    def jobs(self) -> list[JobView]:
        return self.watchlist.jobs()

    @property
    def clock(self) -> Clock:
        return self.scheduler.clock

    def release(self, job_id: str, *, source: str, reason: str) -> bool:
        """Withdraw ``source``'s claim on ``job_id``; True when it is no longer watched."""
        return self.watchlist.unwatch(job_id, reason=reason, source=source)

    def claimed(self, source: str) -> set[str]:
        """The ids ``source`` claims (restored from the state file too)."""
        return self.watchlist.claimed(source)

    def replace_claims(
        self, source: str, wanted: Iterable[str], *, reason: str = "source"
    ) -> tuple[int, int]:
        """Make ``source``'s claims exactly ``wanted`` (all validated first: for an
        embedder, this is where they enter; raises InvalidJobId and changes nothing);
        returns (claims added, withdrawn)."""
        return self.replace_valid_claims(source, validate_many(wanted), reason=reason)

    def replace_valid_claims(
        self, source: str, wanted: Sequence[str], *, reason: str = "source"
    ) -> tuple[int, int]:
        """:meth:`replace_claims` of ids already valid (a source's own check)."""
        return self.watchlist.replace_claims(source, wanted, reason=reason)

    def watching(self) -> int:
        """How many jobs are watched."""
        return len(self.scheduler)

    def is_watched(self, job_id: str) -> bool:
        return job_id in self.scheduler

    def job(self, job_id: str) -> JobView | None:
        return self.watchlist.job(job_id)

    def expires_at(self, view: JobView) -> float | None:
        """When the job's claims end unless renewed; None when any is permanent."""
        return self.leases.expires_at(view.id, view.sources)

    def claim_counts(self) -> dict[str, int]:
        """How many ids each source claims."""
        return self.watchlist.claim_counts()

    async def prepare_client(self, new: Config) -> Client | None:
        """The client ``new`` needs, opened (its TLS context built), or None when the
        running one will do. Raises ConfigError; nothing running is touched."""
        return await self._clients.prepare(self.config, new)

    async def apply(self, new: Config, *, client: Client | None = None) -> list[str]:
        """Apply a new configuration in place; returns the sections that changed.

        ``client``: from :meth:`prepare_client` (heartbeat.reload prepares it first, so
        that a reload that cannot build it changes nothing); else built here."""
        old = self.config
        changed = [section for section in APPLIED if getattr(old, section) != getattr(new, section)]
        check_in = None
        if client is None:
            client = await self.prepare_client(new)
        if client is not None:
            # In-flight requests finish on the old session; it is closed later.
            await self._clients.swap(client, new.elasticsearch.cluster_uuid)
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
                self.watchlist.unwatch(job_id, reason="config", source="config")
        self.watchlist.watch_many([i for i in new.jobs.ids if i not in old_ids], "config")
        self.config = new
        return changed


def _lease(ttl: float | None) -> float | None:
    """A claim's ``ttl`` checked (None: a permanent claim)."""
    return None if ttl is None else check_ttl(ttl)
