"""Is heartbeat alive, is it ready: scheduler ticks, readiness, event-loop lag.

Owns the answers behind ``/livez`` and ``/readyz`` and the event-loop lag monitor. It
reads the scheduler's state and never changes it; it does not speak HTTP
(:mod:`heartbeat.observability` does) or Prometheus (:mod:`heartbeat.metrics`).

* Liveness: the scheduler's own loop calls :meth:`Health.tick` every
  :data:`LIVENESS_PERIOD` seconds (``Scheduler.add_periodic``, the same hook the systemd
  watchdog uses). A scheduler that has not ticked for :data:`LIVENESS_TIMEOUT` is not
  live. A blocked event loop does not even answer, which a probe also counts as dead.
* Readiness, from a :mod:`heartbeat.status` snapshot: with ``[worker]``, the worker is
  up (else ``worker_down``); the last contact with Elasticsearch succeeded and no job is
  *at risk*, that is, none has gone without a successful check-in for more than half of
  ``schedule.idle_after`` (a job that never succeeded counts from when it was added).
  With no job watched there is nothing to be late for: ready.
* Lag: :meth:`LagMonitor.run` sleeps :data:`LAG_PERIOD` seconds at a time and records
  how late it wakes. Over :data:`LAG_THRESHOLD`, ``event_loop_lagging`` is logged once
  per episode; ``event_loop_recovered`` ends the episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from heartbeat.identity import ClusterIdentity
from heartbeat.scheduler import Scheduler
from heartbeat.status import elasticsearch_state, snapshot

if TYPE_CHECKING:
    from heartbeat.worker import WorkerMonitor

__all__ = [
    "LAG_PERIOD",
    "LAG_THRESHOLD",
    "LIVENESS_PERIOD",
    "LIVENESS_TIMEOUT",
    "Health",
    "LagMonitor",
    "Liveness",
    "Readiness",
    "Risk",
    "assess",
    "elasticsearch_state",
]

#: Seconds between two liveness ticks from the scheduler loop.
LIVENESS_PERIOD = 1.0
#: A scheduler that has not ticked for this long is not live: three missed ticks and
#: a margin for a busy machine.
LIVENESS_TIMEOUT = 3 * LIVENESS_PERIOD + 2.0
#: Seconds the lag monitor sleeps between two measurements.
LAG_PERIOD = 0.5
#: Lag (seconds) above which the event loop counts as lagging.
LAG_THRESHOLD = 1.0


@dataclass(frozen=True, slots=True)
class Risk:
    """How late the watch list is running, at one moment."""

    jobs: int
    at_risk: int  # jobs without a success for more than idle_after / 2
    oldest_age: float  # seconds since the success of the job waiting longest; 0: no jobs


def assess(success_times: Sequence[float], *, now: float, idle_after: float) -> Risk:
    """Pure: :class:`Risk` from every job's last success (or added) time."""
    if not success_times:
        return Risk(jobs=0, at_risk=0, oldest_age=0.0)
    cutoff = now - idle_after / 2
    at_risk = sum(1 for moment in success_times if moment < cutoff)
    return Risk(
        jobs=len(success_times),
        at_risk=at_risk,
        oldest_age=max(0.0, now - min(success_times)),
    )


#: The /readyz reason for each state that is not ``ok``.
READINESS_REASONS = {
    "unreachable": "elasticsearch_unreachable",
    "failing": "elasticsearch_failing",
    "unknown": "elasticsearch_not_contacted",
    "unauthorized": "elasticsearch_unauthorized",
    "misrouted": "elasticsearch_misrouted",
    "cluster_mismatch": "elasticsearch_cluster_mismatch",
}


