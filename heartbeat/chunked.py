"""Long work a chunk at a time, so that a million entries never hold the event loop
for long.

Owns two things and no I/O. The reading and writing of one big JSON object in
pieces: :class:`Reader` walks an object's members with the standard library's own
scanner (one value per call, the grammar and errors of ``json.loads``), and
:func:`members` encodes a chunk of a mapping as members of an object (``json.dumps``
of one chunk, so a document written this way is ordinary JSON). And running long work
written as a generator that yields every few entries (:data:`Steps`): :func:`drain`
runs one at once, :func:`drain_async` gives the event loop a turn every
:data:`SLICE` seconds. The state files (:mod:`heartbeat.statefile`), the restore of
their outcomes and the start-up ramp are such work.
"""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Entries encoded in one piece (a few milliseconds of ``json.dumps``).
CHUNK = 2_000
#: Entries a parser handles between two of its yields (well under a millisecond).
STEP = 500
#: Seconds :func:`drain_async` runs work before the event loop gets a turn.
SLICE = 0.01

Steps = Generator[None, None, T]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def members(chunk: Mapping[str, Any]) -> str:
    """``"key":value,...`` for every entry of ``chunk``: a piece of an object."""
    return dumps(chunk)[1:-1] if chunk else ""


@dataclass(frozen=True, slots=True)
class Rows:
    """A live table, read a chunk at a time: ``keys()`` once, then ``entries(keys)`` of
    each chunk of them (the entries of those keys that have one at that moment)."""

    keys: Callable[[], Iterable[str]]
    entries: Callable[[Sequence[str]], dict[str, Any]]


def chunks(source: Mapping[str, Any] | Rows, size: int = CHUNK) -> Iterator[dict[str, Any]]:
    """``source`` in dicts of at most ``size`` entries. The keys are listed once, at the
    start; each chunk reads the values of those still there when it is made, so the
    source may change between chunks (as the watch list does while the saver yields):
    a key gone by then is skipped, a key added after the start is left out."""
    # A tuple, not a list: the collector untracks a tuple of strings the first time it
    # sees it, where it would walk a young list of a million ids at every collection.
    if isinstance(source, Rows):
        keys, entries = tuple(source.keys()), source.entries
    else:
        keys, get = tuple(source), source.get
        entries = lambda part: {k: v for k in part if (v := get(k)) is not None}  # noqa: E731
    for start in range(0, len(keys), size):
        yield entries(keys[start : start + size])


class Reader:
    """A cursor over the text of one JSON document."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return self.text[self.pos : self.pos + 1]

    def _fail(self, message: str) -> None:
        raise json.JSONDecodeError(message, self.text, self.pos)

    def value(self) -> Any:
        """The whole value that comes next."""
        self.peek()
        try:
            value, self.pos = _SCAN(self.text, self.pos)
        except StopIteration:
            self._fail("Expecting value")
        return value

    def members(self) -> Iterator[str]:
        """The keys of the object that comes next, in order. After each key the caller
        reads its value (``value()``, or ``members()`` of a nested object) before it
        asks for the next one."""
        if self.peek() != "{":
            self._fail("Expecting '{'")
        self.pos += 1
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            if self.peek() != '"':
                self._fail("Expecting property name enclosed in double quotes")
            key = self.value()
            if self.peek() != ":":
                self._fail("Expecting ':' delimiter")
            self.pos += 1
            yield key
            delimiter = self.peek()
            self.pos += 1
            if delimiter == "}":
                return
            if delimiter != ",":
                self.pos -= 1
                self._fail("Expecting ',' delimiter")

    def end(self) -> None:
        """Nothing but whitespace is left."""
        if self.peek():
            self._fail("Extra data")


def drain(steps: Steps[T]) -> T:
    """Run a parser to its end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def drain_async(steps: Steps[T], *, freeze: bool = False) -> T:
    """Run a parser to its end, giving the event loop a turn every :data:`SLICE`
    seconds; its result.

    ``freeze``: each turn first takes what the work made out of the garbage
    collector's sight (after collecting the young generations, so that what is frozen
    is what is alive), and so does the end. Otherwise its full collections, each over
    every object so far, come more and more often while a million entries are made,
    and young collections walk each new container of a million entries (a list of
    ids, a set) until it is old: each one blocks the loop for a hundred milliseconds
    or more. Only for work that builds acyclic data
    (parsed JSON, the watch list): reference counting still frees it."""
    import anyio.lowlevel  # here: heartbeat.leases, which the CLI imports, stays light

    deadline = time.monotonic() + SLICE
    while True:
        try:
            next(steps)
        except StopIteration as done:
            if freeze:  # the result too: young, a big container costs every collection
                _out_of_sight()
            return done.value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            if freeze:
                _out_of_sight()
            await anyio.lowlevel.checkpoint()
            deadline = time.monotonic() + SLICE


def _out_of_sight() -> None:
    gc.collect(1)
    gc.freeze()
