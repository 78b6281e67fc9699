"""What the watch list tells its observers: one frozen dataclass per kind of change.

As stamina hands its hooks a ``RetryDetails``: an observer (the state saver, the
leases, the worker probe, the metrics, the tombstones) matches on the type and reads
fields by name, and mypy checks them. This module holds only the types, with no
import beyond the standard library, so that any module may depend on them
(:mod:`heartbeat.watchlist` sends them).

Adds come one event per batch (a million ids from the configuration are a hundred
events, not a million); removals, drops and withdrawn claims one per job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JobsAdded:
    """Ids newly watched (``job_added``), each claimed by ``source`` alone."""

    job_ids: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class ClaimsAdded:
    """``source`` now claims these ids too; each was already watched for another."""

    job_ids: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class ClaimWithdrawn:
    """``source`` withdrew its claim; the job stays watched for its other sources."""

    job_id: str
    source: str


@dataclass(frozen=True, slots=True)
class JobRemoved:
    """Unwatched with its last claim (``job_removed``, with the same ``reason``)."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobDropped:
    """Unwatched whichever sources claimed it, because Elasticsearch says the job is
    over (``job_dropped``): a genuine 404 (``not_found``), a 400 (``rejected``), a
    finished status (``finished``)."""

    job_id: str
    reason: str
    #: The sources that claimed it (a restore claims them again).
    sources: tuple[str, ...]
    status: int | None = None
    server_reason: str | None = None
    job_status: str | None = None

    def fields(self) -> dict[str, Any]:
        """The ``job_dropped`` line's fields beyond ``job_id`` and ``reason``."""
        given = {
            "status": self.status,
            "server_reason": self.server_reason,
            "job_status": self.job_status,
        }
        return {name: value for name, value in given.items() if value is not None}


Change = JobsAdded | ClaimsAdded | ClaimWithdrawn | JobRemoved | JobDropped
#: Called with every change of the watch list, in the order they happen.
ChangeObserver = Callable[[Change], None]
