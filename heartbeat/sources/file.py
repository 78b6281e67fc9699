"""The watch file (``[jobs] file``): one sync job id per line, re-read when it changes.

Owns reading the file and reconciling its ids with the watch list under the source
name ``file``. It does not own id validation (:mod:`heartbeat.jobid`) or timing (the
scheduler), and it never removes another source's claim on an id.

Format: UTF-8, one id per line. Spaces and tabs around an id, and a trailing ``\\r``
(a file saved on Windows), are removed; blank lines and lines whose first non-blank
character is ``#`` are ignored; a byte-order mark before the first line is ignored.
Everything else on a line is the id, verbatim: inner spaces, ``/``, ``?``, ``%``, a
``#`` after the first character, any unicode. So the file cannot carry an id that
starts with ``#`` or starts or ends with a space or a tab (nor, like every source, one
with a control character, a newline included): use the control API for those. There
are no end-of-line comments: ``job-1 # nightly`` is the id ``job-1 # nightly``.

A line that is not a valid id (:func:`heartbeat.jobid.validate_job_id`) or not UTF-8
is logged with its number and skipped; the rest of the file applies. The file is the
truth for its own ids: an id no longer in it loses the ``file`` claim, and is
unwatched (``job_removed``, ``reason="source"``) unless another source still wants it.
That includes ids restored from the state file at start-up.

Changes are found by polling the file's metadata every second (no dependency, and it
works on NFS and bind mounts, where inotify does not), and the file is re-read on
SIGHUP. A change is read once the file has been still for ``SETTLE`` seconds, but an
editor that truncates and rewrites in place can still be caught half-way: replace the
file atomically instead (write a new file, then ``mv`` it over the old one).

A missing or unreadable file is logged once (``watch_file_unreadable``) and retried;
it unwatches nothing, since an unreadable file is not an empty one. Without ``[jobs]
file`` at all, ids restored with the ``file`` claim are released.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from heartbeat.errors import InvalidJobId
from heartbeat.jobid import printable, validate_job_id
from heartbeat.sources.base import Feed

if TYPE_CHECKING:
    from heartbeat.config import Config

log = structlog.get_logger("heartbeat")

NAME = "file"
#: Seconds between two looks at the file's metadata.
POLL_INTERVAL = 1.0
#: A changed file is read once its metadata has not moved for this long.
SETTLE = 0.2
#: How many times a file that keeps changing while it is read is read again.
READ_ATTEMPTS = 5
#: Bad lines logged one by one per read; the rest are only counted.
MAX_LOGGED_BAD_LINES = 10

Signature = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    error: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """The ids of a watch file, in file order without duplicates, and its bad lines."""

    ids: list[str] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def parse(raw: bytes) -> Parsed:
    """Parse the contents of a watch file (pure: no I/O, no logging)."""
    ids: dict[str, None] = {}
    bad: list[BadLine] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(BadLine(number, f"not UTF-8 (byte {exc.start + 1} of the line)"))
            continue
        text = text.strip(" \t\r")
        if not text or text.startswith("#"):
            continue
        try:
            ids[validate_job_id(text)] = None
        except InvalidJobId as exc:
            bad.append(BadLine(number, str(exc), printable(text)))
    return Parsed(list(ids), bad)


def _signature(st: os.stat_result) -> Signature:
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_file(path: Path) -> Signature:
    """What changes when the file is written or replaced. Raises OSError."""
    return _signature(os.stat(path))


class _Changing(Exception):
    """The file changed while it was being read."""


def read_file(path: Path) -> tuple[Signature, bytes]:
    """The file's contents and the signature they belong to. Raises OSError, _Changing."""
    before = stat_file(path)  # not open() on a FIFO or a device: it could block
    with path.open("rb") as handle:
        opened = _signature(os.fstat(handle.fileno()))
        raw = handle.read()
    if stat_file(path) != opened or opened[:2] != before[:2]:
        raise _Changing
    return opened, raw