@dataclass(frozen=True, slots=True)
class Liveness:
    live: bool
    last_tick_age_seconds: float

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"live": self.live}
        if not self.live:
            body["reason"] = "scheduler_stalled"
        body["last_tick_age_seconds"] = round(self.last_tick_age_seconds, 3)
        return body


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    #: Why not ready: ``worker_down``, ``elasticsearch_cluster_mismatch``,
    #: ``elasticsearch_unreachable``, ``elasticsearch_failing``,
    #: ``elasticsearch_unauthorized``, ``elasticsearch_misrouted``,
    #: ``elasticsearch_not_contacted`` or ``jobs_at_risk``; None when ready.
    reason: str | None
    elasticsearch: str
    jobs: int
    jobs_at_risk: int
    oldest_checkin_age_seconds: float

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["oldest_checkin_age_seconds"] = round(self.oldest_checkin_age_seconds, 3)
        return body


class LagMonitor:
    """Measures how late the event loop wakes a sleeping task."""

    def __init__(self, *, threshold: float = LAG_THRESHOLD, logger: Any = None) -> None:
        self.threshold = threshold
        #: The latest measurement, in seconds.
        self.lag = 0.0
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        self._episode_start: float | None = None
        self._episode_worst = 0.0

    def observe(self, lag: float, now: float) -> None:
        """Record one measurement taken at ``now``; log at the start and the end of a
        lagging episode only. The episode ends once the lag is back under half the
        threshold, so a loop hovering at the threshold does not log every sample."""
        self.lag = lag
        if self._episode_start is None:
            if lag > self.threshold:
                self._episode_start = now - lag
                self._episode_worst = lag
                self._log.warning("event_loop_lagging", lag_s=round(lag, 3))
            return
        self._episode_worst = max(self._episode_worst, lag)
        if lag < self.threshold / 2:
            self._log.info(
                "event_loop_recovered",
                duration_s=round(now - self._episode_start, 3),
                max_lag_s=round(self._episode_worst, 3),
            )
            self._episode_start = None

    async def run(
        self, period: float = LAG_PERIOD, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Measure every ``period`` seconds until cancelled. Real time on purpose: this
        watches the event loop itself, not the scheduler's (injectable) clock."""
        while True:
            start = clock()
            await anyio.sleep(period)
            now = clock()
            self.observe(max(0.0, now - start - period), now)


class Health:
    """Liveness and readiness of one Heartbeat's scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        period: float = LIVENESS_PERIOD,
        timeout: float = LIVENESS_TIMEOUT,
        worker: WorkerMonitor | None = None,
    ) -> None:
        self.scheduler = scheduler
        #: ``[worker]``'s monitor: not ready (``worker_down``) while the worker is not up.
        self.worker = worker
        self.timeout = timeout
        self.last_tick = scheduler.clock.monotonic()
        self.lag_monitor = LagMonitor()
        #: Hosts found to belong to another cluster make heartbeat unready.
        self.identity: ClusterIdentity | None = None
        scheduler.add_periodic(period, self.tick)

    def tick(self, now: float) -> None:
        """Called from the scheduler loop (must never raise: it would stop the loop)."""
        self.last_tick = now

    def risk(self) -> Risk:
        scheduler = self.scheduler
        return assess(
            scheduler.watchlist.success_times(),
            now=scheduler.clock.monotonic(),
            idle_after=scheduler.schedule.idle_after,
        )

    def liveness(self) -> Liveness:
        age = max(0.0, self.scheduler.clock.monotonic() - self.last_tick)
        return Liveness(live=age <= self.timeout, last_tick_age_seconds=age)

    def readiness(self) -> Readiness:
        risk = self.risk()
        status = snapshot(self.scheduler, worker=self.worker, identity=self.identity)
        state = status.elasticsearch
        reason: str | None = None
        if status.worker_up is False:
            reason = "worker_down"
        elif status.cluster_mismatch:
            # A host of another cluster is a configuration to fix, jobs or not.
            reason = READINESS_REASONS["cluster_mismatch"]
        elif risk.jobs:
            if state != "ok":
                reason = READINESS_REASONS[state]
            elif risk.at_risk:
                reason = "jobs_at_risk"
        return Readiness(
            ready=reason is None,
            reason=reason,
            elasticsearch=state,
            jobs=risk.jobs,
            jobs_at_risk=risk.at_risk,
            oldest_checkin_age_seconds=risk.oldest_age,
        )
