"""Finished jobs: status reads spread over the interval, and what each answer does."""

from __future__ import annotations

from typing import Any

import anyio
from structlog.testing import capture_logs

from heartbeat.changes import Change, JobDropped
from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, Config, ScheduleSettings
from heartbeat.daemon import Heartbeat
from heartbeat.emulator import Fault
from heartbeat.finished import StatusChecker
from heartbeat.outcomes import Misrouted, NotFound, Outcome, Retryable, Success
from tests.conftest import ES
from tests.support import until

T0 = 1000.0


class Reads:
    """A scripted ``get_job``: a status per job (or an outcome), calls recorded."""

    def __init__(self, clock: ManualClock, answers: dict[str, dict[str, Any] | Outcome]) -> None:
        self.clock = clock
        self.answers = answers
        self.calls: list[tuple[float, str]] = []
        self.gate: anyio.Event | None = None
        self.active = 0
        self.peak = 0

    async def __call__(self, job_id: str) -> dict[str, Any] | Outcome:
        self.calls.append((round(self.clock.monotonic() - T0, 6), job_id))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.active -= 1
        return self.answers.get(job_id, {"status": "in_progress"})


async def never_called(job_id: str) -> Outcome:
    raise AssertionError("the scheduler loop does not run in these tests")


def make(clock: ManualClock, reads: Reads, interval: float) -> tuple[Any, StatusChecker]:
    from heartbeat.scheduler import Scheduler

    scheduler = Scheduler(
        never_called,
        schedule=ScheduleSettings(),
        backoff_settings=BackoffSettings(),
        clock=clock,
    )
    return scheduler, StatusChecker(reads, scheduler, interval)


async def advance_to(clock: ManualClock, until: float, step: float = 10.0) -> None:
    while clock.monotonic() < T0 + until:
        await clock.advance(step)


async def test_reads_are_spread_over_the_interval_and_finished_jobs_dropped() -> None:
    clock = ManualClock(start=T0)
    reads = Reads(clock, {"b": {"status": "canceling"}, "c": {"status": "completed"}})
    scheduler, checker = make(clock, reads, 300.0)
    scheduler.watchlist.watch_many(["a", "b", "c"], "test")
    changes: list[Change] = []
    scheduler.change_observers.append(changes.append)
    with anyio.fail_after(10), capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(checker.run)
            await clock.advance(0)  # let the first round start at T0
            await advance_to(clock, 650)
            tg.cancel_scope.cancel()
    # Round 1 reads a, b, c at 1/3, 2/3, 3/3 of the interval; b is canceling from 200
    # and dropped at 260 (canceling_grace, 60 s); c is finished, so round 2 (from 300)
    # reads only a, at 600.
    assert reads.calls == [(100, "a"), (200, "b"), (300, "c"), (600, "a")]
    assert scheduler.watchlist.job_ids() == ["a"]
    dropped = [e for e in logs if e["event"] == "job_dropped"]
    assert dropped == [
        {
            "event": "job_dropped",
            "log_level": "warning",
            "job_id": "b",
            "reason": "finished",
            "job_status": "canceling",
        },
        {
            "event": "job_dropped",
            "log_level": "warning",
            "job_id": "c",
            "reason": "finished",
            "job_status": "completed",
        },
    ]
    assert changes == [
        JobDropped("b", "finished", ("test",), job_status="canceling"),
        JobDropped("c", "finished", ("test",), job_status="completed"),
    ]
    canceling = [e for e in logs if e["event"] == "job_canceling"]
    assert canceling == [{"event": "job_canceling", "log_level": "info", "job_id": "b"}]


async def test_only_a_genuine_not_found_or_a_finished_status_drops() -> None:
    clock = ManualClock(start=T0)
    scheduler, checker = make(clock, Reads(clock, {}), 300.0)
    ids = ["gone", "proxied", "slow", "queued", "canceled", "failed"]
    scheduler.watchlist.watch_many(ids, "test")
    with capture_logs() as logs:
        checker.apply("gone", NotFound("connector sync job [gone] not found"))
        assert "gone" in scheduler  # a first 404 marks it (heartbeat.drops)...
        assert scheduler.pending_drops == 1
        checker.apply("gone", NotFound("connector sync job [gone] not found"))  # ...a second drops
        checker.apply("proxied", Misrouted(404, "404 without X-Elastic-Product: <html>"))
        checker.apply("slow", Retryable("timeout", "no answer within 10 s"))
        checker.apply("queued", {"status": "pending"})
        checker.apply("canceled", {"status": "canceled"})
        checker.apply("failed", {"status": "error"})
        checker.apply("never-watched", {"status": "completed"})
    assert scheduler.watchlist.job_ids() == ["proxied", "slow", "queued"]
    dropped = [
        (e["job_id"], e["reason"], e.get("status"), e.get("job_status"))
        for e in logs
        if e["event"] == "job_dropped"
    ]
    assert dropped == [
        ("gone", "not_found", 404, None),
        ("canceled", "finished", None, "canceled"),
        ("failed", "finished", None, "error"),
    ]


