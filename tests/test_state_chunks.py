"""The state files a chunk at a time (heartbeat.statefile, heartbeat.chunked): they
stay one JSON object each, as the previous versions wrote them, and a file written by
the previous version (one line, ``json.dumps`` of the whole) loads with everything in
it; reading and writing yield to the event loop between chunks (counted by a task that
runs at every turn of the loop, never timed); a write that fails leaves the old file.
How long a block lasts is measured by ``bench/scale.py --adds``, not here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from heartbeat import chunked
from heartbeat.chunked import CHUNK, STEP, Rows
from heartbeat.daemon import Heartbeat
from heartbeat.state import FILENAME, OUTCOMES_FILENAME, StateStore
from heartbeat.statefile import (
    decode,
    decode_all,
    decode_leases,
    encode,
    encode_pieces,
    parse,
    write_atomically,
    write_atomically_async,
)
from tests.conftest import ES
from tests.helpers_control import QUIET
from tests.support import make_config


def previous_version(payload: dict[str, Any]) -> bytes:
    """A file as the previous version wrote it: one ``json.dumps`` call, one line."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Turns:
    """Counts the turns of the event loop until stopped."""

    def __init__(self) -> None:
        self.count = 0
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            self.count += 1
            await anyio.lowlevel.checkpoint()


# --- the format ---------------------------------------------------------------------


def test_the_file_is_one_json_object_a_chunk_of_jobs_per_line() -> None:
    jobs = {f"job-{n:06d}": ("config",) for n in range(2 * CHUNK + 5)}
    jobs["é 💥"] = ("file", "control")
    leases = {"é 💥": {"control": 1.9e9}}
    extras = {"cluster_uuid": "abc", "dropped": []}
    raw = encode(jobs, leases, extras)
    # What the previous version wrote, parsed by json.loads: the same document.
    assert json.loads(raw) == json.loads(
        previous_version({**extras, "version": 1, "jobs": jobs, "leases": leases})
    )
    assert len(raw.splitlines()) == 3 + 3 + 1  # head, 3 chunks, "}", leases, its "}"
    assert decode_all(raw) == (jobs, extras)
    assert decode_leases(raw) == leases


def test_a_live_source_is_read_a_chunk_at_a_time() -> None:
    source = {f"job-{n}": ("config",) for n in range(25)}
    chunks = chunked.chunks(source, size=10)
    assert len(next(chunks)) == 10
    del source["job-15"]  # gone before its chunk is read: skipped
    source["late"] = ("control",)  # added after the start: the next write has it
    assert [len(chunk) for chunk in chunks] == [9, 5]
    rows = Rows(lambda: ["a", "b", "c"], lambda ids: {i: 1 for i in ids if i != "b"})
    assert list(chunked.chunks(rows, size=2)) == [{"a": 1}, {"c": 1}]


def test_parsing_yields_between_chunks_whatever_the_layout() -> None:
    jobs = {f"job-{n:06d}": ("control",) for n in range(3 * CHUNK)}
    for raw in (encode(jobs), previous_version({"version": 1, "jobs": jobs})):
        yields, result = steps_of(parse(raw.decode()))
        assert result == (jobs, {}, {})
        assert yields >= 3 * CHUNK // STEP - 1


