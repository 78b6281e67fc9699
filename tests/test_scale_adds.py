"""Adding many ids at once: every id is kept, the ramp is the one watch_many gives, an
invalid id anywhere changes nothing, and the event loop runs between chunks (counted
by a task that samples the watch list at every turn of the loop, never timed).

The scheduler runs on a manual clock; the daemon tests use a real Heartbeat, a real
state file and the emulator over loopback. How long a block lasts is measured by
``bench/scale.py --adds``, not here.
"""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.daemon import Heartbeat
from heartbeat.errors import InvalidJobId
from heartbeat.outcomes import Outcome, Success
from heartbeat.scheduler import Scheduler
from heartbeat.state import FILENAME
from heartbeat.statefile import encode
from tests.conftest import ES
from tests.helpers_control import QUIET
from tests.support import make_config


async def ok(_job_id: str) -> Outcome:
    return Success(200)


def scheduler(clock: ManualClock) -> Scheduler:
    return Scheduler(
        ok,
        schedule=ScheduleSettings(interval=60.0, jitter=0.0, ramp_rate=100.0),
        backoff_settings=BackoffSettings(),
        clock=clock,
        rng=lambda: 0.5,
    )


class Sampler:
    """Records ``len(target)`` at every turn of the event loop until stopped."""

    def __init__(self, target: Scheduler | Heartbeat) -> None:
        self.target = target
        self.sizes: list[int] = []
        self.stopped = False

    def size(self) -> int:
        target = self.target
        return len(target.scheduler if isinstance(target, Heartbeat) else target)

    async def run(self) -> None:
        while not self.stopped:
            self.sizes.append(self.size())
            await anyio.lowlevel.checkpoint()

    def between(self, total: int) -> set[int]:
        """The sizes seen while some but not all ids were watched."""
        return {size for size in self.sizes if 0 < size < total}


IDS = [f"job-{n:06d}" for n in range(2_500)]


async def test_chunked_adds_keep_every_id_and_the_same_ramp() -> None:
    chunked, plain = ManualClock(start=1000.0), ManualClock(start=1000.0)
    a, b = scheduler(chunked), scheduler(plain)
    with capture_logs() as logs:
        assert await a.watchlist.watch_many_async(IDS, "config", chunk=100) == len(IDS)
    b.watchlist.watch_many(IDS, "config")
    assert a.watchlist.job_ids() == IDS
    assert [v.next_due for v in a.watchlist.jobs()] == [v.next_due for v in b.watchlist.jobs()]
    added = [entry for entry in logs if entry["event"] == "job_added"]
    assert [entry["count"] for entry in added] == [len(IDS)]  # one line for the lot
    # Again: nothing new, and a second source's claim reaches every job.
    assert await a.watchlist.watch_many_async(IDS, "control", chunk=100) == 0
    assert set(a.watchlist.claims().values()) == {("config", "control")}


async def test_the_loop_runs_between_chunks() -> None:
    a = scheduler(ManualClock(start=1000.0))
    sampler = Sampler(a)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        await anyio.lowlevel.checkpoint()
        await a.watchlist.watch_many_async(IDS, "config", chunk=100)
        sampler.stopped = True
    # 25 chunks: the sampler saw the list after each of the first 24.
    assert {n * 100 for n in range(1, 25)} <= sampler.between(len(IDS))


async def test_an_invalid_id_in_the_last_chunk_changes_nothing() -> None:
    # Ids are validated where they enter (here the library API), the watch list trusts.
    hb = Heartbeat(make_config("http://127.0.0.1:9"))
    with pytest.raises(InvalidJobId):
        await hb.watch_many_async([*IDS, "bad\x00id"], "config")
    assert len(hb.scheduler) == 0


def test_an_embedders_replace_claims_validates_and_changes_nothing_on_a_bad_id() -> None:
    # hb.replace_claims is library API (docs/embedding.md): ids enter there, as with
    # watch_many; a source's own, already checked ids go through replace_valid_claims.
    hb = Heartbeat(make_config("http://127.0.0.1:9"))
    assert hb.replace_claims("mine", ["a", "b"]) == (2, 0)
    for bad in ("bad\x00id", "x" * 600, ""):
        with pytest.raises(InvalidJobId):
            hb.replace_claims("mine", ["c", bad])
    assert hb.claimed("mine") == {"a", "b"}
    assert hb.replace_claims("mine", ["b", "c"]) == (1, 1)
    assert hb.claimed("mine") == {"b", "c"}


async def test_ids_from_the_config_and_the_state_file_are_added_in_chunks(
    es: ES, tmp_path: Path
) -> None:
    config_ids = [f"cfg-{n:06d}" for n in range(25_000)]
    saved_ids = [f"ctl-{n:06d}" for n in range(25_000)]
    state = tmp_path / "state"
    state.mkdir()
    (state / FILENAME).write_bytes(encode(dict.fromkeys(saved_ids, ("control",))))
    hb = Heartbeat(make_config(es.url, QUIET, jobs={"ids": config_ids}, state={"dir": state}))
    sampler = Sampler(hb)
    total = len(config_ids) + len(saved_ids)
    with capture_logs(), anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            async with hb:
                hb.scheduler.pause()
                assert set(hb.scheduler.watchlist.job_ids()) == {*config_ids, *saved_ids}
                sampler.stopped = True
    between = sampler.between(total)
    # The state file's ids, then the configuration's, ADD_CHUNK (2,000) at a time.
    assert {10_000, 20_000, 25_000, 35_000, 45_000} <= between


async def test_a_long_list_leaves_the_garbage_collectors_sight() -> None:
    # Its full collections, each over every object so far, were the seconds-long
    # blocks of a million-job add (bench/scale.py --adds); frozen objects are skipped.
    a = scheduler(ManualClock(start=1000.0))
    before = gc.get_freeze_count()
    await a.watchlist.watch_many_async(IDS, "config", chunk=100)
    assert gc.get_freeze_count() - before >= 2 * len(IDS)  # each job and its heap entry


async def test_renewing_a_long_list_freezes_nothing() -> None:
    # A lease holder that POSTs its whole list every minute must not move whatever is
    # alive at that moment out of the collector's sight each time: in a daemon that runs
    # for months, objects that later become cyclic garbage would never be freed.
    a = scheduler(ManualClock(start=1000.0))
    await a.watchlist.watch_many_async(IDS, "config", chunk=100)
    gc.unfreeze()
    await a.watchlist.watch_many_async(IDS, "control", chunk=100)
    await a.watchlist.watch_many_async(IDS, "config", chunk=100)
    assert gc.get_freeze_count() == 0
    assert len(a) == len(IDS)


def test_equal_due_times_and_left_over_entries_take_each_job_once() -> None:
    # Heap entries are (due, id, job), no sequence number per entry (40 bytes a job):
    # equal due times fall back on the id, and an entry left from an earlier due time,
    # or a second one at the same time, is skipped.
    clock = ManualClock(start=1000.0)
    a = scheduler(clock)
    a.watchlist.watch_many(["b", "a", "c"], "config")
    due = clock.monotonic()
    jobs = {job.id: job for job in a.watchlist.records()}
    for job in jobs.values():
        a.deadlines.push(job, due)  # all three due at the same instant
    a.deadlines.push(jobs["b"], due)  # b twice at that time
    a.deadlines.push(jobs["c"], due + 50.0)  # c moved later: its entry at `due` is left over
    taken = []
    while (job := a._take_due(due)) is not None:
        taken.append(job.id)
    assert taken == ["a", "b"]
    assert [job.id for job in iter(lambda: a._take_due(due + 50.0), None)] == ["c"]
