"""Is the worker alive, and is it the incarnation that claimed a job: the pure rules.

Owns two rules over events and time, with no I/O and no event loop (heartbeat.worker
wires them to the probes, the scheduler and Elasticsearch):

* :class:`WorkerLiveness`: probe results in, transitions out. ``failure_threshold``
  failed probes in a row make the worker :class:`Down`; a success after that is
  :class:`Up` (with how long it was down); a success naming another incarnation than
  the last one known is :class:`Restarted`. Until the first success the worker is
  *unknown*, which vouches for nothing either: there is no evidence yet.
* :func:`vouches_for`: with an incarnation known, a job is vouched for only when its
  ``started_at`` is at or after the incarnation's start minus ``clock_skew``. A job
  with no ``started_at`` (not claimed yet) is vouched for, and so is one whose
  ``started_at`` cannot be read: uncertainty never drops a job.

Times: ``now`` is the monotonic clock (durations); an incarnation's ``start`` is
wall-clock seconds since the epoch (it is compared with Elasticsearch's ``started_at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Alive",
    "Dead",
    "Down",
    "Incarnation",
    "Restarted",
    "Transition",
    "Up",
    "WorkerLiveness",
    "parse_time",
    "vouches_for",
]


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One run of the worker. Two incarnations are the same when every part is."""

    pid: int | None = None
    #: The process's start in clock ticks since boot (``/proc/<pid>/stat`` field 22):
    #: exact and stable, unlike a wall-clock time derived from it.
    ticks: int | None = None
    #: The health endpoint's ``started_at`` as it was given.
    started_at: str | None = None
    #: Wall-clock start (seconds since the epoch), compared with the jobs' ``started_at``:
    #: the process's start when a pid is known, else the health endpoint's
    #: ``started_at``; None when neither says. Not part of the identity.
    start: float | None = field(default=None, compare=False)

    def describe(self) -> dict[str, Any]:
        """For log lines: ``{"pid", "started_at"}`` (ISO 8601 UTC)."""
        return {"pid": self.pid, "started_at": iso(self.start)}


@dataclass(frozen=True, slots=True)
class Alive:
    """A probe round that found the worker alive."""

    incarnation: Incarnation


@dataclass(frozen=True, slots=True)
class Dead:
    """A probe round that did not: ``reason`` is short and machine-readable."""

    reason: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Down:
    reason: str
    error: str
    #: True when the worker was never seen alive since heartbeat started.
    never_up: bool


@dataclass(frozen=True, slots=True)
class Up:
    #: Seconds since it went down (None: first seen alive after start).
    duration_s: float | None
    incarnation: Incarnation


@dataclass(frozen=True, slots=True)
class Restarted:
    previous: Incarnation
    current: Incarnation


Transition = Down | Up | Restarted


class WorkerLiveness:
    """The worker's state from probe results: ``unknown`` -> ``up`` <-> ``down``."""

    def __init__(self, failure_threshold: int) -> None:
        self.failure_threshold = failure_threshold
        self.state: Literal["unknown", "up", "down"] = "unknown"
        #: The last incarnation seen alive (kept while down: a return is compared to it).
        self.incarnation: Incarnation | None = None
        self.failures = 0
        #: Monotonic time of the last change of ``state`` (None: never changed).
        self.since: float | None = None
        self._down_since: float | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"

    def observe(self, result: Alive | Dead, now: float) -> list[Transition]:
        """One probe round's result at monotonic ``now``; what changed, in order."""
        if isinstance(result, Dead):
            self.failures += 1
            if self.state == "down" or self.failures < self.failure_threshold:
                return []
            never_up = self.state == "unknown"
            self.state, self.since, self._down_since = "down", now, now
            return [Down(result.reason, result.error, never_up)]
        self.failures = 0
        current, previous = result.incarnation, self.incarnation
        self.incarnation = current
        transitions: list[Transition] = []
        if self.state != "up":
            duration = None if self._down_since is None else now - self._down_since
            self.state, self.since, self._down_since = "up", now, None
            transitions.append(Up(duration, current))
        if previous is not None and previous != current:
            transitions.append(Restarted(previous, current))
        return transitions


def vouches_for(
    started_at: float | None, incarnation: Incarnation | None, clock_skew: float
) -> bool:
    """May a job whose document says ``started_at`` (wall clock) be checked in on behalf
    of ``incarnation``? Yes unless both are known and the job started before it."""
    if started_at is None or incarnation is None or incarnation.start is None:
        return True
    return started_at >= incarnation.start - clock_skew


def parse_time(value: object) -> float | None:
    """An ISO 8601 time (``2025-01-31T12:00:00.000Z``) as seconds since the epoch;
    None when absent or unreadable (a naive time is taken as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
