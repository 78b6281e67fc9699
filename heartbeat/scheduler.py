"""Who is due when: the loop that grants due check-ins, its workers, the in-flight limit.

Owns the loop and the workers, and wires the parts it holds together:

* the watch list (:mod:`heartbeat.watchlist`: the jobs and their claims, which every
  other part reads and changes directly: ``scheduler.watchlist``),
* the deadline heap (:mod:`heartbeat.deadlines`: when each job is next due),
* the completion (:mod:`heartbeat.completion`: each outcome into a next due time or a
  drop, with the outage and drop rules).

It does not speak HTTP (it calls an injected ``check_in`` coroutine that returns an
:mod:`heartbeat.outcomes` value) and never reads the clock directly (an injected
:class:`~heartbeat.clock.Clock`), so tests drive it with a manual clock.

Design:

* The loop grants due jobs oldest-first while fewer than ``max_in_flight`` requests
  are out: that is the fair (FIFO) limit; nothing starves. At most one request per
  job is in flight (a job is off the heap while its request runs).
* Workers, one per slot ever busy, not a task per check-in: a worker that finishes
  one takes the next due job itself, or parks until the loop hands it one.
* Outage mode (:mod:`heartbeat.outage` decides when): after enough consecutive
  cluster-wide failures from several distinct jobs (no success between them; one sick
  job only backs off on its own) per-job retries stop, and one probe at a time goes
  out with backoff. When a probe gets an answer from Elasticsearch, every job is
  rescheduled, oldest last success first, spread over part of an interval so recovery
  is not a stampede.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from heartbeat import chunked
from heartbeat.changes import ChangeObserver
from heartbeat.clock import Clock, SystemClock
from heartbeat.completion import Completion
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.deadlines import Deadlines
from heartbeat.outcomes import NotFound, Outcome, Retryable, Success
from heartbeat.watchlist import Job, WatchList

CheckIn = Callable[[str], Awaitable[Outcome]]
#: Called after every check-in with ``(job_id, outcome, seconds it took)``.
OutcomeObserver = Callable[[str, Outcome, float], None]

#: The daemon's timer slack (Heartbeat, on the real clock): at 1,000 check-ins/s the
#: loop wakes every 20 ms for 20 due jobs rather than every 1 ms for one. Lateness grows
#: by at most this; its budget is seconds (bench/checkin_cpu.py, docs/performance.md).
TIMER_SLACK = 0.020


class Scheduler:
    def __init__(
        self,
        check_in: CheckIn,
        *,
        schedule: ScheduleSettings,
        backoff_settings: BackoffSettings,
        clock: Clock | None = None,
        rng: Callable[[], float] | None = None,
        logger: Any = None,
        timer_slack: float = 0.0,
    ) -> None:
        self._check_in = check_in
        #: The loop sleeps this much past the first due time, and grants everything due
        #: by then in one go: one wake-up per tick, not one per check-in.
        self._slack = timer_slack
        self.schedule = schedule
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._monotonic = self.clock.monotonic
        self._limit = schedule.max_in_flight
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        watchlist = self.watchlist = WatchList(
            self.clock, place=self._place, forget=self._forget, logger=self._log
        )
        #: Set to make the loop look again (cleared by the loop each time it looks).
        self._wake = asyncio.Event()
        self.deadlines = Deadlines(self._wake.set)
        #: Outcomes into due times and drops; the outage and drop rules (its own).
        completion = self.completion = Completion(
            watchlist,
            self.deadlines,
            schedule=schedule,
            backoff_settings=backoff_settings,
            rng=rng if rng is not None else random.random,
            logger=self._log,
        )
        self.complete = completion.complete
        self.outage = completion.outage
        self.drops = completion.drops
        self._failures = completion.failure_log
        self._in_flight = 0
        #: True while the loop sleeps with every slot busy: it then ignores the heap,
        #: so a worker that frees a slot and finds nothing due must wake it.
        self._slots_full = False
        #: Workers with nothing to do, each waiting for its next job (None: exit).
        self._parked: list[asyncio.Future[Job | None]] = []
        self._stopping = False
        #: While paused (the worker is down) nothing is granted; jobs stay watched.
        self.paused = False
        self._periodic: list[list[Any]] = []  # [period, next_at, callback]
        self.outcome_observers: list[OutcomeObserver] = []
        self._probe_in_flight = False

    # ------------------------------------------------------------------ the watch list

    def __len__(self) -> int:
        return len(self.watchlist)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.watchlist

    @property
    def change_observers(self) -> list[ChangeObserver]:
        """The watch list's observers (:mod:`heartbeat.changes`)."""
        return self.watchlist.observers

    def _place(self, jobs: list[Job], now: float) -> None:
        self.deadlines.place(jobs, now, self.schedule.ramp_rate)

    def _forget(self, job: Job) -> None:
        """A job left the watch list: its pending drop, if any, no longer counts."""
        if job.pending_drop is not None:
            job.pending_drop = None
            self.drops.cleared(watched=len(self.watchlist))

    def ramp_oldest_first(self) -> None:
        """After a restore: the jobs whose last success is oldest go first."""
        chunked.drain(self._ramp_steps())

    async def ramp_oldest_first_async(self) -> None:
        """:meth:`ramp_oldest_first`, yielding to the event loop between chunks."""
        await chunked.drain_async(self._ramp_steps(), freeze=True)

    def _ramp_steps(self) -> chunked.Steps[None]:
        return self.deadlines.ramp_oldest_first(self.watchlist.records(), self.schedule.ramp_rate)

    @property
    def pending_drops(self) -> int:
        """Jobs whose first genuine 404 waits for its confirmation."""
        return self.drops.pending

    # ------------------------------------------------------------------ settings

    def reconfigure(
        self,
        *,
        schedule: ScheduleSettings,
        backoff_settings: BackoffSettings,
        check_in: CheckIn | None = None,
    ) -> None:
        """Apply new settings (SIGHUP). Jobs due later than one new interval from now
        are pulled in, so a shorter interval takes effect at once."""
        shorter = schedule.interval < self.schedule.interval
        self.schedule = schedule
        self._limit = schedule.max_in_flight
        self.completion.configure(schedule, backoff_settings)
        if check_in is not None:
            self._check_in = check_in
        if shorter:
            now = self.clock.monotonic()
            self.deadlines.pull_in(self.watchlist.records(), now, schedule.interval)
        self._wake.set()

    def add_periodic(self, period: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` every ``period`` seconds from the scheduler's own loop
        (so a stuck loop stops it: that is what the systemd watchdog relies on)."""
        self._periodic.append([period, self.clock.monotonic() + period, callback])
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    def next_due(self) -> float | None:
        return self.deadlines.next_due()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def in_outage(self) -> bool:
        return self.outage.since is not None

    @property
    def outage_since(self) -> float | None:
        """Monotonic time the current outage began, or None."""
        return self.outage.since

    @outage_since.setter
    def outage_since(self, value: float | None) -> None:
        self.outage.since = value

    @property
    def last_contact_ok(self) -> bool | None:
        """Did the cluster answer last (True), or fail for several jobs since (False)?"""
        return self.outage.contact_ok

    @property
    def last_success_at(self) -> float | None:
        """Monotonic time of the latest success, any job."""
        return self.completion.last_success_at

    @property
    def failure_cause(self) -> str | None:
        """What the failures since the cluster last answered say (``unreachable``,
        ``unauthorized``, ``misrouted``: :data:`heartbeat.outage.CAUSES`), or None."""
        return self.outage.cause

    def pause(self) -> None:
        """Grant no check-in until :meth:`resume`; jobs stay watched and due."""
        self.paused = True

    def resume(self) -> None:
        """Grant again at once: jobs that fell due while paused go out oldest first."""
        if self.paused:
            self.paused = False
            self._wake.set()

    def hold(self, job_id: str) -> bool:
        """Keep one job from being checked in until :meth:`release` (a request already
        in flight finishes). False when it is not watched."""
        job = self.watchlist.get(job_id)
        if job is None:
            return False
        job.held = True
        return True

    def release(self, job_id: str) -> None:
        """Let a held job be checked in again, at its due time (or now, if past)."""
        job = self.watchlist.get(job_id)
        if job is not None and job.held:
            job.held = False
            if not job.in_flight:
                self.deadlines.push(job, job.due)
                self._wake.set()

    def stop(self) -> None:
        """Stop granting new check-ins; :meth:`run` returns once in-flight requests
        have finished (or ``shutdown_timeout`` has passed)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Check jobs in until :meth:`stop`."""
        async with anyio.create_task_group() as tg:
            while not self._stopping:
                self._wake.clear()
                now = self.clock.monotonic()
                self._tick(now)
                self._grant(now, tg)
                wakeup = self.next_wakeup()
                self._slots_full = self._in_flight >= self._limit
                if not self._slots_full:
                    # The loop ignores the heap while every slot is busy: the worker
                    # that frees one takes what is due, or wakes it.
                    self.deadlines.wake_before = math.inf if wakeup is None else wakeup
                if self._wake.is_set():
                    await anyio.lowlevel.checkpoint()  # let others run; look again
                elif wakeup is None:
                    await self._wake.wait()
                else:
                    # A timer, not a cancel scope: this runs once per check-in or so.
                    timer = self.clock.call_at(wakeup + self._slack, self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
                self.deadlines.wake_before = -math.inf
                self._slots_full = False
            await self._drain(tg)

    async def _drain(self, tg: TaskGroup) -> None:
        parked, self._parked = self._parked, []
        for waiter in parked:
            if not waiter.done():
                waiter.set_result(None)  # nothing more to do: exit
        with anyio.move_on_after(self.schedule.shutdown_timeout):
            while self._in_flight:
                self._wake.clear()
                await self._wake.wait()
        if self._in_flight:
            self._log.warning("shutdown_timeout", abandoned_requests=self._in_flight)
        tg.cancel_scope.cancel()

    def _tick(self, now: float) -> None:
        self._failures.flush(now)
        for entry in self._periodic:
            period, next_at, callback = entry
            if now >= next_at:
                # After a stall, the next run is one period from now, not at once.
                entry[1] = next_at + period if next_at + period > now else now + period
                callback(now)

    def next_wakeup(self) -> float | None:
        candidates: list[float] = [entry[1] for entry in self._periodic]
        flush = self._failures.next_flush()
        if flush is not None:
            candidates.append(flush)
        if self.paused:
            pass  # resume() wakes the loop
        elif self.in_outage:
            if not self._probe_in_flight and self.deadlines.first() is not None:
                candidates.append(self.outage.probe_at)
        elif self._in_flight < self.schedule.max_in_flight:
            due = self.next_due()
            if due is not None:
                candidates.append(due)
        return min(candidates) if candidates else None

    def _grant(self, now: float, tg: TaskGroup) -> None:
        if self.paused:
            return
        if self.in_outage:
            if not self._probe_in_flight and now >= self.outage.probe_at:
                job = self.deadlines.take(math.inf)
                if job is not None:
                    self._probe_in_flight = True
                    self.outage.probe_sent()
                    self._claim(job)
                    self._start(job, tg, probe=True)
            return
        while (job := self._take_due(now)) is not None:
            while self._parked:
                waiter = self._parked.pop()
                if not waiter.done():
                    waiter.set_result(job)  # an idle worker takes it: no new task
                    break
            else:
                self._start(job, tg, probe=False)

    def _start(self, job: Job, tg: TaskGroup, *, probe: bool) -> None:
        tg.start_soon(self._worker, job, probe, name="heartbeat check-in worker")

    def _claim(self, job: Job) -> None:
        job.in_flight = True
        self._in_flight += 1

    def _take_due(self, now: float | None = None) -> Job | None:
        """The next due job, claimed, if a slot is free to run it now (the loop when it
        grants, a worker when it has just finished one)."""
        if (
            self._stopping
            or self.paused
            or self.outage.since is not None
            or self._in_flight >= self._limit
        ):
            return None
        job = self.deadlines.take(self._monotonic() if now is None else now)
        if job is not None:
            self._claim(job)
        return job

    async def _worker(self, job: Job, probe: bool) -> None:
        """Check ``job`` in, then keep taking due jobs (oldest first); with none due,
        wait (parked) for the loop to hand over the next one.

        Workers, one per slot ever busy, rather than a task per check-in: at thousands
        of check-ins a second, a task each costs more CPU (and garbage) than the
        request. This is the daemon's hot path, so it is one flat loop: every frame here
        is resumed each time a request wakes up. A probe's worker does one check-in.
        """
        monotonic = self._monotonic
        current: Job | None = job
        while True:
            if current is None:
                if probe or self._stopping:
                    return
                waiter: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
                self._parked.append(waiter)
                current = await waiter
                if current is None:
                    return
            started = monotonic()
            try:
                outcome = await self._check_in(current.id)
            except Exception as exc:  # the client returns outcomes; this is a bug guard
                self._log.exception("checkin_crashed", job_id=current.id)
                outcome = Retryable("internal", f"{type(exc).__name__}: {exc}")
            finally:
                current.in_flight = False
                self._in_flight -= 1
                if probe:
                    self._probe_in_flight = False
            now = monotonic()
            for observer in self.outcome_observers:
                observer(current.id, outcome, now - started)
            # Only a success outside an outage leaves the loop nothing new to decide
            # (its job's next due time, if earlier than the loop's, wakes it: Deadlines.push).
            quiet = type(outcome) is Success and self.outage.since is None
            self.complete(current, outcome, now, probe=probe)
            current = None if probe else self._take_due()
            if current is None and (not quiet or probe or self._slots_full or self._stopping):
                self._wake.set()

    def not_found(self, job_id: str, outcome: NotFound) -> None:
        """A genuine 404 for ``job_id`` learnt outside a check-in (a status read):
        the drop rule applies as to a check-in's. Ignored while it is checked in."""
        job = self.watchlist.get(job_id)
        if job is not None and not job.in_flight:
            self.completion.not_found(job, self._monotonic(), outcome.reason, outcome.status)
