"""The deadline heap: when each watched job is next due, and where new jobs go.

Owns one heap of ``(due, id, job)`` entries with lazy invalidation: a job moved to
another time gets a new entry, and the old one is skipped when it surfaces (its
``due`` is no longer the job's own float), as is the entry of a job removed, in flight
or held. Equal due times fall back on the id, unique in the watch list, so no
per-entry sequence number is needed (it was 40 bytes a job). No task per job: 100,000
jobs cost a heap entry each and no CPU between due times.

It also sets the due times no check-in gave: the start-up ramp (new jobs ``1 /
ramp_rate`` seconds apart, :meth:`Deadlines.place`), oldest success first after a
restore (:meth:`Deadlines.ramp_oldest_first`), everyone again after an outage
(:meth:`Deadlines.respread`), a shorter interval at once (:meth:`Deadlines.pull_in`).

It does not decide when a job is checked in: the scheduler's loop takes what is due
(:meth:`Deadlines.take`) while a slot is free, and sets :attr:`Deadlines.wake_before`
so that a job pushed before the loop means to wake up wakes it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable

from heartbeat import chunked
from heartbeat.outage import recovery_times
from heartbeat.watchlist import Job


class Deadlines:
    """The jobs waiting for their due time, earliest first."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._heap: list[tuple[float, str, Job]] = []
        self._wake = wake
        #: A job pushed due before this wakes the loop: its next wake-up while it
        #: sleeps with a slot free; -inf while it is awake, or sleeps with every slot
        #: busy (then the worker that frees a slot takes what is due, or wakes it).
        self.wake_before = -math.inf
        #: Where the start-up ramp goes on.
        self._ramp_next = -math.inf

    def __len__(self) -> int:
        """Heap entries, stale ones included."""
        return len(self._heap)

    def push(self, job: Job, due: float) -> None:
        """``job`` is due at ``due`` (its earlier entry, if any, goes stale)."""
        job.due = due
        heapq.heappush(self._heap, (due, job.id, job))
        if due < self.wake_before:
            self._wake()

    def first(self) -> Job | None:
        """The job due first, after dropping stale entries."""
        heap = self._heap
        while heap:
            due, _, job = heap[0]
            # The entry of the job's current due time: the same float object, so an
            # entry left from an earlier time is never taken for the current one.
            if due is job.due and not (job.removed or job.in_flight or job.held):
                return job
            heapq.heappop(heap)
        return None

    def take(self, now: float) -> Job | None:
        """The job due first, off the heap, if it is due by ``now``."""
        job = self.first()
        if job is None or job.due > now:
            return None
        heapq.heappop(self._heap)
        return job

    def next_due(self) -> float | None:
        job = self.first()
        return None if job is None else job.due

    def place(self, jobs: Iterable[Job], now: float, ramp_rate: float) -> None:
        """New jobs' first due times: the start-up ramp, ``ramp_rate`` a second."""
        spacing = 1.0 / ramp_rate
        for job in jobs:
            due = max(now, self._ramp_next)
            self._ramp_next = due + spacing
            job.anchor = due
            self.push(job, due)
        self._wake()

    def ramp_oldest_first(
        self, jobs: Iterable[Job], ramp_rate: float, chunk: int = chunked.STEP
    ) -> chunked.Steps[None]:
        """Re-order the start-up ramp: the jobs whose last success is oldest (or that
        never succeeded) are checked in first. Only jobs not yet checked in move.

        Steps (:mod:`heartbeat.chunked`: drain them, at once or from async code):
        sorted a chunk at a time, then merged (both stable: the order one sort of the
        whole list gives), so that a million jobs never hold the loop for long."""
        every = list(jobs)
        waiting: list[Job] = []
        for first in range(0, len(every), chunk):
            waiting += [job for job in every[first : first + chunk] if not job.in_flight]
            yield
        del every
        if not waiting:
            return
        runs = []
        start = math.inf
        for first in range(0, len(waiting), chunk):
            if first:
                yield
            run = sorted(waiting[first : first + chunk], key=_success_key)
            start = min(start, min(job.due for job in run))
            runs.append(run)
        spacing = 1.0 / ramp_rate
        for index, job in enumerate(heapq.merge(*runs, key=_success_key)):
            if index and not index % chunk:
                yield
            due = start + index * spacing
            job.anchor = due
            self.push(job, due)
        self._ramp_next = start + len(waiting) * spacing

    def respread(self, jobs: Iterable[Job], now: float, interval: float) -> None:
        """After an outage: everyone due again, oldest success first, spread out
        (:func:`heartbeat.outage.recovery_times`)."""
        waiting = [job for job in jobs if not job.in_flight]
        waiting.sort(key=_success_key)
        self._heap = []
        for job, due in zip(waiting, recovery_times(now, len(waiting), interval), strict=True):
            job.anchor = due
            self.push(job, due)
        self._wake()

    def pull_in(self, jobs: Iterable[Job], now: float, interval: float) -> None:
        """A shorter interval: the jobs due later than one interval from now are due
        then instead."""
        for job in jobs:
            if not job.in_flight and job.due > now + interval:
                job.anchor = now + interval
                self.push(job, job.anchor)


def _success_key(job: Job) -> float:
    """Oldest success first; a job that never succeeded before any."""
    return -math.inf if job.last_success is None else job.last_success
