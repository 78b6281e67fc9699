"""Who is due when: one deadline heap over the watch list, the in-flight limit, outage mode.

Owns every watched job's timing state and turns check-in outcomes into "next time"
or "drop". The jobs and their claims are the watch list's (:mod:`heartbeat.watchlist`,
which it holds, and whose most used methods it offers too). It does not speak HTTP (it
calls an injected ``check_in`` coroutine that returns an :mod:`heartbeat.outcomes`
value) and never reads the clock directly (an injected :class:`~heartbeat.clock.Clock`),
so tests drive it with a manual clock.

Design:

* One heap of ``(due, id, job)`` entries, with lazy invalidation: a job moved to
  another time gets a new entry and the old one is skipped when popped (its ``due``
  is no longer the job's). Equal due times fall back on the id, unique in the watch
  list, so no per-entry sequence number is needed (it was 40 bytes a job). No task
  per job: 100,000 jobs cost a few hundred bytes each and no CPU between due times.
* The loop grants due jobs oldest-first while fewer than ``max_in_flight`` requests
  are out: that is the fair (FIFO) limit; nothing starves. At most one request per
  job is in flight (a job is off the heap while its request runs).
* Outage mode (:mod:`heartbeat.outage` decides when): after enough consecutive
  cluster-wide failures from several distinct jobs (no success between them; one sick
  job only backs off on its own) per-job retries stop, and one probe at a time goes
  out with backoff. When a probe gets an answer from Elasticsearch, every job is
  rescheduled, oldest last success first, spread over part of an interval so recovery
  is not a stampede.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from heartbeat import backoff, chunked, logs
from heartbeat.aggregate import FailureLog
from heartbeat.changes import ChangeObserver
from heartbeat.client import NEEDED_PRIVILEGES
from heartbeat.clock import Clock, SystemClock
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.drops import DropRule
from heartbeat.outage import OutageRule, cause_of
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Outcome,
    Rejected,
    Retryable,
    Success,
    Unauthorized,
    outcome_key,
)
from heartbeat.watchlist import Job, WatchList

CheckIn = Callable[[str], Awaitable[Outcome]]
#: Called after every check-in with ``(job_id, outcome, seconds it took)``.
OutcomeObserver = Callable[[str, Outcome, float], None]

#: Recovery after an outage is spread over this fraction of the interval: the peak
#: rate is then at most 1/0.6 = 1.67 times the steady rate.
RECOVERY_SPREAD = 0.6
#: The probe interval never grows beyond this fraction of idle_after, nor
#: beyond PROBE_CAP_OF_INTERVAL of the interval: the next probe after an outage ends
#: plus the recovery spread then fit in one interval, so every job is checked in
#: within one interval of Elasticsearch coming back.
PROBE_CAP_FRACTION = 0.1
PROBE_CAP_OF_INTERVAL = 1.0 - RECOVERY_SPREAD
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
        self.backoff = backoff_settings
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._monotonic = self.clock.monotonic
        self._limit = schedule.max_in_flight
        self._rng = rng if rng is not None else random.random
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        self._failures = FailureLog(self._log)
        watchlist = self.watchlist = WatchList(
            self.clock, place=self._place, forget=self._forget, logger=self._log
        )
        # The watch list's most used methods, here too: the scheduler is what the
        # daemon hands around (hb.scheduler.watch_many(...)).
        self.watch = watchlist.watch
        self.watch_many = watchlist.watch_many
        self.watch_many_async = watchlist.watch_many_async
        self.unwatch = watchlist.unwatch
        self.drop = watchlist.drop
        self.job = watchlist.job
        self.jobs = watchlist.jobs
        self.job_ids = watchlist.job_ids
        self.claims = watchlist.claims
        self._heap: list[tuple[float, str, Job]] = []
        self._in_flight = 0
        #: Set to make the loop look again (cleared by the loop each time it looks).
        self._wake = asyncio.Event()
        #: When the loop will wake by itself (-inf while it is awake).
        self._deadline = -math.inf
        #: True while the loop sleeps with every slot busy: it then ignores the heap,
        #: so a worker that frees a slot and finds nothing due must wake it.
        self._slots_full = False
        #: Workers with nothing to do, each waiting for its next job (None: exit).
        self._parked: list[asyncio.Future[Job | None]] = []
        self._stopping = False
        #: While paused (the worker is down) nothing is granted; jobs stay watched.
        self.paused = False
        self._ramp_next = -math.inf
        self._periodic: list[list[Any]] = []  # [period, next_at, callback]
        self.outcome_observers: list[OutcomeObserver] = []
        # Cluster health.
        self.outage = OutageRule()
        self.drops = DropRule()
        self._probe_due = 0.0
        self._probe_attempt = 0
        self._probe_in_flight = False
        self._probes = 0
        self._unauthorized_logged = False
        self.last_contact_ok: bool | None = None
        self.last_success_at: float | None = None  # monotonic, any job

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
        """New jobs' first due times: the start-up ramp, ``ramp_rate`` a second."""
        spacing = 1.0 / self.schedule.ramp_rate
        push = self._push
        for job in jobs:
            due = max(now, self._ramp_next)
            self._ramp_next = due + spacing
            job.anchor = due
            push(job, due)
        self._wake.set()

    def _forget(self, job: Job) -> None:
        """A job left the watch list: its pending drop, if any, no longer counts."""
        if job.pending_drop is not None:
            job.pending_drop = None
            self.drops.cleared(watched=len(self.watchlist))

    def ramp_oldest_first(self) -> None:
        """Re-order the start-up ramp: the jobs whose last success is oldest (or that
        never succeeded) are checked in first. Only jobs not yet checked in move."""
        for _ in self._ramp_steps():
            pass

    async def ramp_oldest_first_async(self) -> None:
        """:meth:`ramp_oldest_first`, yielding to the event loop between chunks."""
        await chunked.drain_async(self._ramp_steps(), freeze=True)

    def _ramp_steps(self, chunk: int = chunked.STEP) -> chunked.Steps[None]:
        # Sorted a chunk at a time, then merged (both stable: the order one sort of
        # the whole list gives), so that a million jobs never hold the loop for long.
        every = list(self.watchlist.records())
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
        spacing = 1.0 / self.schedule.ramp_rate
        for index, job in enumerate(heapq.merge(*runs, key=_success_key)):
            if index and not index % chunk:
                yield
            due = start + index * spacing
            job.anchor = due
            self._push(job, due)
        self._ramp_next = start + len(waiting) * spacing

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
        self.backoff = backoff_settings
        if check_in is not None:
            self._check_in = check_in
        if shorter:
            now = self.clock.monotonic()
            for job in self.watchlist.records():
                if not job.in_flight and job.due > now + schedule.interval:
                    job.anchor = now + schedule.interval
                    self._push(job, job.anchor)
        self._wake.set()

    def add_periodic(self, period: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` every ``period`` seconds from the scheduler's own loop
        (so a stuck loop stops it: that is what the systemd watchdog relies on)."""
        self._periodic.append([period, self.clock.monotonic() + period, callback])
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    def _push(self, job: Job, due: float) -> None:
        job.due = due
        heapq.heappush(self._heap, (due, job.id, job))
        if due < self._deadline and not self._slots_full:
            # Due before the loop means to wake up: wake it now. Not while every slot
            # is busy: the loop then ignores the heap, and the worker that frees a slot
            # takes what is due or wakes the loop.
            self._wake.set()

    def _peek(self) -> Job | None:
        """The job due first, after dropping stale entries (lazy invalidation: a job
        moved, removed or in flight since the entry was pushed)."""
        heap = self._heap
        while heap:
            due, _, job = heap[0]
            # The entry of the job's current due time: the same float object, so an
            # entry left from an earlier time is never taken for the current one.
            if due is job.due and not (job.removed or job.in_flight or job.held):
                return job
            heapq.heappop(heap)
        return None

    def next_due(self) -> float | None:
        job = self._peek()
        return None if job is None else job.due

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
                self._push(job, job.due)
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
                self._deadline = math.inf if wakeup is None else wakeup
                self._slots_full = self._in_flight >= self._limit
                if self._wake.is_set():
                    await anyio.lowlevel.checkpoint()  # let others run; look again
                elif wakeup is None:
                    await self._wake.wait()
                else:
                    # A timer, not a cancel scope: this runs once per check-in or so.
                    timer = self.clock.call_at(wakeup + self._slack, self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
                self._deadline = -math.inf
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
            if not self._probe_in_flight and self._peek() is not None:
                candidates.append(self._probe_due)
        elif self._in_flight < self.schedule.max_in_flight:
            due = self.next_due()
            if due is not None:
                candidates.append(due)
        return min(candidates) if candidates else None

    def _grant(self, now: float, tg: TaskGroup) -> None:
        if self.paused:
            return
        if self.in_outage:
            if not self._probe_in_flight and now >= self._probe_due:
                job = self._peek()
                if job is not None:
                    heapq.heappop(self._heap)
                    self._probe_in_flight = True
                    self._probes += 1
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
        job = self._peek()
        if job is None or job.due > (self._monotonic() if now is None else now):
            return None
        heapq.heappop(self._heap)
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
            # (its job's next due time, if earlier than the loop's, wakes it in _push).
            quiet = type(outcome) is Success and self.outage.since is None
            self.complete(current, outcome, now, probe=probe)
            current = None if probe else self._take_due()
            if current is None and (not quiet or probe or self._slots_full or self._stopping):
                self._wake.set()

    # ------------------------------------------------------------------ outcomes

    def complete(self, job: Job, outcome: Outcome, now: float, *, probe: bool = False) -> None:
        """Turn one outcome into the job's next due time, or its removal."""
        if isinstance(outcome, Success):  # the common case first: the daemon's hot path
            self._cluster_ok(now)
            self.last_success_at = now
            if not job.removed:
                self._succeeded(job, now, outcome.status)
            return
        # A drop, or a conflict on one document, is an answer from the cluster too.
        if isinstance(outcome, (NotFound, Rejected)) or (
            isinstance(outcome, Retryable) and outcome.job_specific
        ):
            self._cluster_ok(now)
        if job.removed:
            return
        match outcome:
            case NotFound(reason=reason, status=status):
                self._not_found(job, now, reason, status)
            case Rejected(reason=reason, status=status):
                self.drop(job.id, "rejected", status=status, server_reason=reason)
            case Unauthorized() | Misrouted() | Retryable():
                self._failed(job, outcome, now, probe=probe)

    def _succeeded(self, job: Job, now: float, status: int) -> None:
        """A success: due again one interval after its previous due time."""
        job.last_success = now
        job.failures = 0
        job.last_error = None
        drops = self.drops
        if drops.pending:
            drops.answered(job.id)
            if job.pending_drop is not None:  # the 404 lasted a moment: it costs nothing
                job.pending_drop = None
                drops.cleared(watched=len(self.watchlist))
        schedule = self.schedule
        job.anchor, due = backoff.next_due(
            job.anchor, now=now, interval=schedule.interval, jitter=schedule.jitter, u=self._rng()
        )
        if logs.debug_enabled():
            self._log.debug("checkin_succeeded", job_id=job.id, status=status)
        self._push(job, due)

    def _not_found(self, job: Job, now: float, reason: str, status: int) -> None:
        """A genuine 404: pending, deferred by a storm, or dropped (heartbeat.drops)."""
        schedule = self.schedule
        verdict = self.drops.not_found(
            job.id,
            job.pending_drop,
            now,
            watched=len(self.watchlist),
            idle_after=schedule.idle_after,
        )
        if verdict == "drop":
            self.drop(job.id, "not_found", status=status, server_reason=reason)
            return
        job.failures += 1
        job.last_error = f"not_found: {reason}"
        since = job.pending_drop
        if since is None:  # verdict "pending"
            job.pending_drop = now
            # Aggregated like any failure: a first 404 for 10,000 jobs is one line.
            self._failures.record(
                now, reason="not_found", job_id=job.id, error=reason, status=status
            )
            self._push(job, now + schedule.drop_confirm_after)
            return
        if self.drops.log_storm():
            self._log.warning(
                "drop_storm_deferred",
                count=self.drops.pending,
                watched=len(self.watchlist),
                idle_after=schedule.idle_after,
            )
        # A storm: checked in every interval as usual, until its 404s last idle_after.
        job.anchor, due = backoff.next_due(
            job.anchor, now=now, interval=schedule.interval, jitter=schedule.jitter, u=self._rng()
        )
        self._push(job, min(due, since + schedule.idle_after))

    def not_found(self, job_id: str, outcome: NotFound) -> None:
        """A genuine 404 for ``job_id`` learnt outside a check-in (a status read):
        the drop rule applies as to a check-in's. Ignored while it is checked in."""
        job = self.watchlist.get(job_id)
        if job is not None and not job.in_flight:
            self._not_found(job, self._monotonic(), outcome.reason, outcome.status)

    def _failed(
        self, job: Job, outcome: Unauthorized | Misrouted | Retryable, now: float, *, probe: bool
    ) -> None:
        job.failures += 1
        job.last_error = f"{outcome_key(outcome)}: {outcome.reason}"
        if isinstance(outcome, Unauthorized) and not self._unauthorized_logged:
            self._unauthorized_logged = True
            self._log.error(
                "elasticsearch_unauthorized",
                status=outcome.status,
                server_reason=outcome.reason,
                needed=NEEDED_PRIVILEGES,
            )
        cluster_wide = not (isinstance(outcome, Retryable) and outcome.job_specific)
        if cluster_wide:
            self._cluster_failure(job, now, outcome)
        if self.in_outage:
            if probe:
                self._probe_attempt += 1
                self._probe_due = now + self._probe_delay(outcome)
            # The job waits on the heap; recovery reschedules everyone.
            self._push(job, now)
            return
        if not isinstance(outcome, Unauthorized):
            self._failures.record(
                now,
                reason=outcome_key(outcome),
                job_id=job.id,
                error=outcome.reason,
                status=outcome.status,
            )
        last = job.last_success if job.last_success is not None else job.added
        delay = backoff.retry_delay(
            job.failures,
            u=self._rng(),
            initial=self.backoff.initial,
            multiplier=self.backoff.multiplier,
            maximum=self.backoff.max,
            retry_after=outcome.retry_after if isinstance(outcome, Retryable) else None,
            cap=backoff.idle_cap(now=now, last_success=last, idle_after=self.schedule.idle_after),
        )
        self._push(job, now + delay)

    def _probe_delay(self, outcome: Outcome) -> float:
        longest = self.schedule.idle_after * PROBE_CAP_FRACTION
        cap = min(longest, self.schedule.interval * PROBE_CAP_OF_INTERVAL)
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        if retry_after is not None:
            # The server asked for a pause: honour it, up to idle_after / 10.
            cap = max(cap, min(retry_after, longest))
        return backoff.retry_delay(
            self._probe_attempt,
            u=self._rng(),
            initial=self.backoff.initial,
            multiplier=self.backoff.multiplier,
            maximum=self.backoff.max,
            retry_after=retry_after,
            cap=cap,
        )

    def _cluster_failure(
        self, job: Job, now: float, outcome: Unauthorized | Misrouted | Retryable
    ) -> None:
        rule = self.outage
        watched = len(self.watchlist)
        max_in_flight = self.schedule.max_in_flight
        started = rule.failure(
            job.id, cause_of(outcome), now, watched=watched, max_in_flight=max_in_flight
        )
        # One sick job is not the cluster failing: readiness follows the outage rule's
        # distinct-jobs condition, not any single failure.
        _, distinct = rule.needed(watched=watched, max_in_flight=max_in_flight)
        if len(rule.jobs) >= distinct:
            self.last_contact_ok = False
        if not started:
            return
        self._probe_attempt = 1
        self._probes = 0
        self._probe_due = now + self._probe_delay(outcome)
        self._log.error(
            "elasticsearch_unreachable",
            reason=outcome_key(outcome),
            cause=rule.cause,
            reached=rule.cause != "unreachable",
            error=outcome.reason,
            jobs=watched,
            consecutive_failures=rule.failures,
            failing_jobs=len(rule.jobs),
        )

    def _cluster_ok(self, now: float) -> None:
        self.last_contact_ok = True
        self._unauthorized_logged = False
        if self.outage.since is None:
            if self.outage.failures:
                self.outage.answered(now)
            return
        duration = self.outage.answered(now)
        assert duration is not None
        self._log.warning(
            "elasticsearch_recovered",
            duration_s=round(duration, 3),
            probes=self._probes,
            jobs=len(self.watchlist),
        )
        self._respread(now)

    def _respread(self, now: float) -> None:
        """After an outage: everyone due again, oldest success first, spread out."""
        waiting = [job for job in self.watchlist.records() if not job.in_flight]
        waiting.sort(key=lambda j: j.last_success if j.last_success is not None else -math.inf)
        spread = self.schedule.interval * RECOVERY_SPREAD
        count = len(waiting)
        self._heap = []
        for index, job in enumerate(waiting):
            due = now + spread * index / count if count > 1 else now
            job.anchor = due
            self._push(job, due)
        self._wake.set()


def _success_key(job: Job) -> float:
    return -math.inf if job.last_success is None else job.last_success