class FileSource:
    """Keeps the watch list's ``file`` claims equal to the ids in ``[jobs] file``."""

    name = NAME

    def __init__(
        self, path: Path | None, *, poll_interval: float = POLL_INTERVAL, settle: float = SETTLE
    ) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.settle = settle
        self._feed: Feed | None = None
        self._applied: Signature | None = None  # the version of the file now applied
        self._failing: str | None = None  # the error logged while the file is unreadable
        self._lock = anyio.Lock()
        self._wake = anyio.Event()

    async def run(self, feed: Feed, *, task_status: TaskStatus[Any]) -> None:
        self._feed = feed
        # Read before reporting started: READY=1 means the file's ids are watched.
        await self.check(force=True)
        task_status.started()
        while True:
            wake = self._wake
            if self.path is None:
                await wake.wait()
            else:
                with anyio.move_on_after(self.poll_interval):
                    await wake.wait()
            if wake.is_set():
                self._wake = anyio.Event()
            await self.check(force=False)

    async def reload(self, config: Config) -> None:
        """SIGHUP: follow a changed ``[jobs] file`` and re-read the file in any case."""
        if config.jobs.file != self.path:
            self.path = config.jobs.file
            self._failing = None
            self._wake.set()  # the loop may be waiting without a timeout
        await self.check(force=True)

    async def check(self, *, force: bool) -> None:
        """Apply the file if it changed since it was last applied (or ``force``)."""
        feed = self._feed
        if feed is None:
            return
        async with self._lock:
            path = self.path
            if path is None:
                if force:
                    feed.replace_valid_claims(NAME, [])
                return
            try:
                contents = await self._read(path, force=force)
            except OSError as exc:
                self._unreadable(feed, path, exc)
                return
            if contents is None:
                return
            signature, raw = contents
            parsed = await anyio.to_thread.run_sync(parse, raw)
            self._apply(feed, path, parsed)
            self._applied = signature

    async def _read(self, path: Path, *, force: bool) -> tuple[Signature, bytes] | None:
        """The file's contents when it changed (or ``force``), else None."""
        signature = await anyio.to_thread.run_sync(stat_file, path)
        if signature == self._applied and not force:
            return None
        for _ in range(READ_ATTEMPTS):
            if not force:
                # Read a changed file once it has been still for a moment.
                await anyio.sleep(self.settle)
                now = await anyio.to_thread.run_sync(stat_file, path)
                if now != signature:
                    signature = now
                    continue
            try:
                return await anyio.to_thread.run_sync(read_file, path)
            except _Changing:
                force = False
                signature = await anyio.to_thread.run_sync(stat_file, path)
        return await anyio.to_thread.run_sync(_read_anyway, path)

    def _unreadable(self, feed: Feed, path: Path, exc: OSError) -> None:
        if self._failing is None:
            log.error(
                "watch_file_unreadable",
                path=str(path),
                error=exc.strerror or str(exc),
                kept=len(feed.claimed(NAME)),
            )
        self._failing = exc.strerror or str(exc)
        self._applied = None

    def _apply(self, feed: Feed, path: Path, parsed: Parsed) -> None:
        for bad in parsed.bad[:MAX_LOGGED_BAD_LINES]:
            fields = {"value": bad.text} if bad.text is not None else {}
            log.warning(
                "watch_file_line_invalid",
                path=str(path),
                line=bad.number,
                error=bad.error,
                **fields,
            )
        # The claims are read from the watch list, not from this object's memory, so
        # ids restored from the state file are reconciled too.
        added, removed = feed.replace_valid_claims(NAME, parsed.ids)
        log.info(
            "watch_file_loaded",
            path=str(path),
            jobs=len(parsed.ids),
            added=added,
            removed=removed,
            invalid_lines=len(parsed.bad),
            recovered=self._failing is not None,
        )
        self._failing = None


def _read_anyway(path: Path) -> tuple[Signature, bytes]:
    """The last resort for a file that never stops changing: read what is there."""
    with path.open("rb") as handle:
        return _signature(os.fstat(handle.fileno())), handle.read()
