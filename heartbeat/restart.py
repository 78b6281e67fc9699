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
from typing import Any

import structlog

from heartbeat import chunked
from heartbeat.chunked import STEP, Steps
from heartbeat.errors import InvalidJobId
from heartbeat.identity import ClusterIdentity
from heartbeat.jobid import validate_job_id
from heartbeat.leases import LeaseKeeper
from heartbeat.memory import Tombstones, parse_outcome
from heartbeat.scheduler import Scheduler
from heartbeat.state import StateStore

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
    """Watch again what ``state`` says was watched, and put back what it kept beside.

    A million jobs never hold the event loop for long: the file is parsed, the claims
    sorted, the outcomes given back and the ramp re-ordered a few entries per step
    (:mod:`heartbeat.chunked`), the ids watched again in chunks."""
    saved = await state.load()
    restored = 0
    by_source = await chunked.drain_async(_saved_claims(saved, configured), freeze=True)
    for source, ids in by_source.items():
        restored += await scheduler.watchlist.watch_many_async(ids, source)
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
    outcomes, state.loaded_outcomes = state.loaded_outcomes, None
    # Oldest success first (a job that never succeeded counts as oldest). Without
    # saved outcomes every job counts as oldest: the ramp stays as it is.
    if await chunked.drain_async(_restore_outcomes(scheduler, outcomes)):
        await scheduler.ramp_oldest_first_async()
    if saved:
        log.info("state_loaded", path=str(state.path), jobs=restored)


def _saved_claims(
    saved: dict[str, tuple[str, ...]], configured: Sequence[str]
) -> Steps[dict[str, list[str]]]:
    """The valid saved ids by source, a few at a time. The configuration is the truth
    for its own ids: a saved ``config`` claim it no longer gives is left."""
    wanted: set[str] = set()
    for start in range(0, len(configured), STEP):
        wanted.update(configured[start : start + STEP])
        yield
    by_source: dict[str, list[str]] = {}
    for index, (job_id, sources) in enumerate(saved.items()):
        if not index % STEP:
            yield
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            log.warning("state_entry_invalid", error=str(exc))
            continue
        for source in sources:
            if source != "config" or job_id in wanted:
                by_source.setdefault(source, []).append(job_id)
    return by_source


def _restore_outcomes(scheduler: Scheduler, saved: Any) -> Steps[int]:
    """Give the watched jobs their saved outcomes (``outcomes.json``'s entries,
    consumed: a million of them are freed a few at a time, not in one go); how many
    were usable."""
    usable = 0
    if not isinstance(saved, dict):
        return usable
    while saved:
        for _ in range(min(STEP, len(saved))):
            job_id, entry = saved.popitem()
            outcome = parse_outcome(entry)
            if outcome is not None:
                usable += 1
                scheduler.watchlist.restore_outcome(
                    job_id, outcome.last_success, outcome.consecutive_failures, outcome.last_error
                )
        yield
    return usable


def save_on_exit(state: StateStore) -> None:
    """A clean stop: the watch list and the exact outcomes saved, the lock released."""
    try:
        state.save_now()
        state.save_outcomes_now()  # exact after a clean stop
    except OSError as error:
        log.error("state_save_failed", path=str(state.path), error=str(error))
    finally:
        state.unlock()
