"""Finished jobs: read each watched job's status now and then, drop the finished ones.

A check-in succeeds whatever the job's status (Elasticsearch does not look at it), so
without this a completed job would be checked in for ever. Every
``[schedule] status_check_interval`` seconds each watched job is read once
(``GET _connector/_sync_job/<id>``), the reads spread evenly over the interval and at
most :data:`CONCURRENCY` at a time, so they never compete with check-ins for the
connection pool:

* ``completed``, ``canceled``, ``error``, ``suspended``: the job is dropped, whichever
  sources asked for it (``job_dropped`` with ``reason="finished"`` and ``job_status``).
  A connector service that stops gracefully suspends its jobs, and the restarted
  service runs them again from ``pending``: nothing is left to vouch for;
* ``canceling``: ``job_canceling`` is logged once per job, and the job is checked in
  for at most ``[schedule] canceling_grace`` seconds after heartbeat first saw it
  canceling (here or in discovery's listing): a live worker finishes a cancel in
  seconds, a dead worker's ``canceling`` job must be left to the idle rule. Then it is
  dropped with ``reason="finished"`` and ``job_status="canceling"`` (one timer per
  canceling job, on the scheduler's clock);
* a genuine 404 from Elasticsearch: dropped as a check-in 404 would be (``not_found``);
* any other status, and any failure (timeouts, 5xx, a proxy's 404): nothing changes.
  Check-ins report trouble with Elasticsearch already, and while the scheduler is in
  outage mode no reads go out at all.

A round takes a snapshot of the watch list and reads job ``i`` of ``n`` at
``start + interval * (i + 1) / n``; the next round starts when it ends. Reads never go
out faster than :data:`MAX_READS_PER_SECOND`: a large watch list stretches the round. So a job is
read about once per interval, and first read at most two intervals after it was added.

This module owns no watch-list state beyond when each job was first seen canceling. It
does not check in, and reads time only through the scheduler's injected clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from heartbeat.clock import Timer
from heartbeat.outcomes import NotFound, Outcome, outcome_key
from heartbeat.scheduler import Scheduler

GetJob = Callable[[str], Awaitable[dict[str, Any] | Outcome]]

#: Statuses after which a job never needs another check-in.
FINISHED = frozenset({"completed", "canceled", "error", "suspended"})
#: Seconds a canceling job is still checked in after it was first seen canceling.
CANCELING_GRACE = 60.0
#: First sightings of jobs no longer watched are forgotten after this many seconds
#: beyond the grace (discovery must not re-watch a job whose grace is over).
FORGET_AFTER = 3600.0
#: Status reads in flight at once. The client's pool has 4 connections beyond the
#: scheduler's ``max_in_flight``; this leaves room for discovery's listing too.
CONCURRENCY = 2
#: Status reads never go out faster than this, however many jobs are watched: with
#: 100,000 jobs a round then takes 5,000 s instead of 300 s, rather than sending
#: Elasticsearch a third as many reads as check-ins.
MAX_READS_PER_SECOND = 20.0


class StatusChecker:
    """Reads watched jobs' statuses in rounds and drops the finished ones."""

    def __init__(
        self,
        get_job: GetJob,
        scheduler: Scheduler,
        interval: float,
        *,
        concurrency: int = CONCURRENCY,
        canceling_grace: float = CANCELING_GRACE,
        logger: Any = None,
    ) -> None:
        self._get_job = get_job
        self._scheduler = scheduler
        self._watchlist = scheduler.watchlist
        self.interval = interval
        self._slots = anyio.Semaphore(concurrency)
        self._changed = anyio.Event()
        self.canceling_grace = canceling_grace
        #: Monotonic time each job was first seen canceling.
        self._canceling_since: dict[str, float] = {}
        self._timers: dict[str, Timer] = {}
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")

    def set_interval(self, interval: float) -> None:
        """Apply a new ``status_check_interval`` (SIGHUP): a new round starts at once."""
        if interval != self.interval:
            self.interval = interval
            self._changed.set()

    async def run(self) -> None:
        """Read statuses round after round until cancelled (idle while the interval is 0)."""
        while True:
            self._changed = anyio.Event()
            if self.interval <= 0:
                await self._changed.wait()
                continue
            await self.round(self.interval)

    async def round(self, interval: float) -> None:
        """One pass over a snapshot of the watch list, spread over ``interval`` seconds."""
        clock = self._scheduler.clock
        ids = self._watchlist.job_ids()
        start = clock.monotonic()
        interval = max(interval, len(ids) / MAX_READS_PER_SECOND)
        self._forget_canceling(start)
        if not ids:
            await clock.wait_until(self._changed, start + interval)
            return
        async with anyio.create_task_group() as tg:
            for index, job_id in enumerate(ids):
                await clock.wait_until(self._changed, start + interval * (index + 1) / len(ids))
                if self._changed.is_set():
                    return
                if job_id not in self._scheduler or self._scheduler.in_outage:
                    continue  # no extra load on a cluster that is already failing
                await self._slots.acquire()
                tg.start_soon(self._check, job_id, name=f"status {job_id!r}")

    async def _check(self, job_id: str) -> None:
        try:
            result = await self._get_job(job_id)
        except Exception:  # the client returns outcomes; this is a bug guard
            self._log.exception("status_check_crashed", job_id=job_id)
            return
        finally:
            self._slots.release()
        self.apply(job_id, result)

    def apply(self, job_id: str, result: dict[str, Any] | Outcome) -> None:
        """Act on one read: drop, log ``job_canceling``, or nothing."""
        if job_id not in self._scheduler:
            return  # unwatched while the read was out
        if isinstance(result, NotFound):
            # Through the drop rule, as a check-in's 404 (heartbeat.drops).
            self._scheduler.not_found(job_id, result)
            return
        if not isinstance(result, dict):
            self._log.debug("status_check_failed", job_id=job_id, reason=outcome_key(result))
            return
        status = result.get("status")
        if status in FINISHED:
            self._watchlist.drop(job_id, "finished", job_status=status)
        elif status == "canceling" and not self.canceling(job_id):
            self._grace_over(job_id)

    def canceling(self, job_id: str) -> bool:
        """Note that ``job_id`` is canceling (a status read, a discovery listing); True
        while it is within ``canceling_grace`` of when it was first seen so."""
        now = self._scheduler.clock.monotonic()
        since = self._canceling_since.get(job_id)
        if since is None:
            since = self._canceling_since[job_id] = now
            self._log.info("job_canceling", job_id=job_id)
            self._timers[job_id] = self._scheduler.clock.call_at(
                now + self.canceling_grace, lambda: self._grace_over(job_id)
            )
        return now - since < self.canceling_grace

    def _grace_over(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        if job_id in self._scheduler and job_id in self._canceling_since:
            self._watchlist.drop(job_id, "finished", job_status="canceling")

    def _forget_canceling(self, now: float) -> None:
        horizon = now - self.canceling_grace - FORGET_AFTER
        for job_id, since in list(self._canceling_since.items()):
            if since < horizon and job_id not in self._scheduler:
                del self._canceling_since[job_id]

    def close(self) -> None:
        """Cancel the grace timers (the Heartbeat is stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
