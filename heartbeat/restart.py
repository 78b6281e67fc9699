"""A restart: what the state file brings back, before any source starts, and the
last save at a clean stop that it comes back from.

Owns the order in which a saved state is put back: the watch list, each id under the
sources that claimed it (the configuration is the truth for its own ids: a saved
``config`` claim on an id no longer configured is not restored); the leases (a restart
is not a renewal: one that ended while heartbeat was down ends now); the remembered
cluster; the tombstones of dropped jobs; each job's outcomes, and the start-up ramp
re-ordered oldest success first. It does not read or write the file
(:mod:`heartbeat.state`) or decode the extras (:mod:`heartbeat.memory`).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from heartbeat.errors import InvalidJobId
from heartbeat.identity import ClusterIdentity
from heartbeat.jobid import validate_job_id
from heartbeat.leases import LeaseKeeper
from heartbeat.memory import Tombstones, parse_outcomes
from heartbeat.scheduler import Scheduler
from heartbeat.state import StateStore
from heartbeat.watchlist import ADD_CHUNK

__all__ = ["restore", "save_on_exit"]

log = structlog.get_logger("heartbeat")


async def restore(
    state: StateStore,
    scheduler: Scheduler,
    *,
    configured: Sequence[str],
    leases: LeaseKeeper,
    identity: ClusterIdentity,
    tombstones: Tombstones,
) -> None:
    """Watch again what ``state`` says was watched, and put back what it kept beside."""
    # Read and decoded in a thread: a million ids take seconds of JSON.
    saved = await anyio.to_thread.run_sync(state.load)
    by_source: dict[str, list[str]] = {}
    for job_id, sources in saved.items():
        for source in sources:
            by_source.setdefault(source, []).append(job_id)
    wanted = set(configured)
    restored = 0
    for source, ids in by_source.items():
        if source == "config":
            # The configuration is the truth for its own ids.
            ids = [job_id for job_id in ids if job_id in wanted]
        valid = []
        for index, job_id in enumerate(ids):
            if index and not index % ADD_CHUNK:
                await anyio.lowlevel.checkpoint()  # the event loop runs between chunks
            try:
                valid.append(validate_job_id(job_id))
            except InvalidJobId as exc:
                log.warning("state_entry_invalid", error=str(exc))
        restored += await scheduler.watch_many_async(valid, source)
    # A restart is not a renewal; a lease that ended while we were down ends now.
    leases.restore(state.loaded_leases)
    extras = state.loaded_extras
    remembered = extras.get("cluster_uuid")
    if isinstance(remembered, str) and remembered:
        identity.remembered = remembered
        if identity.pinned not in (None, remembered):
            log.info(
                "cluster_uuid_pinned",
                pinned=identity.pinned,
                remembered=remembered,
                problem="[elasticsearch] cluster_uuid wins over the remembered cluster",
            )
    tombstones.load(extras.get("dropped"), scheduler.clock.wall())
    outcomes = parse_outcomes(state.loaded_outcomes)
    for job_id, outcome in outcomes.items():
        scheduler.watchlist.restore_outcome(
            job_id, outcome.last_success, outcome.consecutive_failures, outcome.last_error
        )
    # Oldest success first (a job that never succeeded counts as oldest). Without
    # saved outcomes every job counts as oldest: the ramp stays as it is.
    if outcomes:
        scheduler.ramp_oldest_first()
    if saved:
        log.info("state_loaded", path=str(state.path), jobs=restored)


def save_on_exit(state: StateStore) -> None:
    """A clean stop: the watch list and the exact outcomes saved, the lock released."""
    try:
        state.save_now()
        state.save_outcomes_now()  # exact after a clean stop
    except OSError as error:
        log.error("state_save_failed", path=str(state.path), error=str(error))
    finally:
        state.unlock()
