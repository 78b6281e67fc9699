"""What a finished check-in does: its job's next due time, its backoff or its drop.

Owns turning one :mod:`heartbeat.outcomes` value into a new due time for its job (an
interval on, a backoff, a drop confirmation), a drop, and the cluster's health: it
feeds the outage rule (:mod:`heartbeat.outage`) and the drop rule
(:mod:`heartbeat.drops`) and applies their transitions, and it logs the lines that
go with them (``elasticsearch_unreachable``, ``elasticsearch_recovered``,
``elasticsearch_unauthorized``, aggregated failures). It does not own the heap, the
workers or the clock: the scheduler calls :meth:`Completion.complete` with the time,
and the new due times go onto its :class:`~heartbeat.deadlines.Deadlines`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heartbeat import backoff, logs
from heartbeat.aggregate import FailureLog
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.deadlines import Deadlines
from heartbeat.drops import DropRule
from heartbeat.outage import Enter, Failure, OutageRule
from heartbeat.outcomes import (
    NEEDED_PRIVILEGES,
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


class Completion:
    """Outcomes in; due times, drops and the outage's transitions applied."""

    def __init__(
        self,
        watchlist: WatchList,
        deadlines: Deadlines,
        *,
        schedule: ScheduleSettings,
        backoff_settings: BackoffSettings,
        rng: Callable[[], float],
        logger: Any,
    ) -> None:
        self.watchlist = watchlist
        self.deadlines = deadlines
        self._push = deadlines.push
        self._rng = rng
        self._log = logger
        self.failure_log = FailureLog(logger)
        self.outage = OutageRule(schedule, backoff_settings, rng)
        self.drops = DropRule()
        self.configure(schedule, backoff_settings)
        self._unauthorized_logged = False
        #: Monotonic time of the latest success, any job.
        self.last_success_at: float | None = None

    def configure(self, schedule: ScheduleSettings, backoff_settings: BackoffSettings) -> None:
        self.schedule = self.outage.schedule = schedule
        self.backoff = self.outage.backoff_settings = backoff_settings

    def complete(self, job: Job, outcome: Outcome, now: float, *, probe: bool = False) -> None:
        """Turn one outcome into the job's next due time, or its removal."""
        if isinstance(outcome, Success):  # the common case first: the daemon's hot path
            outage = self.outage
            if outage.failures or outage.since is not None or outage.contact_ok is not True:
                self._answered(now)
            self.last_success_at = now
            if not job.removed:
                self._succeeded(job, now, outcome.status)
            return
        # A drop, or a conflict on one document, is an answer from the cluster too.
        if isinstance(outcome, (NotFound, Rejected)) or (
            isinstance(outcome, Retryable) and outcome.job_specific
        ):
            self._answered(now)
        if job.removed:
            return
        match outcome:
            case NotFound(reason=reason, status=status):
                self.not_found(job, now, reason, status)
            case Rejected(reason=reason, status=status):
                self.watchlist.drop(job.id, "rejected", status=status, server_reason=reason)
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

    def not_found(self, job: Job, now: float, reason: str, status: int) -> None:
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
            self.watchlist.drop(job.id, "not_found", status=status, server_reason=reason)
            return
        job.failures += 1
        job.last_error = f"not_found: {reason}"
        since = job.pending_drop
        if since is None:  # verdict "pending"
            job.pending_drop = now
            # Aggregated like any failure: a first 404 for 10,000 jobs is one line.
            self.failure_log.record(
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

    def _failed(self, job: Job, outcome: Failure, now: float, *, probe: bool) -> None:
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
        watched = len(self.watchlist)
        transition = self.outage.failed(job.id, outcome, now, watched=watched, probe=probe)
        if isinstance(transition, Enter):
            self._log.error(
                "elasticsearch_unreachable",
                reason=outcome_key(outcome),
                cause=transition.cause,
                reached=transition.cause != "unreachable",
                error=outcome.reason,
                jobs=watched,
                consecutive_failures=transition.failures,
                failing_jobs=transition.failing_jobs,
            )
        if self.outage.since is not None:
            # The job waits on the heap; recovery reschedules everyone. (A failed
            # probe's transition only moves outage.probe_at, which the loop reads.)
            self._push(job, now)
            return
        if not isinstance(outcome, Unauthorized):
            self.failure_log.record(
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

    def _answered(self, now: float) -> None:
        """An answer from the cluster: it may end an outage."""
        self._unauthorized_logged = False
        recovered = self.outage.answered(now)
        if recovered is None:
            return
        self._log.warning(
            "elasticsearch_recovered",
            duration_s=round(recovered.duration, 3),
            probes=recovered.probes,
            jobs=len(self.watchlist),
        )
        self.deadlines.respread(self.watchlist.records(), now, self.schedule.interval)
