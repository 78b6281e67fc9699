"""Claims that expire (leases): a claim with a TTL ends unless renewed within it.

As etcd leases and Consul TTL checks: a producer that dies without unwatching stops
renewing, and its claims end by themselves, so heartbeat stops vouching for its jobs.

* :class:`Leases` is the pure rule: claims ``(job id, source)`` with an expiry, on any
  clock. Granting a claim a TTL sets its expiry; granting it none makes it permanent
  (a renewal without a TTL is a permanent claim). :meth:`Leases.expire` returns the
  claims whose time has come. One heap entry per lease: a renewal only moves the
  expiry, and an entry that surfaces before its (renewed) expiry is pushed back
  once. So nothing runs between expiries, whatever the number of leases.
* :class:`LeaseKeeper` wires it to the scheduler: one timer (``clock.call_at``) at the
  earliest expiry; when it fires, each expired claim is withdrawn
  (``watchlist.unwatch(..., reason="expired", source=...)``: the job goes only with its
  last claim), counted per source for ``heartbeat_claims_expired_total{source}``. It
  forgets the leases of jobs that leave the watch list, and converts expiries to wall
  clock for the state file and the control API's ``expires_at``.

Internally expiries are on the scheduler's monotonic clock; the state file keeps them
as wall-clock times, so a lease survives a restart with its remaining time (a restart
is not a renewal), and one that expired while heartbeat was down ends at start.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from heartbeat.changes import Change, ClaimWithdrawn, JobDropped, JobRemoved
from heartbeat.chunked import Rows

if TYPE_CHECKING:  # the CLI imports check_ttl: keep this module light
    from heartbeat.clock import Timer
    from heartbeat.scheduler import Scheduler

__all__ = ["MIN_TTL", "LeaseKeeper", "Leases", "check_ttl"]

#: The shortest TTL accepted, in seconds.
MIN_TTL = 1.0
#: The ``reason`` of ``job_removed`` when a job's last claim expires.
REASON = "expired"

Claim = tuple[str, str]  # (job id, source)


def check_ttl(value: object, name: str = "ttl") -> float:
    """A TTL given by a producer, as seconds; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds") from None
    if not seconds >= MIN_TTL or seconds == float("inf"):
        raise ValueError(f"{name} must be at least {MIN_TTL:g} s (and finite)")
    return seconds


class Leases:
    """Claims with an expiry. Pure: the caller says what time it is."""

    def __init__(self) -> None:
        self._expiry: dict[Claim, float] = {}
        self._by_job: dict[str, set[str]] = {}
        self._heap: list[tuple[float, int, Claim]] = []
        #: The earliest time each claim is queued at (a renewal that moves the expiry
        #: later pushes nothing: that entry is queued again when it surfaces).
        self._queued: dict[Claim, float] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._expiry)

    def grant(self, job_id: str, source: str, expires: float | None) -> None:
        """Set a claim's expiry; None makes it permanent (no lease)."""
        if expires is None:
            self.release(job_id, source)
            return
        claim = (job_id, source)
        self._expiry[claim] = expires
        self._by_job.setdefault(job_id, set()).add(source)
        queued = self._queued.get(claim)
        if queued is None or expires < queued:
            self._push(claim, expires)

    def _push(self, claim: Claim, when: float) -> None:
        self._queued[claim] = when
        heapq.heappush(self._heap, (when, next(self._order), claim))

    def release(self, job_id: str, source: str) -> None:
        """Forget one claim's lease (its entry on the heap goes when it surfaces)."""
        if self._expiry.pop((job_id, source), None) is not None:
            sources = self._by_job[job_id]
            sources.discard(source)
            if not sources:
                del self._by_job[job_id]

    def forget(self, job_id: str) -> None:
        """Forget every lease of a job that is no longer watched."""
        for source in self._by_job.pop(job_id, set()):
            del self._expiry[(job_id, source)]

    def jobs(self) -> list[str]:
        return list(self._by_job)

    def leased(self, job_id: str) -> dict[str, float]:
        """``{source: expiry}`` of a job's leases."""
        return {source: self._expiry[(job_id, source)] for source in self._by_job.get(job_id, ())}

    def next_expiry(self) -> float | None:
        """When the earliest lease ends (None: no lease). Settles entries that surface
        stale (released) or early (renewed since: queued again at the new expiry)."""
        heap = self._heap
        while heap:
            when, _, claim = heap[0]
            actual = self._expiry.get(claim)
            if actual == when:
                return when
            heapq.heappop(heap)
            if self._queued.get(claim) == when:
                del self._queued[claim]
            if actual is not None and actual > when and claim not in self._queued:
                self._push(claim, actual)
        return None

    def expire(self, now: float) -> list[Claim]:
        """Every claim whose lease has ended by ``now``, earliest first; they are gone
        from the book when this returns."""
        ended: list[Claim] = []
        while (when := self.next_expiry()) is not None and when <= now:
            _, _, claim = heapq.heappop(self._heap)
            if self._queued.get(claim) == when:
                del self._queued[claim]
            ended.append(claim)
            self.release(*claim)
        return ended


