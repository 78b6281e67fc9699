"""The outage rule: when failures mean "Elasticsearch as a whole is down".

A small pure object, events in and transitions out (no clock, no loop, no logging):
the scheduler feeds it every cluster-wide failure and every answer from the cluster,
and acts on what it returns.

* An outage needs enough consecutive failures (no answer from the cluster between
  them) *and* failures from several distinct jobs. One sick job (a 503 for that id
  alone, while every other job succeeds) therefore never declares an outage: it backs
  off on its own, and the other jobs' successes keep resetting the count.
* The rule remembers what kind of failure it saw last (:data:`CAUSES`), so readiness
  and the outage line can tell "cannot reach" from "reached, but refused" or
  "reached something that is not our endpoint".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from heartbeat.outcomes import Misrouted, Outcome, Retryable, Unauthorized

#: Consecutive cluster-wide failures that declare an outage: at least this many...
MIN_FAILURES = 3
#: ...from at least this many distinct jobs (or every watched job, when fewer).
MIN_DISTINCT_JOBS = 3

#: What a failure says about the cluster: ``unreachable`` (no usable answer:
#: connection, timeout, TLS, 5xx, malformed), ``unauthorized`` (401/403: reached, but
#: refused), ``misrouted`` (reached something that is not Elasticsearch's endpoint),
#: ``cluster_mismatch`` (reached, but another cluster: heartbeat.identity).
CAUSES = ("unreachable", "unauthorized", "misrouted", "cluster_mismatch")


def cause_of(outcome: Outcome) -> str:
    """The :data:`CAUSES` value of a cluster-wide failure."""
    if isinstance(outcome, Unauthorized):
        return "unauthorized"
    if isinstance(outcome, Misrouted):
        return "misrouted"
    if isinstance(outcome, Retryable) and outcome.error == "cluster_mismatch":
        return "cluster_mismatch"
    return "unreachable"


@dataclass(slots=True)
class OutageRule:
    """Consecutive failures, distinct failing jobs, and the outage they declare."""

    #: Failures since the cluster last answered.
    failures: int = 0
    #: Distinct jobs among those failures (kept only up to the number needed).
    jobs: set[str] = field(default_factory=set)
    #: When the outage began (the caller's clock), or None.
    since: float | None = None
    #: The cause of the latest failure since the cluster last answered, or None.
    cause: str | None = None

    def needed(self, *, watched: int, max_in_flight: int) -> tuple[int, int]:
        """``(failures, distinct jobs)`` that declare an outage."""
        failures = max(MIN_FAILURES, min(max_in_flight, watched))
        return failures, max(1, min(MIN_DISTINCT_JOBS, watched))

    def failure(
        self, job_id: str, cause: str, now: float, *, watched: int, max_in_flight: int
    ) -> bool:
        """One cluster-wide failure of ``job_id``; True when it declares the outage."""
        self.failures += 1
        self.cause = cause
        failures, distinct = self.needed(watched=watched, max_in_flight=max_in_flight)
        if len(self.jobs) < distinct:
            self.jobs.add(job_id)
        if self.since is not None or self.failures < failures or len(self.jobs) < distinct:
            return False
        self.since = now
        return True

    def answered(self, now: float) -> float | None:
        """The cluster answered; the outage's duration when this ends one, else None."""
        self.failures = 0
        self.jobs.clear()
        self.cause = None
        if self.since is None:
            return None
        duration, self.since = now - self.since, None
        return duration
