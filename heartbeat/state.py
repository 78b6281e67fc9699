"""The watch list on disk, so that it survives restarts (``[state] dir``).

Owns ``<dir>/watchlist.json``: every watched id with the sources that asked for it,
and the daemon's small memories beside it (``extras``: the expected cluster, the
tombstones of dropped jobs; see :mod:`heartbeat.memory`). Saved atomically (temporary
file, fsync, rename, fsync of the directory) after each change, bursts coalesced into
one write. Loaded at start before any source runs. The format is
:mod:`heartbeat.statefile`'s: written and read a chunk of jobs at a time, yielding to
the event loop between chunks, so that a million jobs never hold the loop for long.

Each job's last outcomes go to ``<dir>/outcomes.json`` instead: they change with every
check-in, so they are written on their own (:meth:`StateStore.touched` is a flag set
per check-in), at most every :data:`OUTCOME_PERIOD` seconds and never more than
:data:`OUTCOME_BUDGET` of the time (a 1,000,000-job file takes seconds to write
here), in chunks like the watch list; a watch-list change (a control API
acknowledgement) never waits for them.
A corrupt or unreadable file is logged, kept aside under a new name, and the daemon
starts from its sources: never a crash loop. A state directory that cannot be used at
all is logged (``state_unreadable``), saving is retried (``state_save_failed`` once),
and the daemon runs with its watch list in memory.

One process per directory: :meth:`StateStore.lock` takes an exclusive ``flock`` on
``<dir>/lock`` (released by the kernel if the process dies, even by ``kill -9``), so a
second heartbeat pointed at the same directory stops with a configuration error
instead of overwriting the first one's watch list.

Producers that acknowledge (the control API's 2xx, the Redis stream's XACK) first
``await store.persisted()``, which returns once every change made before the call is
on disk: an acknowledged id survives ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from heartbeat import chunked
from heartbeat.chunked import Rows
from heartbeat.errors import ConfigError
from heartbeat.statefile import (
    encode_pieces,
    outcome_pieces,
    parse,
    parse_outcomes_file,
    read_text,
    write_atomically,
    write_atomically_async,
)

log = structlog.get_logger("heartbeat")

FILENAME = "watchlist.json"
OUTCOMES_FILENAME = "outcomes.json"
LOCKNAME = "lock"
#: Changes within this many seconds of each other are written together.
COALESCE = 0.05
#: Check-in outcomes alone are written at most this often: never a write per
#: check-in, and after ``kill -9`` they are at most this (plus one write) old.
OUTCOME_PERIOD = 5.0
#: ...and at most this share of the time: with a huge list the period grows to
#: ``last write's duration / OUTCOME_BUDGET``.
OUTCOME_BUDGET = 0.05


class StateStore:
    """Loads and saves the watch list. ``snapshot`` returns the current list (a mapping
    or :class:`~heartbeat.chunked.Rows`, read a chunk at a time while the loop runs
    between chunks), ``outcomes`` likewise the outcomes to keep."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], Mapping[str, tuple[str, ...]] | Rows],
        leases: Callable[[], Mapping[str, dict[str, float]] | Rows] | None = None,
        extras: Callable[[], dict[str, Any]] | None = None,
        outcomes: Callable[[], Mapping[str, Any] | Rows] | None = None,
    ):
        self.directory = directory
        self.path = directory / FILENAME
        self._snapshot = snapshot
        self._leases = leases
        #: The leases :meth:`load` found (wall-clock expiries per job and source).
        self.loaded_leases: dict[str, dict[str, float]] = {}
        self._extras = extras
        #: The extras of the file :meth:`load` read (empty before, or without a file).
        self.loaded_extras: dict[str, Any] = {}
        self.outcomes_path = directory / OUTCOMES_FILENAME
        self._outcomes_snapshot = outcomes
        #: What :meth:`load` found in ``outcomes.json`` (None: no usable file).
        self.loaded_outcomes: Any = None
        self._touched = False
        self._changed = 0
        self._saved = 0
        self._dirty = anyio.Event()
        self._saved_event = anyio.Event()
        self._lock_fd: int | None = None
        self.failed: str | None = None
        #: One outcomes write at a time: a million jobs' take seconds, and two writers
        #: of one temporary file would each rename the other's away.
        self._outcomes_writing = anyio.Lock()

    def lock(self) -> None:
        """Make this process the directory's only user, until :meth:`unlock`.

        Raises ConfigError (``state.dir``) when another process holds it. A directory
        that cannot be created or opened is logged, not fatal: saving will report it."""
        lock_path = self.directory / LOCKNAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("state_unreadable", path=str(lock_path), error=exc.strerror or str(exc))
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{self.directory} is in use by another heartbeat (pid {holder})", key="state.dir"
            ) from None
        except OSError as exc:  # no locks on this filesystem: run, unprotected
            os.close(fd)
            log.warning("state_not_locked", path=str(lock_path), error=exc.strerror or str(exc))
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def load(self) -> dict[str, tuple[str, ...]]:
        """The saved watch list; empty (and the bad file set aside) when unusable.

        Read in a worker thread, parsed on the event loop a chunk of entries at a time
        with a yield between chunks: a million ids never hold the loop for long."""
        try:
            text = await anyio.to_thread.run_sync(read_text, self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            # Kept aside, so that the next save does not replace what could not be read.
            aside = self._set_aside("unreadable")
            log.error(
                "state_unreadable",
                path=str(self.path),
                kept_as=str(aside),
                error=exc.strerror or str(exc),
            )
            return {}
        except UnicodeDecodeError as exc:
            return self._corrupt(exc)
        try:
            jobs, self.loaded_extras, self.loaded_leases = await chunked.drain_async(
                parse(text), freeze=True
            )
        except ValueError as exc:
            return self._corrupt(exc)
        self.loaded_outcomes = await self._load_outcomes()
        return jobs

    def _corrupt(self, exc: ValueError) -> dict[str, tuple[str, ...]]:
        aside = self._set_aside("corrupt")
        log.error("state_corrupt", path=str(self.path), kept_as=str(aside), error=str(exc))
        return {}

    def _set_aside(self, why: str) -> Path:
        """Rename the state file to a new ``watchlist.json.<why>-<time>``; its new path
        (or the old one when it cannot be moved)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for attempt in range(100):
            suffix = f"-{attempt}" if attempt else ""
            aside = self.path.with_name(f"{FILENAME}.{why}-{stamp}{suffix}")
            if aside.exists():
                continue
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
                return aside
            break
        return self.path

    def touched(self) -> None:
        """Note that outcomes changed (once per check-in: a flag, written within
        OUTCOME_PERIOD seconds, never a write per check-in)."""
        self._touched = True

    def _pieces(self) -> tuple[Iterator[bytes], int]:
        """The state file's pieces (made as they are read) and how many jobs it holds."""
        snapshot = self._snapshot()
        leases = self._leases() if self._leases is not None else None
        extras = self._extras() if self._extras is not None else None
        if isinstance(snapshot, Rows):  # its ids listed once, here: the count is theirs
            ids = tuple(snapshot.keys())
            snapshot = Rows(lambda: ids, snapshot.entries)
            return encode_pieces(snapshot, leases, extras), len(ids)
        return encode_pieces(snapshot, leases, extras), len(snapshot)

    async def _load_outcomes(self) -> dict[str, Any] | None:
        """The saved outcomes, or None: a missing or damaged file only loses them."""
        try:
            text = await anyio.to_thread.run_sync(read_text, self.outcomes_path)
            return await chunked.drain_async(parse_outcomes_file(text), freeze=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("state_outcomes_unreadable", path=str(self.outcomes_path), error=str(exc))
            return None

    def save_outcomes_now(self) -> None:
        """Write the outcomes synchronously (used at shutdown)."""
        if self._outcomes_snapshot is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(self.outcomes_path, outcome_pieces(self._outcomes_snapshot()))

    async def _write_outcomes(self, outcomes: Mapping[str, Any] | Rows) -> None:
        async with self._outcomes_writing:
            await anyio.to_thread.run_sync(
                partial(self.directory.mkdir, parents=True, exist_ok=True, mode=0o700)
            )
            await write_atomically_async(self.outcomes_path, outcome_pieces(outcomes))

    async def _outcomes(self) -> None:
        if self._outcomes_snapshot is None:
            return
        period = OUTCOME_PERIOD
        while True:
            await anyio.sleep(period)
            if not self._touched:
                continue
            self._touched = False
            started = time.monotonic()
            try:
                await self._write_outcomes(self._outcomes_snapshot())
            except OSError as exc:
                self._touched = True  # try again next period; the watch list reports
                log.debug("state_outcomes_save_failed", error=str(exc))
                continue
            period = max(OUTCOME_PERIOD, (time.monotonic() - started) / OUTCOME_BUDGET)

    def changed(self) -> None:
        """Note that the watch list changed (cheap; the saver writes soon)."""
        self._changed += 1
        self._dirty.set()

    async def persisted(self) -> None:
        """Return once every change noted before this call is on disk."""
        target = self._changed
        while self._saved < target:
            await self._saved_event.wait()

    def save_now(self) -> None:
        """Write synchronously (used at shutdown)."""
        generation = self._changed
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(self.path, self._pieces()[0])
        self._saved = max(self._saved, generation)

    async def _write(self) -> int:
        """Write the watch list from the event loop (a chunk per turn of it); how many
        jobs it held. Every change noted before the call is in the file."""
        await anyio.to_thread.run_sync(
            partial(self.directory.mkdir, parents=True, exist_ok=True, mode=0o700)
        )
        pieces, count = self._pieces()
        await write_atomically_async(self.path, pieces)
        return count

    async def run(self) -> None:
        """The saver task: writes after changes, coalescing bursts; retries failures."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._outcomes)
            await self._save_loop()

    async def _save_loop(self) -> None:
        delay = 1.0
        while True:
            await self._dirty.wait()
            await anyio.sleep(COALESCE)
            self._dirty = anyio.Event()
            generation = self._changed
            try:
                count = await self._write()
            except OSError as exc:
                if self.failed is None:
                    log.error("state_save_failed", path=str(self.path), error=str(exc))
                self.failed = str(exc)
                self._dirty.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.failed is not None:
                log.info("state_saved", path=str(self.path), jobs=count)
                self.failed = None
            delay = 1.0
            self._saved = generation
            saved, self._saved_event = self._saved_event, anyio.Event()
            saved.set()