def steps_of(steps: chunked.Steps[Any]) -> tuple[int, Any]:
    """How many times a parser yields, and its result."""
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return yields, done.value
        yields += 1


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[1]", "not a heartbeat watch list"),
        (b'{"version": 1, "jobs": {}} x', "Extra data"),
        (b'{"version": 1}', "'jobs' is not an object"),
        (b'{"version": 1, "jobs": {"a": ["x"], }}', "Expecting property name"),
        (b'{"version": 1, "jobs": {"a": ["x"] "b": []}}', "Expecting ',' delimiter"),
        (b'{"version": 1 "jobs": {}}', "Expecting ',' delimiter"),
        (b'{"version": 1, "jobs" {}}', "Expecting ':' delimiter"),
        (b'{"version": 2, "jobs": {"a": "file"}}', "version 1"),
    ],
)
def test_the_chunked_parser_refuses_what_json_loads_refuses(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode(raw)


def test_duplicate_keys_count_last_as_with_json_loads() -> None:
    raw = b'{"jobs": [], "version": 1, "jobs": {"a": ["x"], "a": ["y"]}}'
    assert json.loads(raw)["jobs"] == {"a": ["y"]}
    assert decode(raw) == {"a": ("y",)}


# --- writing --------------------------------------------------------------------------


async def test_a_write_yields_to_the_loop_between_chunks(tmp_path: Path) -> None:
    jobs = {f"job-{n:06d}": ("control",) for n in range(5 * CHUNK)}
    turns = Turns()
    async with anyio.create_task_group() as tg:
        tg.start_soon(turns.run)
        await anyio.lowlevel.checkpoint()
        await write_atomically_async(tmp_path / FILENAME, encode_pieces(jobs))
        turns.stopped = True
    assert turns.count >= 5
    assert decode((tmp_path / FILENAME).read_bytes()) == jobs


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_write_that_fails_half_way_leaves_the_old_file(
    tmp_path: Path, asynchronous: bool
) -> None:
    path = tmp_path / FILENAME
    write_atomically(path, b"old")

    def pieces() -> Iterator[bytes]:
        yield b'{"version":1,"jobs":{'
        raise OSError(28, "No space left on device")

    async def write() -> None:
        if asynchronous:
            await write_atomically_async(path, pieces())
        else:
            write_atomically(path, pieces())

    with pytest.raises(OSError, match="No space"):
        await write()
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == [FILENAME]  # no temporary left


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_changes_during_a_write_are_in_the_next_one(tmp_path: Path) -> None:
    watched = {f"job-{n:06d}": ("control",) for n in range(3 * CHUNK)}
    store = StateStore(tmp_path, lambda: watched)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run)
            store.changed()
            waiting = anyio.Event()

            async def change_while_writing() -> None:
                while not (tmp_path / f".{FILENAME}.tmp").exists():
                    await anyio.lowlevel.checkpoint()
                del watched["job-000001"]
                watched["late"] = ("control",)
                store.changed()
                waiting.set()
                await store.persisted()

            tg.start_soon(change_while_writing)
            await waiting.wait()
            await store.persisted()
            assert decode((tmp_path / FILENAME).read_bytes()) == watched
            tg.cancel_scope.cancel()


# --- an upgrade ------------------------------------------------------------------------


async def test_state_files_of_the_previous_version_load(es: ES, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    now = time.time()
    saved = {f"ctl-{n:05d}": ["control"] for n in range(CHUNK + 10)}
    saved["both"] = ["control", "file"]
    tombstone = {
        "id": "gone",
        "reason": "not_found",
        "status": 404,
        "server_reason": "no such job",
        "dropped_at": now - 60,
        "sources": ["control"],
    }
    (state / FILENAME).write_bytes(
        previous_version(
            {
                "cluster_uuid": "uuid-remembered",
                "dropped": [tombstone],
                "version": 1,
                "jobs": saved,
                "leases": {"ctl-00001": {"control": round(now + 3600, 3)}},
            }
        )
    )
    (state / OUTCOMES_FILENAME).write_bytes(
        previous_version({"version": 1, "outcomes": {"ctl-00002": [now - 30, 2, "http_503: busy"]}})
    )
    hb = Heartbeat(make_config(es.url, QUIET, state={"dir": state}))
    with capture_logs() as logs, anyio.fail_after(30):
        async with hb:
            hb.scheduler.pause()
            assert hb.scheduler.watchlist.claims() == {k: tuple(v) for k, v in saved.items()}
            assert hb.leases.expires_at("ctl-00001", ("control",)) == pytest.approx(
                now + 3600, abs=0.01
            )
            assert hb.leases.expires_at("ctl-00003", ("control",)) is None
            assert hb.identity.remembered == "uuid-remembered"
            assert [t.id for t in hb.dropped()] == ["gone"]
            view = hb.scheduler.watchlist.job("ctl-00002")
            assert view is not None
            assert view.consecutive_failures == 2
            assert view.last_error == "http_503: busy"
            assert view.last_success == pytest.approx(now - 30, abs=0.01)
    loaded = [entry for entry in logs if entry["event"] == "state_loaded"]
    assert loaded[0]["jobs"] == len(saved)
    assert not [entry for entry in logs if entry["event"].startswith("state_corrupt")]
    # Written back in the chunked layout, and still one JSON object with all of it.
    rewritten = json.loads((state / FILENAME).read_bytes())
    assert rewritten["jobs"] == saved
    assert rewritten["cluster_uuid"] == "uuid-remembered"
    assert list(rewritten["leases"]) == ["ctl-00001"]
    outcomes = json.loads((state / OUTCOMES_FILENAME).read_bytes())["outcomes"]
    assert outcomes["ctl-00002"][1:] == [2, "http_503: busy"]


async def test_outcomes_writes_take_turns(tmp_path: Path) -> None:
    # A million jobs' outcomes take seconds to write: a second write meanwhile (the
    # period's, a shutdown's) must not rename the first one's temporary file away.
    outcomes = {f"job-{n:06d}": [1.9e9, n % 3, None] for n in range(3 * CHUNK)}
    store = StateStore(tmp_path, dict, outcomes=lambda: outcomes)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(store._write_outcomes, outcomes)
    assert json.loads((tmp_path / OUTCOMES_FILENAME).read_bytes())["outcomes"] == outcomes
