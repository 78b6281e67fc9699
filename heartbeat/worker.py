"""Vouch only for a live worker: the ``[worker]`` probe loop, pausing, and orphans.

Wires :class:`~heartbeat.liveness.WorkerLiveness` (the pure rule) to the probes
(heartbeat.probes), the scheduler and the sync-job documents:

* Every ``probe_interval`` seconds one probe round runs. Until the worker is first seen
  alive, and while it is down (``failure_threshold`` failed rounds in a row:
  ``worker_down``), the scheduler is paused: no job is checked in, none is unwatched.
  Back up with the same incarnation: ``worker_up`` and check-ins resume at once.
* Once an incarnation with a start time is known, a newly watched job is held (not
  checked in) until its document (``GET _connector/_sync_job/<id>``) has been read: a
  job whose ``started_at`` is before the incarnation's start minus ``clock_skew`` was
  claimed by an earlier incarnation and is unwatched (``job_removed``,
  ``reason="worker_restarted"``); any other is released. The same read is made of every
  watched job when the incarnation is first known (jobs restored at start: the
  ``BindsTo=`` case) and after each change of incarnation (``worker_restarted`` once,
  with ``previous``, ``current`` and ``orphaned``, when all are read).
* A read that fails (or is not sent, during an Elasticsearch outage) changes nothing:
  the job is released and read again :data:`RETRY_READ` seconds later.

It does not decide what a probe result means (heartbeat.liveness) and does not probe
(heartbeat.probes); it reads time only through the scheduler's clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from heartbeat.changes import Change, JobDropped, JobRemoved, JobsAdded
from heartbeat.config import WorkerSettings
from heartbeat.liveness import (
    Alive,
    Dead,
    Down,
    Incarnation,
    Restarted,
    Up,
    WorkerLiveness,
    iso,
    parse_time,
    vouches_for,
)
from heartbeat.outcomes import Outcome
from heartbeat.probes import Prober
from heartbeat.scheduler import Scheduler

__all__ = ["RETRY_READ", "WorkerMonitor"]

GetJob = Callable[[str], Awaitable[dict[str, Any] | Outcome]]
Probe = Callable[[], Awaitable[Alive | Dead]]

#: Seconds before a document that could not be read is read again.
RETRY_READ = 30.0
#: Document reads in flight at once.
CONCURRENCY = 4
#: The ``reason`` of ``job_removed`` for a job claimed by an earlier incarnation.
REASON = "worker_restarted"


@dataclass(slots=True)
class _Pass:
    """Reading every watched job after the incarnation became known or changed."""

    previous: Incarnation | None
    current: Incarnation
    remaining: set[str]
    orphaned: int = 0


class WorkerMonitor:
    """Probes the worker, pauses check-ins while it is down, drops its orphans."""

    def __init__(
        self,
        settings: WorkerSettings,
        scheduler: Scheduler,
        get_job: GetJob,
        *,
        probe: Probe | None = None,
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self.liveness = WorkerLiveness(settings.failure_threshold)
        self._prober = Prober(settings)
        self._probe = probe if probe is not None else self._prober.probe
        self._scheduler = scheduler
        self._watchlist = scheduler.watchlist
        self._get_job = get_job
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        self._to_read: dict[str, None] = {}  # an ordered set
        self._readable = anyio.Event()
        self._wake = anyio.Event()
        self._retry: dict[str, float] = {}  # id -> monotonic time to read again
        self._generation = 0
        self._pass: _Pass | None = None
        # No evidence yet that the worker is alive: vouch for nothing until there is.
        scheduler.pause()
        scheduler.change_observers.append(self._on_change)

    # -- what others read ---------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.liveness.up

    @property
    def incarnation(self) -> Incarnation | None:
        return self.liveness.incarnation

    def vouches_for(self, document: dict[str, Any]) -> bool:
        """Does ``document``'s ``started_at`` belong to the current incarnation (or can
        that not be told)? Discovery asks this before it watches a job."""
        started = parse_time(document.get("started_at"))
        return vouches_for(started, self.incarnation, self.settings.clock_skew)

    def status(self) -> dict[str, Any]:
        """``/status``'s ``worker``: ``{up, since, pid, started_at}``."""
        clock = self._scheduler.clock
        since = self.liveness.since
        incarnation = self.incarnation or Incarnation()
        return {
            "up": self.up,
            "since": None if since is None else iso(since + clock.wall() - clock.monotonic()),
            "pid": incarnation.pid,
            "started_at": iso(incarnation.start),
        }

    def reconfigure(self, settings: WorkerSettings) -> None:
        """SIGHUP: new intervals, threshold and skew apply from the next round."""
        if settings != self.settings:
            self.settings = settings
            self.liveness.failure_threshold = settings.failure_threshold
            self._prober.settings = settings
            self._wake.set()

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Probe every ``probe_interval`` and read documents, until cancelled."""
        clock = self._scheduler.clock
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader, name="heartbeat worker reads")
                while True:
                    self._wake = anyio.Event()
                    started = clock.monotonic()
                    result: Alive | Dead = Dead("probe_timeout", "the probe took too long")
                    with anyio.move_on_after(self.settings.probe_timeout + 1.0):
                        result = await self._probe()
                    self.observe(result, clock.monotonic())
                    await clock.wait_until(self._wake, started + self.settings.probe_interval)
        finally:
            with anyio.CancelScope(shield=True):
                await self._prober.close()

    def observe(self, result: Alive | Dead, now: float) -> None:
        """Act on one probe round's result."""
        scheduler = self._scheduler
        for transition in self.liveness.observe(result, now):
            match transition:
                case Down(reason=reason, error=error, never_up=never_up):
                    scheduler.pause()
                    self._log.error(
                        "worker_down",
                        reason=reason,
                        error=error,
                        jobs=len(scheduler),
                        never_up=never_up,
                    )
                case Up(duration_s=None, incarnation=incarnation):
                    self._log.info("worker_found", **incarnation.describe())
                    self._start_pass(None, incarnation)
                case Up(duration_s=duration, incarnation=incarnation):
                    assert duration is not None
                    self._log.warning(
                        "worker_up", duration_s=round(duration, 3), **incarnation.describe()
                    )
                case Restarted(previous=previous, current=current):
                    self._start_pass(previous, current)
        if self.up:
            scheduler.resume()
        for job_id, due in list(self._retry.items()):
            if due <= now:
                del self._retry[job_id]
                self._enqueue(job_id, hold=False)

    def _start_pass(self, previous: Incarnation | None, current: Incarnation) -> None:
        """Read every watched job against ``current``, holding each until it is read."""
        self._generation += 1
        ids = self._watchlist.job_ids()
        self._pass = _Pass(previous, current, set(ids) if current.start is not None else set())
        self._retry.clear()
        if current.start is not None:
            for job_id in ids:
                self._enqueue(job_id, hold=True)
        self._maybe_end_pass()

    def _maybe_end_pass(self) -> None:
        current = self._pass
        if current is None or current.remaining:
            return
        self._pass = None
        if current.previous is not None:
            self._log.warning(
                "worker_restarted",
                previous=current.previous.describe(),
                current=current.current.describe(),
                orphaned=current.orphaned,
            )
        elif current.orphaned:
            self._log.warning(
                "worker_orphans_dropped",
                orphaned=current.orphaned,
                **current.current.describe(),
            )

    def _on_change(self, change: Change) -> None:
        if isinstance(change, JobsAdded):
            incarnation = self.incarnation
            if incarnation is not None and incarnation.start is not None:
                for job_id in change.job_ids:
                    self._enqueue(job_id, hold=True)
        elif isinstance(change, JobRemoved | JobDropped):
            job_id = change.job_id
            self._to_read.pop(job_id, None)
            self._retry.pop(job_id, None)
            if self._pass is not None and job_id in self._pass.remaining:
                self._pass.remaining.discard(job_id)
                self._maybe_end_pass()

    def _enqueue(self, job_id: str, *, hold: bool) -> None:
        if hold:
            self._scheduler.hold(job_id)
        self._to_read[job_id] = None
        self._readable.set()

    async def _reader(self) -> None:
        slots = anyio.Semaphore(CONCURRENCY)
        async with anyio.create_task_group() as tg:
            while True:
                if not self._to_read:
                    self._readable = anyio.Event()
                    await self._readable.wait()
                    continue
                await slots.acquire()
                if not self._to_read:
                    slots.release()
                    continue
                job_id = next(iter(self._to_read))
                del self._to_read[job_id]
                tg.start_soon(self._read, job_id, slots, name="heartbeat worker read")

    async def _read(self, job_id: str, slots: anyio.Semaphore) -> None:
        generation = self._generation
        scheduler = self._scheduler
        try:
            if job_id not in scheduler:
                return
            document: dict[str, Any] | Outcome | None = None
            if not scheduler.in_outage:  # no extra load on a failing cluster
                try:
                    document = await self._get_job(job_id)
                except Exception:  # the client returns outcomes; this is a bug guard
                    self._log.exception("worker_read_crashed", job_id=job_id)
        finally:
            slots.release()
        if generation != self._generation or job_id not in scheduler:
            return  # the incarnation changed meanwhile: read again, for the new one
        self.apply(job_id, document)

    def apply(self, job_id: str, document: dict[str, Any] | Outcome | None) -> None:
        """Act on one read of a held job's document (None: not read)."""
        scheduler = self._scheduler
        current = self._pass
        if isinstance(document, dict) and not self.vouches_for(document):
            if current is not None:
                current.orphaned += 1
            self._log.info(
                "job_orphaned",
                job_id=job_id,
                started_at=document.get("started_at"),
                worker_started_at=iso(self.incarnation.start if self.incarnation else None),
            )
            self._watchlist.unwatch(job_id, reason=REASON)  # _on_change ends the pass
            return
        if not isinstance(document, dict):
            # Uncertainty never drops a job: vouch, and read it again later.
            self._retry[job_id] = scheduler.clock.monotonic() + RETRY_READ
        scheduler.release(job_id)
        if current is not None and job_id in current.remaining:
            current.remaining.discard(job_id)
            self._maybe_end_pass()