async def test_reads_are_bounded_and_zero_turns_them_off_until_set() -> None:
    clock = ManualClock(start=T0)
    reads = Reads(clock, {})
    reads.gate = anyio.Event()
    scheduler, checker = make(clock, reads, 0.0)
    scheduler.watchlist.watch_many([f"job-{n}" for n in range(10)], "test")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(checker.run)
            await advance_to(clock, 1000, step=100)
            assert reads.calls == []
            checker.set_interval(10.0)
            await advance_to(clock, 1012, step=1)
            # All ten are due by now, but only two reads may be out at once.
            assert len(reads.calls) == 2 and reads.active == 2
            reads.gate.set()
            for _ in range(5):
                await clock.advance(0)
            assert len(reads.calls) == 10
            tg.cancel_scope.cancel()
    assert reads.peak == 2


async def test_no_reads_while_elasticsearch_is_in_outage_mode() -> None:
    clock = ManualClock(start=T0)
    reads = Reads(clock, {})
    scheduler, checker = make(clock, reads, 10.0)
    scheduler.watchlist.watch_many(["a", "b"], "test")
    scheduler.outage_since = T0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(checker.run)
            await clock.advance(0)
            await advance_to(clock, 10, step=1)
            assert reads.calls == []
            scheduler.outage_since = None
            await advance_to(clock, 20, step=1)
            tg.cancel_scope.cancel()
    assert reads.calls == [(15, "a"), (20, "b")]


async def test_the_daemon_reads_statuses_from_elasticsearch(es: ES) -> None:
    emu = es.emu
    ids = {
        status: emu.create_job(status=status, job_id=f"job-{status}")
        for status in ("in_progress", "canceling", "completed")
    }
    gone = "gone"  # deleted in Elasticsearch: its reads and check-ins 404
    proxied = emu.create_job(job_id="proxied")
    emu.always(Fault(status=404, product_header=False, actions=frozenset({"get"})), proxied)
    config = Config(
        elasticsearch={"hosts": [es.url]},
        jobs={"ids": [*ids.values(), gone, proxied]},
        schedule={"status_check_interval": 0.1, "drop_confirm_after": 0.2},
        state={"dir": None},
    )
    with anyio.fail_after(10), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            await until(lambda: len([r for r in emu.requests if r.action == "get"]) >= 15)
            assert set(hb.scheduler.watchlist.job_ids()) == {
                ids["in_progress"],
                ids["canceling"],
                proxied,
            }
            new = config.model_copy(
                update={"schedule": config.schedule.model_copy(update={"status_check_interval": 0})}
            )
            await hb.apply(new)
            assert hb.status_checker.interval == 0
    dropped = {(e["job_id"], e["reason"]) for e in logs if e["event"] == "job_dropped"}
    assert dropped == {(ids["completed"], "finished"), (gone, "not_found")}
    canceling = [e["job_id"] for e in logs if e["event"] == "job_canceling"]
    assert canceling == [ids["canceling"]]


def test_drop_is_public_and_reports_unknown_ids() -> None:
    async def check_in(job_id: str) -> Outcome:
        return Success(200)

    async def main() -> None:
        from heartbeat.scheduler import Scheduler

        scheduler = Scheduler(
            check_in, schedule=ScheduleSettings(), backoff_settings=BackoffSettings()
        )
        scheduler.watchlist.watch_many(["a"], "config")
        scheduler.watchlist.watch("a", "queue")
        assert scheduler.watchlist.drop("a", "finished", job_status="completed") is True
        assert scheduler.watchlist.drop("a", "finished", job_status="completed") is False
        assert len(scheduler) == 0

    anyio.run(main)
