"""What heartbeat remembers beside the watch list, in the state file's extras.

* ``cluster_uuid``: the expected cluster, when learnt rather than pinned
  (:mod:`heartbeat.identity`).
* ``outcomes``: each job's ``last_success``, ``consecutive_failures`` and
  ``last_error``, wall-clock times, so that at-risk counts, the oldest check-in age,
  /readyz and ``heartbeat jobs list`` survive a restart, and the start-up ramp checks
  in the jobs with the oldest success first.
* ``dropped``: the tombstones of dropped jobs, the last :data:`MAX_TOMBSTONES` or
  :data:`TOMBSTONE_AGE` seconds, whichever is fewer, so that a drop can be undone
  (``GET /dropped``, ``POST /dropped/ID/restore``, ``heartbeat jobs dropped|restore``).

Pure data and conversions: :mod:`heartbeat.state` writes it, :mod:`heartbeat.restart`
puts it back at start, :mod:`heartbeat.daemon` wires it to the scheduler.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from heartbeat.changes import JobDropped
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import validate_job_id

MAX_TOMBSTONES = 1000
TOMBSTONE_AGE = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Tombstone:
    id: str
    reason: str
    status: int | None
    server_reason: str | None
    dropped_at: float  # wall clock, seconds since the epoch
    sources: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "status": self.status,
            "server_reason": self.server_reason,
            "dropped_at": self.dropped_at,
            "sources": list(self.sources),
        }

    @classmethod
    def of_drop(cls, dropped: JobDropped, dropped_at: float) -> Tombstone:
        """The tombstone of a drop (the watch list's change event)."""
        return cls(
            id=dropped.job_id,
            reason=dropped.reason,
            status=dropped.status,
            server_reason=dropped.server_reason,
            dropped_at=dropped_at,
            sources=dropped.sources,
        )

    @classmethod
    def from_json(cls, data: Any) -> Tombstone | None:
        """None when ``data`` is not a tombstone (a damaged entry is skipped)."""
        if not isinstance(data, dict):
            return None
        job_id, reason, at = data.get("id"), data.get("reason"), data.get("dropped_at")
        sources = data.get("sources", [])
        status, server_reason = data.get("status"), data.get("server_reason")
        if not (isinstance(job_id, str) and isinstance(reason, str)):
            return None
        try:
            validate_job_id(job_id)  # it enters from the disk: restored, it is trusted
        except InvalidJobId:
            return None
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            return None
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            return None
        return cls(
            id=job_id,
            reason=reason,
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            server_reason=server_reason if isinstance(server_reason, str) else None,
            dropped_at=float(at),
            sources=tuple(sources),
        )


class Tombstones:
    """Dropped jobs, newest last; one per id (a second drop replaces the first)."""

    def __init__(self, limit: int = MAX_TOMBSTONES, max_age: float = TOMBSTONE_AGE) -> None:
        self._limit = limit
        self._max_age = max_age
        self._by_id: OrderedDict[str, Tombstone] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def add(self, tombstone: Tombstone) -> None:
        self._by_id.pop(tombstone.id, None)
        self._by_id[tombstone.id] = tombstone
        self.prune(tombstone.dropped_at)

    def prune(self, now: float) -> None:
        while len(self._by_id) > self._limit:
            self._by_id.popitem(last=False)
        while self._by_id:
            oldest = next(iter(self._by_id.values()))
            if now - oldest.dropped_at <= self._max_age:
                break
            self._by_id.popitem(last=False)

    def take(self, job_id: str) -> Tombstone | None:
        """Remove and return ``job_id``'s tombstone (to restore it), or None."""
        return self._by_id.pop(job_id, None)

    def discard(self, job_id: str) -> None:
        """``job_id`` is watched again by other means: it is no longer dropped."""
        self._by_id.pop(job_id, None)

    def all(self, now: float) -> list[Tombstone]:
        self.prune(now)
        return list(self._by_id.values())

    def to_json(self) -> list[dict[str, Any]]:
        return [tombstone.to_json() for tombstone in self._by_id.values()]

    def load(self, data: Any, now: float) -> None:
        if isinstance(data, list):
            for entry in data:
                tombstone = Tombstone.from_json(entry)
                if tombstone is not None:
                    self._by_id.pop(tombstone.id, None)
                    self._by_id[tombstone.id] = tombstone
        self.prune(now)


@dataclass(frozen=True, slots=True)
class SavedOutcome:
    last_success: float | None  # wall clock
    consecutive_failures: int
    last_error: str | None


def outcomes_json(rows: Iterable[tuple[str, float | None, int, str | None]]) -> dict[str, Any]:
    """``{id: [last_success, consecutive_failures, last_error]}`` for every job that has
    something to remember (compact: this is written every few seconds)."""
    return {
        job_id: [last_success, failures, last_error]
        for job_id, last_success, failures, last_error in rows
        if last_success is not None or failures or last_error is not None
    }


def parse_outcomes(data: Any) -> dict[str, SavedOutcome]:
    """The saved outcomes; damaged entries are skipped, never fatal."""
    result: dict[str, SavedOutcome] = {}
    if not isinstance(data, dict):
        return result
    for job_id, entry in data.items():
        outcome = parse_outcome(entry)
        if outcome is not None:
            result[job_id] = outcome
    return result


def parse_outcome(entry: Any) -> SavedOutcome | None:
    """One saved ``[last_success, consecutive_failures, last_error]``; None if damaged."""
    if not isinstance(entry, list) or len(entry) != 3:
        return None
    last_success, failures, last_error = entry
    if last_success is not None and (
        not isinstance(last_success, (int, float)) or isinstance(last_success, bool)
    ):
        return None
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        return None
    if last_error is not None and not isinstance(last_error, str):
        return None
    return SavedOutcome(None if last_success is None else float(last_success), failures, last_error)
