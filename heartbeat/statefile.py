"""The state files' format, and writing a file so that a crash leaves the old or the new.

Owns the bytes of ``watchlist.json`` and ``outcomes.json`` (:mod:`heartbeat.state`
owns the directory, the lock and when to write). Each is one JSON object, the format
the previous versions wrote and read::

    watchlist.json  {...extras, "version": 1, "jobs": {id: [source, ...]},
                     "leases"?: {id: {source: wall-clock expiry}}}
    outcomes.json   {"version": 1, "outcomes": {id: [last_success, failures, last_error]}}

written a chunk of jobs per line and read a chunk of entries per step
(:mod:`heartbeat.chunked`), so that a million jobs never hold the event loop for
long; a file of the previous versions (one line) reads the same way.
"""

from __future__ import annotations

import codecs
import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from heartbeat import chunked
from heartbeat.chunked import Rows

FORMAT_VERSION = 1
#: Bytes handed to the writing thread at a time.
WRITE_SIZE = 1 << 20
NOT_A_WATCH_LIST = "not a heartbeat watch list (version 1)"


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``path`` with ``data`` (or its pieces, written one after the other) so
    that a crash leaves the old or the new file."""
    fd = _open_temporary(path)
    try:
        for piece in [data] if isinstance(data, bytes) else data:
            _write_all(fd, piece)
        _commit(fd, path)
    except BaseException:
        _abandon(fd, path)
        raise


async def write_atomically_async(path: Path, pieces: Iterable[bytes]) -> None:
    """:func:`write_atomically` from the event loop: the pieces are made on the loop,
    one per turn of it (a chunk of entries each), and written, synced and renamed in a
    worker thread, about a mebibyte at a time."""
    fd = await anyio.to_thread.run_sync(_open_temporary, path)
    try:
        buffered: list[bytes] = []
        size = 0
        for piece in pieces:
            buffered.append(piece)
            size += len(piece)
            if size >= WRITE_SIZE:
                await anyio.to_thread.run_sync(_write_all, fd, b"".join(buffered))
                buffered, size = [], 0
            else:
                await anyio.lowlevel.checkpoint()
        await anyio.to_thread.run_sync(_write_all, fd, b"".join(buffered))
        await anyio.to_thread.run_sync(_commit, fd, path)
    except BaseException:
        _abandon(fd, path)
        raise


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _open_temporary(path: Path) -> int:
    return os.open(_temporary(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _commit(fd: int, path: Path) -> None:
    """fsync, close, rename over ``path``, fsync the directory."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(_temporary(path), path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _abandon(fd: int, path: Path) -> None:
    """Close (if still open) and remove the temporary file of a write that failed."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(_temporary(path))


def encode_pieces(
    jobs: Mapping[str, tuple[str, ...]] | Rows,
    leases: Mapping[str, dict[str, float]] | Rows | None = None,
    extras: dict[str, Any] | None = None,
) -> Iterator[bytes]:
    """The state file, a chunk of jobs per piece: one JSON object (as the previous
    versions wrote and read it), ``{...extras, "version": 1, "jobs": {id: [sources]},
    "leases": {id: {source: wall-clock expiry}}}``, with a line per chunk. ``jobs`` and
    ``leases`` are read a chunk at a time (see :func:`heartbeat.chunked.chunks`)."""
    head = chunked.dumps({**(extras or {}), "version": FORMAT_VERSION})[:-1]
    yield from _object_pieces("jobs", jobs, head=f"{head},")
    # {id: {source: wall-clock expiry}} (heartbeat.leases); absent: no leases.
    if leases is not None:
        yield from _object_pieces("leases", leases, head=",", always=False)
    yield b"}\n"


def _object_pieces(
    key: str, source: Mapping[str, Any] | Rows, *, head: str, always: bool = True
) -> Iterator[bytes]:
    """``head`` and the member ``key`` holding the entries of ``source``, a chunk per
    line; nothing when there are none and not ``always``."""
    opening = f'{head}"{key}":{{'
    separator = "\n"
    for chunk in chunked.chunks(source):
        if not chunk:
            yield b""  # still a turn of the loop: a million ids with no entry take a while
            continue
        yield f"{opening}{separator}{chunked.members(chunk)}".encode()
        opening, separator = "", ",\n"
    if opening and always:
        yield opening.encode()
    if not opening or always:
        yield b"\n}"


def encode(
    jobs: Mapping[str, tuple[str, ...]] | Rows,
    leases: Mapping[str, dict[str, float]] | Rows | None = None,
    extras: dict[str, Any] | None = None,
) -> bytes:
    return b"".join(encode_pieces(jobs, leases, extras))


def decode(raw: bytes) -> dict[str, tuple[str, ...]]:
    """Parse a state file; ValueError with the reason when it is not one."""
    return decode_all(raw)[0]


def decode_all(raw: bytes) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
    """The watch list and the extras (every other top-level key) of a state file."""
    jobs, extras, _ = chunked.drain(parse(raw.decode("utf-8")))
    return jobs, extras


def decode_leases(raw: bytes) -> dict[str, dict[str, float]]:
    """The ``leases`` of a state file that :func:`decode` accepted; entries that are
    not ``{source: seconds}`` are skipped (the claim is then permanent, as before)."""
    return chunked.drain(parse(raw.decode("utf-8")))[2]


Parsed = tuple[dict[str, tuple[str, ...]], dict[str, Any], dict[str, dict[str, float]]]


def parse(text: str) -> chunked.Steps[Parsed]:
    """The watch list, the extras and the leases of a state file, parsed a chunk of
    entries per step (whatever its layout: a file of the previous versions is one
    line); ValueError with the reason when it is not a state file."""
    reader = chunked.Reader(text)
    if reader.peek() != "{":
        reader.value()
        reader.end()
        raise ValueError(NOT_A_WATCH_LIST)
    payload: dict[str, Any] = {}
    jobs: dict[str, tuple[str, ...]] | None = None
    leases: dict[str, dict[str, float]] = {}
    for key in reader.members():
        if key == "jobs" and reader.peek() == "{":
            if payload.get("version", FORMAT_VERSION) != FORMAT_VERSION:
                raise ValueError(NOT_A_WATCH_LIST)
            jobs = {}
            # One tuple per set of sources, shared: a million jobs from one source
            # hold one ("config",), quick to free once they are watched again.
            shared: dict[tuple[str, ...], tuple[str, ...]] = {}
            for count, job_id in enumerate(reader.members(), 1):
                sources = reader.value()
                if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                    raise ValueError(f"sources of {job_id!r} are not a list of strings")
                claims = tuple(sources) or ("state",)
                jobs[job_id] = shared.setdefault(claims, claims)
                if not count % chunked.STEP:
                    yield
        elif key == "leases" and reader.peek() == "{":
            leases = {}
            for count, job_id in enumerate(reader.members(), 1):
                by_source = reader.value()
                if isinstance(by_source, dict):
                    leases[job_id] = {
                        source: float(when)
                        for source, when in by_source.items()
                        if isinstance(when, int | float)
                        and not isinstance(when, bool)
                        and abs(when) < 1e12  # seconds since the epoch, not garbage
                    }
                if not count % chunked.STEP:
                    yield
        else:
            payload[key] = reader.value()
            if key == "jobs":
                jobs = None  # the last one counts, as with json.loads
    reader.end()
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(NOT_A_WATCH_LIST)
    if jobs is None:
        raise ValueError("'jobs' is not an object")
    extras = {k: v for k, v in payload.items() if k not in ("version", "jobs", "leases")}
    return jobs, extras, leases


def read_text(path: Path) -> str:
    """A file's text (UTF-8), decoded a mebibyte at a time: in a worker thread, each
    piece holds the interpreter's lock for a millisecond, not the whole file's."""
    data = memoryview(path.read_bytes())
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts = [decoder.decode(data[at : at + WRITE_SIZE]) for at in range(0, len(data), WRITE_SIZE)]
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def outcome_pieces(outcomes: Mapping[str, Any] | Rows) -> Iterator[bytes]:
    """``outcomes.json``, a chunk of jobs per piece:
    ``{"version": 1, "outcomes": {id: [last_success, failures, last_error]}}``."""
    yield from _object_pieces("outcomes", outcomes, head=f'{{"version":{FORMAT_VERSION},')
    yield b"}\n"


def parse_outcomes_file(text: str) -> chunked.Steps[dict[str, Any] | None]:
    """The ``outcomes`` object of ``outcomes.json`` (entries unchecked: see
    :func:`heartbeat.memory.parse_outcome`), a chunk per step; None when absent."""
    reader = chunked.Reader(text)
    if reader.peek() != "{":
        reader.value()
        reader.end()
        return None
    outcomes: dict[str, Any] | None = None
    for key in reader.members():
        if key == "outcomes" and reader.peek() == "{":
            outcomes = {}
            for count, job_id in enumerate(reader.members(), 1):
                outcomes[job_id] = reader.value()
                if not count % chunked.STEP:
                    yield
        else:
            reader.value()
            if key == "outcomes":
                outcomes = None  # the last one counts, as with json.loads
    reader.end()
    return outcomes
