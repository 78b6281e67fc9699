"""Discovery: find the running jobs of this host's connectors in Elasticsearch (sidecar).

Every ``[discovery] interval`` seconds, lists the sync jobs of each of
``[discovery] connector_ids`` with status ``in_progress`` or ``canceling`` (every page)
and keeps the ``discovery`` claim on exactly those whose ``worker_hostname`` equals
``[discovery] worker_hostname``: new ones are watched, the ones that left the set are
unwatched (``reason="discovery"``; a job another source also asked for stays).

With ``[worker]`` and an incarnation known, only jobs claimed by that incarnation
(``started_at``); ``canceling`` jobs only for ``[schedule] canceling_grace`` after they
were first seen canceling (heartbeat.finished).

Only jobs whose worker runs beside this heartbeat: checking in another host's jobs
would keep a dead worker's jobs looking alive, hiding it from Elasticsearch's idle rule.

A listing that fails (any connector, any page) changes nothing: the current set is kept
until a listing succeeds. ``discovery_failed`` is logged once per failure streak and
``discovery_recovered`` once when it ends. The current set is read from the watch list
(ids claimed by ``discovery``), so it survives restarts through the state file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from heartbeat.config import Config, DiscoverySettings
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import validate_job_id
from heartbeat.outcomes import Outcome, outcome_key
from heartbeat.sources.base import Feed

if TYPE_CHECKING:
    from heartbeat.client import Client
    from heartbeat.finished import StatusChecker
    from heartbeat.worker import WorkerMonitor

log = structlog.get_logger("heartbeat")

NAME = "discovery"
#: The statuses of a job whose worker must keep checking it in (Elasticsearch's idle
#: rule applies to exactly these).
RUNNING = ("in_progress", "canceling")
#: What a listing needs of each document.
FIELDS = ("id", "status", "worker_hostname", "started_at")


class DiscoveryFeed(Feed, Protocol):
    """A :class:`Feed` plus what a listing needs: the client, the worker monitor
    (``[worker]``, which vouches for a job's incarnation) and the canceling grace."""

    @property
    def client(self) -> Client: ...

    @property
    def worker(self) -> WorkerMonitor | None: ...

    @property
    def status_checker(self) -> StatusChecker: ...


class DiscoverySource:
    name = NAME

    def __init__(self, settings: DiscoverySettings) -> None:
        self.settings = settings
        self._wake = anyio.Event()
        self._failures = 0

    async def run(self, feed: DiscoveryFeed, *, task_status: TaskStatus[Any]) -> None:
        """List, reconcile, wait ``interval``; until cancelled."""
        task_status.started()
        clock = feed.clock
        while True:
            self._wake = anyio.Event()
            started = clock.monotonic()
            await self.poll(feed)
            await clock.wait_until(self._wake, started + self.settings.interval)

    async def reload(self, config: Config) -> None:
        if config.discovery != self.settings:
            self.settings = config.discovery
            self._wake.set()  # list again now, with the new settings

    async def poll(self, feed: DiscoveryFeed) -> None:
        """One listing and reconciliation (nothing changes when the listing fails)."""
        found = await self.list_ours(feed.client, feed.worker, feed.status_checker)
        if not isinstance(found, set):
            self._failures += 1
            if self._failures == 1:
                log.warning(
                    "discovery_failed",
                    reason=outcome_key(found),
                    error=getattr(found, "reason", ""),
                    status=getattr(found, "status", None),
                    kept=len(feed.claimed(NAME)),
                )
            return
        if self._failures:
            log.info("discovery_recovered", failures=self._failures)
            self._failures = 0
        # Claimed after restarts too, through the state file.
        feed.replace_valid_claims(NAME, sorted(found), reason="discovery")

    async def list_ours(
        self,
        client: Client,
        worker: WorkerMonitor | None = None,
        grace: StatusChecker | None = None,
    ) -> set[str] | Outcome:
        """Ids of this host's running jobs of the configured connectors, or the failure.
        With ``[worker]`` and an incarnation known, only the jobs it claimed (its
        ``started_at`` at or after the incarnation's start minus ``clock_skew``)."""
        ours: set[str] = set()
        for connector_id in self.settings.connector_ids:
            for status in RUNNING:
                documents = await client.list_jobs(
                    connector_id=connector_id, status=status, fields=FIELDS
                )
                if not isinstance(documents, list):
                    return documents
                for document in documents:
                    if document.get("worker_hostname") != self.settings.worker_hostname:
                        continue
                    if worker is not None and not worker.vouches_for(document):
                        continue  # an earlier incarnation's job: left to the idle rule
                    if (
                        status == "canceling"
                        and grace is not None
                        and isinstance(document.get("id"), str)
                        and not grace.canceling(document["id"])
                    ):
                        continue  # canceling for longer than canceling_grace
                    try:
                        ours.add(validate_job_id(document.get("id")))
                    except InvalidJobId as exc:
                        log.warning("discovery_entry_invalid", error=str(exc))
        return ours
