"""Prometheus metrics: one registry per Heartbeat, fed by scheduler observers.

Owns the metric names (a public contract: add, never rename), the registry and the
exposition bytes. It does not serve HTTP (:mod:`heartbeat.observability` does) and
never changes what the scheduler does.

Cost: a check-in costs three plain number updates (its outcome's count, its duration's
bucket and the sum, through ``Scheduler.outcome_observers``), turned into a Prometheus
counter and histogram only when scraped: the check-in path is the daemon's hot path,
and ``prometheus_client``'s own Counter and Histogram take a lock and walk every bucket
on each update. A drop costs one counter update (``change_observers``). Gauges that need
the whole watch list (at-risk, oldest check-in) are computed when scraped, one pass
over the jobs, so 100,000 jobs cost a few milliseconds per scrape and nothing between
scrapes. No job id is ever a label.

Metrics::

    heartbeat_checkins_total{outcome}           counter: success, not_found, rejected,
                                                unauthorized, misrouted, retryable
    heartbeat_checkin_duration_seconds          histogram: one check-in, all outcomes
    heartbeat_jobs_dropped_total{reason}        counter: not_found, rejected, finished
    heartbeat_watched_jobs                      gauge
    heartbeat_jobs_at_risk                      gauge: no success for > idle_after / 2
    heartbeat_oldest_checkin_age_seconds        gauge: since the last success of the job
                                                waiting longest (or since it was added)
    heartbeat_checkins_in_flight                gauge
    heartbeat_jobs_pending_drop                 gauge: a first genuine 404 awaits its
                                                confirmation
    heartbeat_elasticsearch_up                  gauge: 1 last contact ok, 0 failed
                                                (absent before the first contact)
    heartbeat_event_loop_lag_seconds            gauge: the latest lag measurement
    heartbeat_worker_up                         gauge: 1 worker alive, 0 down or not yet
                                                seen (absent without [worker])
    heartbeat_claims_expired_total{source}      counter: claims whose TTL passed unrenewed
    heartbeat_build_info{version,python}        gauge, always 1

plus the client library's ``process_*`` and ``python_info``.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from heartbeat._version import __version__
from heartbeat.changes import Change, JobDropped
from heartbeat.health import Health
from heartbeat.leases import LeaseKeeper
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Outcome,
    Rejected,
    Retryable,
    Success,
    Unauthorized,
)
from heartbeat.scheduler import Scheduler

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

__all__ = ["DROP_REASONS", "OUTCOMES", "Metrics"]

#: ``heartbeat_checkins_total`` label per outcome type: a fixed set.
OUTCOMES: dict[type[Any], str] = {
    Success: "success",
    NotFound: "not_found",
    Rejected: "rejected",
    Unauthorized: "unauthorized",
    Misrouted: "misrouted",
    Retryable: "retryable",
}
#: ``heartbeat_jobs_dropped_total`` reasons, the ``reason`` of ``job_dropped``: a 404 or
#: a 400 from a check-in, or a status read that found the job over (heartbeat.finished).
DROP_REASONS = ("not_found", "rejected", "finished")
#: The sources whose claims may carry a TTL: ``heartbeat_claims_expired_total`` has a
#: series for each from the first scrape.
LEASE_SOURCES = ("api", "control", "queue")
#: Check-in durations: from a loopback answer to the default 10 s request timeout
#: (and host fail-over beyond it).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The registry of one Heartbeat, with the observers that feed it.

    Counting is plain numbers from the start; ``prometheus_client`` is imported and
    the registry built only when something reads :attr:`registry` or scrapes (the
    ``[metrics]`` listener, or embedding code): a sidecar without a listener never
    loads it.
    """

    def __init__(
        self, scheduler: Scheduler, health: Health, leases: LeaseKeeper | None = None
    ) -> None:
        self.checkins = CheckinStats()
        #: Jobs dropped, by reason; every documented reason exists from the start, at 0.
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._state = _StateCollector(scheduler, health)
        self._leases = leases
        self._registry: CollectorRegistry | None = None
        scheduler.outcome_observers.append(self.checkins.on_outcome)
        scheduler.change_observers.append(self._on_change)

    @property
    def registry(self) -> CollectorRegistry:
        """This Heartbeat's own registry (not the global one: two Heartbeats, in tests
        or embedded, never collide)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.platform_collector import PlatformCollector
            from prometheus_client.process_collector import ProcessCollector

            registry = CollectorRegistry()
            # Duck-typed collectors (describe/collect), so this module imports
            # prometheus_client only here.
            collectors: list[object] = [self.checkins, _DropCollector(self.drops), self._state]
            if self._leases is not None:
                collectors.append(_LeaseCollector(self._leases))
            for collector in collectors:
                registry.register(cast("Collector", collector))
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            self._registry = registry
        return self._registry

    def _on_change(self, change: Change) -> None:
        if isinstance(change, JobDropped):
            self.drops[change.reason] = self.drops.get(change.reason, 0) + 1

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type, negotiated from an Accept header
        (the Prometheus text format, or OpenMetrics when asked for)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


@cache
def _le() -> tuple[str, ...]:
    """The ``le`` label of each duration bucket, spelled as prometheus_client spells it."""
    from prometheus_client.utils import floatToGoString

    return tuple(
        floatToGoString(bound)  # type: ignore[no-untyped-call]
        for bound in (*DURATION_BUCKETS, float("inf"))
    )


class _DropCollector:
    """``heartbeat_jobs_dropped_total{reason}``, from :attr:`Metrics.drops`."""

    def __init__(self, drops: dict[str, int]) -> None:
        self._drops = drops
        self._created = time.time()

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        family = CounterMetricFamily(
            "heartbeat_jobs_dropped",
            "Jobs dropped because Elasticsearch said they are gone, invalid or finished.",
            labels=["reason"],
        )
        for reason, count in self._drops.items():
            family.add_metric([reason], count, created=self._created)
        return [family]


class CheckinStats:
    """``heartbeat_checkins_total{outcome}`` and ``heartbeat_checkin_duration_seconds``:
    plain numbers updated on every check-in, exposed as Prometheus families (with the
    same samples ``prometheus_client``'s Counter and Histogram would give) when scraped.

    Updated and scraped from the event loop only, so no lock is needed.
    """

    def __init__(self) -> None:
        # Every series exists from the first scrape, at 0 (so rate() and absent() work).
        self.counts: dict[type[Any], int] = dict.fromkeys(OUTCOMES, 0)
        #: Observations per bucket, not cumulative; the last one is +Inf.
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.seconds = 0.0
        self._created = time.time()

    def on_outcome(self, _job_id: str, outcome: Outcome, seconds: float) -> None:
        """The scheduler's outcome observer: one check-in and how long it took."""
        self.counts[type(outcome)] += 1
        # bisect_left: a duration equal to a bound belongs to that bound's bucket (le).
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.samples import Sample

        checkins = CounterMetricFamily(
            "heartbeat_checkins", "Check-ins by outcome.", labels=["outcome"]
        )
        for kind, label in OUTCOMES.items():
            checkins.add_metric([label], self.counts[kind], created=self._created)
        duration = HistogramMetricFamily(
            "heartbeat_checkin_duration_seconds",
            "Seconds one check-in took, whatever its outcome.",
        )
        cumulative: list[tuple[str, float]] = []
        total = 0
        for le, count in zip(_le(), self.buckets, strict=True):
            total += count
            cumulative.append((le, total))
        duration.add_metric([], cumulative, self.seconds)
        duration.samples.append(Sample(f"{duration.name}_created", {}, self._created, None, None))
        return [checkins, duration]


class _LeaseCollector:
    """``heartbeat_claims_expired_total{source}``, read from the lease keeper."""

    def __init__(self, leases: LeaseKeeper) -> None:
        self._leases = leases
        self._created = time.time()

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        family = CounterMetricFamily(
            "heartbeat_claims_expired",
            "Claims (job, source) that ended because their TTL passed without a renewal.",
            labels=["source"],
        )
        counts = {source: 0 for source in LEASE_SOURCES} | dict(self._leases.expired)
        for source, count in sorted(counts.items()):
            family.add_metric([source], count, created=self._created)
        return [family]


class _StateCollector:
    """Gauges read from the scheduler when scraped."""

    def __init__(self, scheduler: Scheduler, health: Health) -> None:
        self._scheduler = scheduler
        self._health = health

    def describe(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        return [GaugeMetricFamily(name, help_text) for name, help_text in _STATE_GAUGES.items()]

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        scheduler, health = self._scheduler, self._health
        risk = health.risk()
        contact_ok = scheduler.last_contact_ok
        values: dict[str, float | None] = {
            "heartbeat_watched_jobs": risk.jobs,
            "heartbeat_jobs_at_risk": risk.at_risk,
            "heartbeat_oldest_checkin_age_seconds": risk.oldest_age,
            "heartbeat_checkins_in_flight": scheduler.in_flight,
            "heartbeat_jobs_pending_drop": scheduler.pending_drops,
            "heartbeat_event_loop_lag_seconds": health.lag_monitor.lag,
            "heartbeat_elasticsearch_up": None if contact_ok is None else float(contact_ok),
            "heartbeat_worker_up": None if health.worker is None else float(health.worker.up),
        }
        families: list[Metric] = []
        for name, help_text in _STATE_GAUGES.items():
            if name == "heartbeat_worker_up" and health.worker is None:
                continue  # no [worker]: no such series at all
            if name == "heartbeat_build_info":
                family = GaugeMetricFamily(name, help_text, labels=["version", "python"])
                family.add_metric([__version__, platform.python_version()], 1.0)
            else:
                family = GaugeMetricFamily(name, help_text)
                value = values[name]
                if value is not None:
                    family.add_metric([], float(value))
            families.append(family)
        return families


_STATE_GAUGES = {
    "heartbeat_watched_jobs": "Jobs on the watch list.",
    "heartbeat_jobs_at_risk": "Jobs without a successful check-in for more than idle_after / 2.",
    "heartbeat_oldest_checkin_age_seconds": (
        "Seconds since the last successful check-in of the job that has waited longest "
        "(a job never checked in counts from when it was added)."
    ),
    "heartbeat_checkins_in_flight": "Check-in requests under way.",
    "heartbeat_jobs_pending_drop": (
        "Jobs whose first genuine 404 waits for its confirmation (drop_confirm_after), "
        "or for idle_after during a drop storm."
    ),
    "heartbeat_elasticsearch_up": (
        "1 when the last contact with Elasticsearch succeeded, 0 when it failed; "
        "absent before the first contact."
    ),
    "heartbeat_worker_up": (
        "1 while the [worker] probes find the worker alive, 0 while it is down or not yet "
        "seen (check-ins paused); absent without [worker]."
    ),
    "heartbeat_event_loop_lag_seconds": (
        "How late the event loop woke a task sleeping 0.5 s: the latest measurement."
    ),
    "heartbeat_build_info": "Always 1; the labels say which heartbeat and Python run.",
}
