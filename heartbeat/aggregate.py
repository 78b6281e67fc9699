"""Aggregated failure logs: one line per kind of failure per window, not one per job.

The first failure of a kind (``http_503``, ``timeout``, ``misrouted``...) is logged at
once with its job id, so a single flaky job is visible; later ones within the window
are counted and logged as one summary line when the window closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

WINDOW = 60.0
SAMPLE = 3


@dataclass(slots=True)
class _Bucket:
    opened: float
    error: str
    status: int | None
    failures: int = 0
    jobs: set[str] = field(default_factory=set)


class FailureLog:
    """Collects ``checkin_failed`` events and emits them aggregated."""

    def __init__(self, logger: Any = None, window: float = WINDOW) -> None:
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        self._window = window
        self._buckets: dict[str, _Bucket] = {}

    def record(
        self, now: float, *, reason: str, job_id: str, error: str, status: int | None
    ) -> None:
        bucket = self._buckets.get(reason)
        if bucket is None:
            self._buckets[reason] = _Bucket(opened=now, error=error, status=status)
            self._log.warning(
                "checkin_failed", job_id=job_id, reason=reason, status=status, error=error
            )
            return
        bucket.failures += 1
        if len(bucket.jobs) < 100_000:
            bucket.jobs.add(job_id)
        bucket.error = error

    def next_flush(self) -> float | None:
        if not self._buckets:
            return None
        return min(bucket.opened for bucket in self._buckets.values()) + self._window

    def flush(self, now: float) -> None:
        """Log and close every window that has run its course."""
        for reason, bucket in list(self._buckets.items()):
            if now - bucket.opened < self._window:
                continue
            del self._buckets[reason]
            if bucket.failures:
                self._log.warning(
                    "checkin_failed",
                    reason=reason,
                    status=bucket.status,
                    error=bucket.error,
                    failures=bucket.failures,
                    jobs=len(bucket.jobs),
                    sample_job_ids=sorted(bucket.jobs)[:SAMPLE],
                    window_s=round(now - bucket.opened, 1),
                )
