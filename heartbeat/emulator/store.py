"""The emulator's sync-job documents: an in-memory store and its Python API.

Owns :data:`STATUSES`, :data:`JOB_TYPES`, the job record and the document Elasticsearch
would return for it, and the operations tests, the demo and the control API call
directly: create, get, delete, set status, export and import. It does not own HTTP:
Elasticsearch's endpoints over these jobs are in ``api``, the ``/_emulator`` ones in
``control``. Connectors are not modelled: any connector id is accepted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, ValuesView
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STATUSES = ("pending", "in_progress", "canceling", "canceled", "suspended", "completed", "error")
JOB_TYPES = ("full", "incremental", "access_control")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class SyncJob:
    """One stored sync job; :meth:`document` is its Elasticsearch form."""

    id: str
    connector_id: str
    job_type: str
    status: str
    created_at: datetime
    seq: int
    last_seen: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    canceled_at: datetime | None = None
    cancelation_requested_at: datetime | None = None
    worker_hostname: str | None = None
    trigger_method: str = "on_demand"
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector": {"id": self.connector_id},
            "status": self.status,
            "job_type": self.job_type,
            "trigger_method": self.trigger_method,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "last_seen": iso(self.last_seen),
            "completed_at": iso(self.completed_at),
            "canceled_at": iso(self.canceled_at),
            "cancelation_requested_at": iso(self.cancelation_requested_at),
            "worker_hostname": self.worker_hostname,
            "error": self.error,
            "deleted_document_count": 0,
            "indexed_document_count": 0,
            "indexed_document_volume": 0,
            "total_document_count": 0,
            "metadata": {},
        }


class JobStore:
    """Sync jobs by id, in creation order, with timestamps from the ``now`` clock."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self._now = now
        self._jobs: dict[str, SyncJob] = {}
        self._seq = 0

    def create_job(
        self,
        connector_id: str = "c1",
        job_type: str = "full",
        status: str = "in_progress",
        worker_hostname: str | None = None,
        job_id: str | None = None,
        started_at: datetime | None = None,
    ) -> str:
        """Store a job and return its id (random, 20 url-safe characters, unless given).
        ``started_at`` backdates (or postdates) the claim of a job that is not pending."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if job_type not in JOB_TYPES:
            raise ValueError(f"unknown job type {job_type!r}")
        job_id = secrets.token_urlsafe(15) if job_id is None else job_id
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} already exists")
        moment = self._now()
        self._seq += 1
        self._jobs[job_id] = SyncJob(
            id=job_id,
            connector_id=connector_id,
            job_type=job_type,
            status="pending",
            created_at=moment,
            seq=self._seq,
            last_seen=moment,
            worker_hostname=worker_hostname,
        )
        if status != "pending":
            self._jobs[job_id].started_at = started_at
            self.set_status(job_id, status)
        return job_id

    def claim(self, job_id: str, worker_hostname: str) -> None:
        """What ``PUT _connector/_sync_job/<id>/_claim`` does: ``in_progress``, with
        ``worker_hostname``, ``started_at`` and ``last_seen`` now. KeyError if missing."""
        job = self._jobs[job_id]
        moment = self._now()
        job.worker_hostname = worker_hostname
        job.status, job.started_at, job.last_seen = "in_progress", moment, moment

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's document as GET would return it, or None."""
        job = self._jobs.get(job_id)
        return None if job is None else job.document()

    def delete_job(self, job_id: str) -> None:
        """Forget a job, as if deleted (later check-ins 404). Missing ids are ignored."""
        self._jobs.pop(job_id, None)

    def set_status(self, job_id: str, status: str) -> None:
        """Move a job to ``status``, stamping the matching timestamp. KeyError if missing."""
        job = self._jobs[job_id]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        moment = self._now()
        job.status = status
        if status == "in_progress" and job.started_at is None:
            job.started_at = moment
        elif status == "canceling":
            job.cancelation_requested_at = moment
        elif status in {"completed", "canceled", "error"}:
            job.completed_at = moment
            if status == "canceled":
                job.canceled_at = moment

    def export_jobs(self) -> list[dict[str, Any]]:
        """Every job as plain data (for :meth:`import_jobs` in another process)."""
        return [
            {
                "job_id": job.id,
                "connector_id": job.connector_id,
                "job_type": job.job_type,
                "status": job.status,
                "worker_hostname": job.worker_hostname,
            }
            for job in sorted(self._jobs.values(), key=lambda j: j.seq)
        ]

    def import_jobs(self, jobs: Iterable[dict[str, Any]]) -> None:
        """Create the jobs :meth:`export_jobs` described (timestamps start afresh)."""
        for job in jobs:
            self.create_job(
                connector_id=job["connector_id"],
                job_type=job["job_type"],
                status=job["status"],
                worker_hostname=job.get("worker_hostname"),
                job_id=job["job_id"],
            )

    # -- for the Elasticsearch endpoints (``api``), which change records in place ------

    def record(self, job_id: str) -> SyncJob | None:
        """The live record (not a copy) for ``job_id``, or None."""
        return self._jobs.get(job_id)

    def records(self) -> ValuesView[SyncJob]:
        """Every live record, in creation order."""
        return self._jobs.values()

    def now(self) -> datetime:
        """The store's clock, for timestamps the endpoints stamp themselves."""
        return self._now()
