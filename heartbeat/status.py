"""One status snapshot: what heartbeat reports about itself, built in one place.

Owns :class:`Status` (a frozen snapshot taken at one instant), :func:`snapshot`, which
builds it, and the one mapping from the scheduler's contact state to the
Elasticsearch state (:func:`elasticsearch_state`). The control API's ``/status``, the
systemd ``STATUS=`` line (:meth:`Status.summary`) and readiness
(:meth:`heartbeat.health.Health.readiness`) all read a snapshot. It reads the
scheduler, the worker monitor, the cluster identity and the state store and changes
none of them; it does not speak HTTP, sd_notify or Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartbeat.identity import ClusterIdentity
    from heartbeat.scheduler import Scheduler
    from heartbeat.state import StateStore
    from heartbeat.worker import WorkerMonitor

__all__ = ["Status", "elasticsearch_state", "snapshot"]


def elasticsearch_state(scheduler: Scheduler) -> str:
    """``ok``; ``unknown`` (no contact yet); ``unreachable`` (outage mode: cannot reach
    it) or ``failing`` (the last contact failed); or, whether in outage mode or not,
    what the cluster said when it was reached: ``unauthorized`` (401/403),
    ``misrouted`` (not Elasticsearch's endpoint: a proxy, a wrong path prefix) or
    ``cluster_mismatch`` (another cluster: heartbeat.identity)."""
    cause = scheduler.failure_cause
    if scheduler.outage_since is not None:
        return "unreachable" if cause in (None, "unreachable") else cause
    if scheduler.last_contact_ok is None:
        return "unknown"
    if scheduler.last_contact_ok:
        return "ok"
    return "failing" if cause in (None, "unreachable") else cause


@dataclass(frozen=True, slots=True)
class Status:
    """Heartbeat at one instant. Times are the scheduler clock's monotonic seconds;
    :meth:`wall` turns one into seconds since the epoch."""

    now: float
    #: ``clock.wall() - clock.monotonic()`` at ``now``.
    wall_offset: float
    jobs: int
    in_flight: int
    #: :func:`elasticsearch_state`.
    elasticsearch: str
    #: When outage mode began, None outside it.
    outage_since: float | None
    #: The latest successful check-in of any job.
    last_success_at: float | None
    #: ``[worker]``: is the worker up; None without ``[worker]``.
    worker_up: bool | None
    #: ``[worker]``: ``/status``'s ``worker`` object; None without ``[worker]``.
    worker: dict[str, Any] | None
    #: A host turned out to belong to another cluster.
    cluster_mismatch: bool
    #: ``[state]``: the state file and the error of its last save; None without it.
    state_path: str | None
    state_error: str | None

    def wall(self, moment: float) -> float:
        return moment + self.wall_offset

    @property
    def outage_s(self) -> float | None:
        """Seconds in outage mode so far, None outside it."""
        return None if self.outage_since is None else self.now - self.outage_since

    def summary(self) -> str:
        """One line for systemd's STATUS= and ``/status``'s ``summary``."""
        parts = [f"watching {self.jobs} jobs"]
        if self.worker_up is False:
            parts.append("worker down: check-ins paused")
        if self.last_success_at is not None:
            parts.append(f"last check-in {self.now - self.last_success_at:.0f} s ago")
        outage = self.outage_s
        if outage is not None:
            parts.append(f"elasticsearch {self.elasticsearch} for {outage:.0f} s")
        elif self.elasticsearch == "ok":
            parts.append("elasticsearch ok")
        elif self.elasticsearch != "unknown":
            parts.append("elasticsearch failing")  # whatever the cause, outside an outage
        return ", ".join(parts)


def snapshot(
    scheduler: Scheduler,
    *,
    worker: WorkerMonitor | None = None,
    identity: ClusterIdentity | None = None,
    state: StateStore | None = None,
) -> Status:
    """The :class:`Status` of ``scheduler`` and its companions, now. O(1) in the number
    of jobs."""
    now = scheduler.clock.monotonic()
    return Status(
        now=now,
        wall_offset=scheduler.clock.wall() - now,
        jobs=len(scheduler),
        in_flight=scheduler.in_flight,
        elasticsearch=elasticsearch_state(scheduler),
        outage_since=scheduler.outage_since,
        last_success_at=scheduler.last_success_at,
        worker_up=None if worker is None else worker.up,
        worker=None if worker is None else worker.status(),
        cluster_mismatch=identity is not None and bool(identity.mismatches),
        state_path=None if state is None else str(state.path),
        state_error=None if state is None else state.failed,
    )
