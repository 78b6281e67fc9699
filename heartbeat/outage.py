"""The outage rule: when failures mean "Elasticsearch as a whole is down", and probing.

A small state machine, outcomes in and transitions out (no clock, no loop, no logging,
no I/O): the scheduler feeds it every failed check-in (:meth:`OutageRule.failed`) and
every answer from the cluster (:meth:`OutageRule.answered`), and applies what comes
back:

* :class:`Enter`: the outage begins. Per-job retries stop; one probe at a time goes
  out, the first at :attr:`OutageRule.probe_at`.
* :class:`Probe`: the probe failed; the next one goes out at ``probe_at``, with backoff.
* :class:`Recover`: the cluster answered during an outage. Every job is due again,
  oldest success first, spread over part of an interval (:func:`recovery_times`) so
  that recovery is not a stampede.

The rules:

* An outage needs enough consecutive failures (no answer from the cluster between
  them) *and* failures from several distinct jobs. One sick job (a 503 for that id
  alone, while every other job succeeds) therefore never declares an outage: it backs
  off on its own, and the other jobs' successes keep resetting the count. A failure
  that is about one document (a 409) is not a cluster failure at all.
* The rule remembers what kind of failure it saw last (:data:`CAUSES`), so readiness
  and the outage line can tell "cannot reach" from "reached, but refused" or
  "reached something that is not our endpoint".
* Probes back off as a job's retries do, but never beyond a tenth of ``idle_after``
  nor 40 % of the interval (a server's Retry-After is honoured up to the former): the
  next probe after the cluster comes back, plus the recovery spread, then fit in one
  interval, so every job is checked in within one interval of its return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from heartbeat import backoff
from heartbeat.outcomes import Misrouted, Outcome, Retryable, Unauthorized

if TYPE_CHECKING:
    from heartbeat.config import BackoffSettings, ScheduleSettings

#: Consecutive cluster-wide failures that declare an outage: at least this many...
MIN_FAILURES = 3
#: ...from at least this many distinct jobs (or every watched job, when fewer).
MIN_DISTINCT_JOBS = 3
#: Recovery after an outage is spread over this fraction of the interval: the peak
#: rate is then at most 1/0.6 = 1.67 times the steady rate.
RECOVERY_SPREAD = 0.6
#: The probe interval never grows beyond this fraction of idle_after, nor
#: beyond PROBE_CAP_OF_INTERVAL of the interval: the next probe after an outage ends
#: plus the recovery spread then fit in one interval, so every job is checked in
#: within one interval of Elasticsearch coming back.
PROBE_CAP_FRACTION = 0.1
PROBE_CAP_OF_INTERVAL = 1.0 - RECOVERY_SPREAD

#: What a failure says about the cluster: ``unreachable`` (no usable answer:
#: connection, timeout, TLS, 5xx, malformed), ``unauthorized`` (401/403: reached, but
#: refused), ``misrouted`` (reached something that is not Elasticsearch's endpoint),
#: ``cluster_mismatch`` (reached, but another cluster: heartbeat.identity).
CAUSES = ("unreachable", "unauthorized", "misrouted", "cluster_mismatch")

Failure = Unauthorized | Misrouted | Retryable


def cause_of(outcome: Outcome) -> str:
    """The :data:`CAUSES` value of a cluster-wide failure."""
    if isinstance(outcome, Unauthorized):
        return "unauthorized"
    if isinstance(outcome, Misrouted):
        return "misrouted"
    if isinstance(outcome, Retryable) and outcome.error == "cluster_mismatch":
        return "cluster_mismatch"
    return "unreachable"


def probe_delay(
    attempt: int,
    outcome: Outcome,
    u: float,
    *,
    schedule: ScheduleSettings,
    backoff_settings: BackoffSettings,
) -> float:
    """Seconds until probe number ``attempt + 1``, after ``outcome`` (pure)."""
    longest = schedule.idle_after * PROBE_CAP_FRACTION
    cap = min(longest, schedule.interval * PROBE_CAP_OF_INTERVAL)
    retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
    if retry_after is not None:
        # The server asked for a pause: honour it, up to idle_after / 10.
        cap = max(cap, min(retry_after, longest))
    return backoff.retry_delay(
        attempt,
        u=u,
        initial=backoff_settings.initial,
        multiplier=backoff_settings.multiplier,
        maximum=backoff_settings.max,
        retry_after=retry_after,
        cap=cap,
    )


def recovery_times(now: float, count: int, interval: float) -> list[float]:
    """When each of ``count`` waiting jobs is due once an outage ends, first to last:
    evenly over :data:`RECOVERY_SPREAD` of the interval, the first at once (pure)."""
    spread = interval * RECOVERY_SPREAD
    return [now + spread * index / count if count > 1 else now for index in range(count)]


@dataclass(frozen=True, slots=True)
class Enter:
    """The outage begins (``elasticsearch_unreachable``)."""

    cause: str
    #: Consecutive cluster-wide failures, and the distinct jobs among them.
    failures: int
    failing_jobs: int
    #: When the first probe goes out.
    probe_at: float


@dataclass(frozen=True, slots=True)
class Probe:
    """The probe failed: the next one goes out at ``probe_at``."""

    probe_at: float


@dataclass(frozen=True, slots=True)
class Recover:
    """The cluster answered; the outage is over (``elasticsearch_recovered``)."""

    duration: float
    #: Probes sent during the outage.
    probes: int


Transition = Enter | Probe | Recover


@dataclass(slots=True)
class OutageRule:
    """Consecutive failures, distinct failing jobs, the outage they declare, its probes.

    ``schedule`` and ``backoff_settings`` are the caller's current settings (set them
    again on a reload); ``rng`` gives the jitter of the probes' backoff."""

    schedule: ScheduleSettings
    backoff_settings: BackoffSettings
    rng: Callable[[], float]
    #: Failures since the cluster last answered.
    failures: int = 0
    #: Distinct jobs among those failures (kept only up to the number needed).
    jobs: set[str] = field(default_factory=set)
    #: When the outage began (the caller's clock), or None.
    since: float | None = None
    #: The cause of the latest failure since the cluster last answered, or None.
    cause: str | None = None
    #: True once the cluster answered, False once enough distinct jobs failed since
    #: (one sick job is not the cluster failing), None before either: readiness.
    contact_ok: bool | None = None
    #: During an outage: when the next probe may go out, how many have failed
    #: (the backoff's attempt), how many were sent.
    probe_at: float = 0.0
    attempt: int = 0
    probes: int = 0

    def needed(self, *, watched: int) -> tuple[int, int]:
        """``(failures, distinct jobs)`` that declare an outage."""
        failures = max(MIN_FAILURES, min(self.schedule.max_in_flight, watched))
        return failures, max(1, min(MIN_DISTINCT_JOBS, watched))

    def failed(
        self, job_id: str, outcome: Failure, now: float, *, watched: int, probe: bool = False
    ) -> Enter | Probe | None:
        """A failed check-in of ``job_id`` (``probe``: the outage's probe), with
        ``watched`` jobs on the list."""
        if not (isinstance(outcome, Retryable) and outcome.job_specific):
            entered = self._cluster_failure(job_id, outcome, now, watched)
            if entered is not None:
                return entered
        if self.since is None or not probe:
            return None
        self.attempt += 1
        self.probe_at = now + self._probe_delay(outcome)
        return Probe(self.probe_at)

    def _cluster_failure(
        self, job_id: str, outcome: Failure, now: float, watched: int
    ) -> Enter | None:
        self.failures += 1
        self.cause = cause_of(outcome)
        failures, distinct = self.needed(watched=watched)
        if len(self.jobs) < distinct:
            self.jobs.add(job_id)
        if len(self.jobs) < distinct:
            return None
        self.contact_ok = False
        if self.since is not None or self.failures < failures:
            return None
        self.since = now
        self.attempt = 1
        self.probes = 0
        self.probe_at = now + self._probe_delay(outcome)
        return Enter(self.cause, self.failures, len(self.jobs), self.probe_at)

    def _probe_delay(self, outcome: Outcome) -> float:
        return probe_delay(
            self.attempt,
            outcome,
            self.rng(),
            schedule=self.schedule,
            backoff_settings=self.backoff_settings,
        )

    def probe_sent(self) -> None:
        self.probes += 1

    def answered(self, now: float) -> Recover | None:
        """The cluster answered (any answer from Elasticsearch: a success, a genuine
        404, a 400, a conflict on one document)."""
        self.contact_ok = True
        self.failures = 0
        self.jobs.clear()
        self.cause = None
        if self.since is None:
            return None
        duration, self.since = now - self.since, None
        return Recover(duration, self.probes)