class LeaseKeeper:
    """The scheduler's leases: grants, the one timer, expiry, counts, wall-clock views."""

    def __init__(self, scheduler: Scheduler, *, logger: Any = None) -> None:
        self._scheduler = scheduler
        self._watchlist = scheduler.watchlist
        self._clock = scheduler.clock
        self.book = Leases()
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        #: Claims expired so far, per source (``heartbeat_claims_expired_total``).
        self.expired: Counter[str] = Counter()
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        scheduler.change_observers.append(self._on_change)

    def _to_wall(self) -> float:
        return self._clock.wall() - self._clock.monotonic()

    def grant(self, job_ids: Iterable[str], source: str, ttl: float | None) -> None:
        """``ttl`` seconds from now for each claim; None: permanent claims."""
        if ttl is None:
            if len(self.book):
                for job_id in job_ids:
                    self.book.release(job_id, source)
            return
        expires = self._clock.monotonic() + ttl
        for job_id in job_ids:
            if job_id in self._scheduler:
                self.book.grant(job_id, source, expires)
        self._arm()

    def restore(self, leases: dict[str, dict[str, float]]) -> None:
        """Leases from the state file (wall-clock expiries) for claims now watched; the
        ones that ended while heartbeat was down end now, before any check-in."""
        offset = self._to_wall()
        claimed: dict[str, set[str]] = {}  # by source, read once each
        for job_id, by_source in leases.items():
            for source, wall in by_source.items():
                if source not in claimed:
                    claimed[source] = self._watchlist.claimed(source)
                if job_id in claimed[source]:
                    self.book.grant(job_id, source, wall - offset)
        self.fire()

    def snapshot(self) -> Rows:
        """Every lease as ``{job id: {source: wall-clock expiry}}`` (for the state file,
        which reads it a chunk of ids at a time)."""
        return Rows(self.book.jobs, self._wall_expiries)

    def _wall_expiries(self, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        offset = self._to_wall()
        return {
            job_id: {source: round(when + offset, 3) for source, when in by_source.items()}
            for job_id in job_ids
            if (by_source := self.book.leased(job_id))
        }

    def expires_at(self, job_id: str, sources: Iterable[str]) -> float | None:
        """Wall-clock time the job's last claim ends: the latest among its leases, or
        None when any of its claims is permanent."""
        leased = self.book.leased(job_id)
        latest: float | None = None
        for source in sources:
            when = leased.get(source)
            if when is None:
                return None
            latest = when if latest is None else max(latest, when)
        return None if latest is None else latest + self._to_wall()

    def fire(self) -> None:
        """End every lease whose time has come; re-arm the timer for the next one."""
        self._timer = self._timer_at = None
        for job_id, source in self.book.expire(self._clock.monotonic()):
            self.expired[source] += 1
            self._watchlist.unwatch(job_id, reason=REASON, source=source, log_source=True)
        self._arm()

    def _arm(self) -> None:
        when = self.book.next_expiry()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_at(when, self.fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    def _on_change(self, change: Change) -> None:
        if isinstance(change, JobRemoved | JobDropped):
            self.book.forget(change.job_id)
        elif isinstance(change, ClaimWithdrawn):
            self.book.release(change.job_id, change.source)
