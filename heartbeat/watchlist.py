"""The watch list: every watched job, the sources that claim it, and its changes.

Owns the :class:`Job` records, each source's claims on them, adding and removing
ids (``job_added``, ``job_removed``, ``job_dropped``), the snapshots readers get
(:class:`JobView`, the state file's rows) and the typed change events
(:mod:`heartbeat.changes`) its observers get. It does not own timing: the scheduler
gives each new job its first due time (``place``) and hears of every job that
leaves (``forget``). Nor does it decide that a job is over: the scheduler and
:mod:`heartbeat.finished` decide, then call :meth:`WatchList.drop`.

Every id is trusted: it was validated where it entered (:mod:`heartbeat.jobid`: the
configuration, the command line, a source, the state file, the library API of
:class:`heartbeat.daemon.Heartbeat`), once.

A job is watched while at least one source claims it. Every source has a name
(``config``, ``cli``, ``file``, ``queue``, ``discovery``, ``control``, ``api`` or
the embedder's own), and withdrawing a claim unwatches the job only with the last
one. ``job_removed``'s ``reason`` then says why: ``unwatched`` (the library API),
``config``, ``source`` (a source that is the truth for its ids: the watch file,
``--job``, the queue), ``control``, ``discovery``, ``worker_restarted``,
``expired`` (a lease, with ``source``).

Memory: a job's sources are one shared tuple per distinct set of sources (100,000
jobs from one source hold one ``("config",)`` between them), and a long add moves
the new jobs out of the garbage collector's sight (:meth:`WatchList.watch_many_async`).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, ValuesView
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel
import structlog

from heartbeat.changes import (
    Change,
    ChangeObserver,
    ClaimsAdded,
    ClaimWithdrawn,
    JobDropped,
    JobRemoved,
    JobsAdded,
)
from heartbeat.clock import Clock

#: More ids than this added at once are logged as one ``job_added`` line.
BATCH_LOG_THRESHOLD = 10
#: watch_many_async adds this many ids between yields to the event loop (5-20 ms of
#: CPU here, depending on the load: bench/scale.py --adds measures the longest block).
ADD_CHUNK = 2_000


@dataclass(slots=True, eq=False)
class Job:
    """One watched job: its claims, and the timing state the scheduler keeps in it."""

    id: str
    sources: tuple[str, ...]
    added: float
    anchor: float
    due: float
    in_flight: bool = False
    removed: bool = False
    #: Off the heap until released (heartbeat.worker reads its document first).
    held: bool = False
    last_success: float | None = None
    failures: int = 0
    last_error: str | None = None
    #: When its first genuine 404 came (heartbeat.drops), or None.
    pending_drop: float | None = None

    def __lt__(self, other: Job) -> bool:
        # Heap entries are (due, id, job): a job removed and watched again can leave a
        # stale entry with its own id and, by chance, the same due time. Two such
        # entries are equal in order; the stale one is skipped when it surfaces.
        return False


@dataclass(frozen=True, slots=True)
class JobView:
    """A snapshot of one watched job, wall-clock times in seconds since the epoch."""

    id: str
    sources: tuple[str, ...]
    last_success: float | None
    next_due: float | None
    consecutive_failures: int
    last_error: str | None
    in_flight: bool


class WatchList:
    """The watched jobs by id, with their claims; changes go to :attr:`observers`."""

    def __init__(
        self,
        clock: Clock,
        *,
        place: Callable[[list[Job], float], None],
        forget: Callable[[Job], None],
        logger: Any = None,
    ) -> None:
        self.clock = clock
        #: Gives new jobs (with the time they were added) their first due time.
        self._place = place
        #: Told of each job that leaves, after it is gone from the list.
        self._forget = forget
        self._log = logger if logger is not None else structlog.get_logger("heartbeat")
        self._jobs: dict[str, Job] = {}
        self._source_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.observers: list[ChangeObserver] = []

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[str]:
        """The watched ids (the state file lists them once per write, as a tuple)."""
        return iter(self._jobs)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def records(self) -> ValuesView[Job]:
        """Every job's record, in the order they were added (for the scheduler)."""
        return self._jobs.values()

    # ------------------------------------------------------------------ adding

    def watch(self, job_id: str, source: str = "api") -> bool:
        """Watch ``job_id``; True when it was not watched before."""
        return self.watch_many([job_id], source) == 1

    def watch_many(self, job_ids: Iterable[str], source: str) -> int:
        """Watch several ids at once; returns how many were new."""
        ids = list(job_ids)
        added = self._add(ids, source)
        self._announce(added, source)
        return len(added)

    async def watch_many_async(
        self, job_ids: Iterable[str], source: str, *, chunk: int = ADD_CHUNK
    ) -> int:
        """:meth:`watch_many` for long lists, from async code: the ids are added
        ``chunk`` at a time with a yield to the event loop between chunks, so a million
        ids never hold the loop for long; one ``job_added`` line for the lot, as with
        watch_many."""
        ids = list(job_ids)
        added: list[str] = []
        for start in range(0, len(ids), chunk):
            # A long list yields before its first chunk too (the loop runs between two
            # long adds, the state file's and the configuration's); a short one is
            # added at once, with no await between the caller's look and the add.
            if start or len(ids) > chunk:
                await anyio.lowlevel.checkpoint()
            new = self._add(ids[start : start + chunk], source)
            if new:
                self._notify(JobsAdded(tuple(new), source))
            added += new
            if len(new) >= chunk:
                # Out of the garbage collector's sight: otherwise its full collections,
                # each over every object so far, block the loop for seconds while a
                # million jobs arrive. Jobs and heap entries form no reference cycles,
                # so reference counting still frees them when they go. Only when the
                # watch list grows by a whole chunk (a renewal of known ids, as a lease
                # holder POSTs every minute, freezes nothing), and after collecting the
                # young generations, so that what is frozen with the jobs is what is
                # alive, not garbage waiting for a collection.
                gc.collect(1)
                gc.freeze()
        self._announce(added, source, notify=False)
        return len(added)

    def _interned(self, sources: tuple[str, ...]) -> tuple[str, ...]:
        """One shared tuple per distinct set of sources: 100,000 jobs from one source
        hold one ``(source,)`` between them, not 100,000 (48 bytes each)."""
        return self._source_tuples.setdefault(sources, sources)

    def _add(self, ids: list[str], source: str) -> list[str]:
        """Claim validated ids for ``source``; the new ones, placed on the scheduler
        and announced by the caller (_announce)."""
        now = self.clock.monotonic()
        jobs = self._jobs
        new: list[Job] = []
        added: list[str] = []
        claimed: list[str] = []
        alone = self._interned((source,))
        for job_id in ids:
            job = jobs.get(job_id)
            if job is not None:
                if source not in job.sources:
                    job.sources = self._interned((*job.sources, source))
                    claimed.append(job_id)
                continue
            job = Job(id=job_id, sources=alone, added=now, anchor=now, due=now)
            jobs[job_id] = job
            new.append(job)
            added.append(job_id)
        if claimed:
            self._notify(ClaimsAdded(tuple(claimed), source))
        if new:
            self._place(new, now)
        return added

    def _announce(self, added: list[str], source: str, *, notify: bool = True) -> None:
        if len(added) > BATCH_LOG_THRESHOLD:
            self._log.info("job_added", count=len(added), source=source, sample_job_ids=added[:3])
        else:
            for job_id in added:
                self._log.info("job_added", job_id=job_id, source=source)
        if notify and added:
            self._notify(JobsAdded(tuple(added), source))

    # ------------------------------------------------------------------ removing

    def unwatch(
        self,
        job_id: str,
        reason: str = "unwatched",
        source: str | None = None,
        *,
        log_source: bool = False,
    ) -> bool:
        """Stop watching ``job_id``. With ``source``, only that source's claim is
        withdrawn; the job stays while another source still wants it. ``log_source``
        adds ``source`` to the ``job_removed`` line. True when the job went."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if source is not None:
            if source not in job.sources:
                return False
            if len(job.sources) > 1:
                job.sources = self._interned(tuple(s for s in job.sources if s != source))
                self._notify(ClaimWithdrawn(job_id, source))
                return False
        self._remove(job)
        if log_source:
            self._log.info("job_removed", job_id=job_id, reason=reason, source=source)
        else:
            self._log.info("job_removed", job_id=job_id, reason=reason)
        self._notify(JobRemoved(job_id, reason))
        return True

    def drop(
        self,
        job_id: str,
        reason: str,
        *,
        status: int | None = None,
        server_reason: str | None = None,
        job_status: str | None = None,
    ) -> bool:
        """Stop watching ``job_id`` whichever sources asked for it, because Elasticsearch
        says it is over: logs ``job_dropped`` with ``reason`` and the fields given.
        False when it was not watched."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        self._remove(job)
        dropped = JobDropped(job_id, reason, job.sources, status, server_reason, job_status)
        self._log.warning("job_dropped", job_id=job_id, reason=reason, **dropped.fields())
        self._notify(dropped)
        return True

    def _remove(self, job: Job) -> None:
        job.removed = True
        del self._jobs[job.id]
        self._forget(job)

    def _notify(self, change: Change) -> None:
        for observer in self.observers:
            observer(change)

    # ------------------------------------------------------------------ claims

    def claims(self) -> dict[str, tuple[str, ...]]:
        """Every watched id with the sources that claim it."""
        return {job.id: job.sources for job in self._jobs.values()}

    def claims_of(self, job_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """:meth:`claims` of those of ``job_ids`` still watched (the state file is
        written a chunk of ids at a time)."""
        jobs = self._jobs
        return {i: job.sources for i in job_ids if (job := jobs.get(i)) is not None}

    def claimed(self, source: str) -> set[str]:
        """The ids ``source`` claims (restored from the state file ones included)."""
        return {job.id for job in self._jobs.values() if source in job.sources}

    def claim_counts(self) -> dict[str, int]:
        """How many ids each source claims (a job two sources claim counts for both)."""
        counts: Counter[str] = Counter()
        for sources, jobs in Counter(job.sources for job in self._jobs.values()).items():
            for source in sources:
                counts[source] += jobs
        return dict(counts)

    def replace_claims(self, source: str, wanted: Iterable[str], *, reason: str) -> tuple[int, int]:
        """Make ``source`` claim exactly ``wanted``; returns ``(claims added, claims
        withdrawn)``.

        Its claims on other ids are withdrawn first (an id whose last claim that was
        is unwatched, ``job_removed`` with ``reason``); then the ids it did not claim
        yet are claimed, in ``wanted`` order. The current claims come from the watch
        list, not from the source's memory, so the ids restored from the state file are
        reconciled too."""
        keep = dict.fromkeys(wanted)
        current = [job.id for job in self._jobs.values() if source in job.sources]
        held = set(current)
        new = [job_id for job_id in keep if job_id not in held]
        gone = [job_id for job_id in current if job_id not in keep]
        for job_id in gone:
            self.unwatch(job_id, reason, source)
        self._announce(self._add(new, source), source)
        return len(new), len(gone)

    # ------------------------------------------------------------------ snapshots

    def _offset(self) -> float:
        """Add to a monotonic time to get the wall-clock time."""
        return self.clock.wall() - self.clock.monotonic()

    def job(self, job_id: str) -> JobView | None:
        job = self._jobs.get(job_id)
        return None if job is None else _view(job, self._offset())

    def jobs(self) -> list[JobView]:
        offset = self._offset()
        return [_view(job, offset) for job in self._jobs.values()]

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    def outcome_rows(
        self, job_ids: Iterable[str] | None = None
    ) -> list[tuple[str, float | None, int, str | None]]:
        """``(id, last_success as wall-clock time, consecutive failures, last error)``
        of every job (or of those of ``job_ids`` still watched), for the state file."""
        offset = self._offset()
        jobs: Iterable[Job]
        if job_ids is None:
            jobs = self._jobs.values()
        else:
            jobs = [job for i in job_ids if (job := self._jobs.get(i)) is not None]
        return [
            (
                job.id,
                None if job.last_success is None else job.last_success + offset,
                job.failures,
                job.last_error,
            )
            for job in jobs
        ]

    def restore_outcome(
        self, job_id: str, last_success: float | None, failures: int, last_error: str | None
    ) -> None:
        """Give a watched job the outcomes saved before a restart (``last_success`` a
        wall-clock time): a job that had gone long without a success is at risk at once."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        job.last_success = None if last_success is None else last_success - self._offset()
        job.failures = failures
        job.last_error = last_error

    def success_times(self) -> list[float]:
        """Every job's monotonic time of its last success (or of being added), unordered:
        one pass over the watch list for scrape-time gauges (heartbeat.health)."""
        return [
            job.last_success if job.last_success is not None else job.added
            for job in self._jobs.values()
        ]


def _view(job: Job, offset: float) -> JobView:
    return JobView(
        id=job.id,
        sources=job.sources,
        last_success=None if job.last_success is None else job.last_success + offset,
        next_due=None if job.in_flight else job.due + offset,
        consecutive_failures=job.failures,
        last_error=job.last_error,
        in_flight=job.in_flight,
    )
