"""Timer slack: the scheduler's loop wakes once per tick and grants everything due by
then together, rather than once per due job. On a manual clock: exact grant times,
never a job granted before it is due, and never later than the slack."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.outcomes import Outcome, Success
from heartbeat.scheduler import TIMER_SLACK, Scheduler

T0 = 1000.0


async def test_jobs_due_within_the_slack_are_granted_in_one_wake_up() -> None:
    clock = ManualClock(start=T0)
    granted: list[tuple[float, str]] = []

    async def check_in(job_id: str) -> Outcome:
        granted.append((round(clock.monotonic() - T0, 6), job_id))
        return Success(200)

    scheduler = Scheduler(
        check_in,
        schedule=ScheduleSettings(interval=3600.0, jitter=0.0, ramp_rate=1000.0),
        backoff_settings=BackoffSettings(),
        clock=clock,
        timer_slack=TIMER_SLACK,
    )
    ids = [f"job-{n:02d}" for n in range(50)]  # due 1 ms apart: 0, 1, ..., 49 ms
    scheduler.watchlist.watch_many(ids, "test")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            for _ in range(70):  # 1 ms at a time, to 70 ms
                await clock.advance(0.001)
                for _ in range(20):
                    await anyio.lowlevel.checkpoint()
            scheduler.stop()
    assert [job_id for _, job_id in granted] == ids  # every job, oldest first
    times = sorted({t for t, _ in granted})
    # Wake-ups: at 0 (job 0), then about 20 ms after each first due job (the clock
    # moves 1 ms at a time here): four wake-ups for 50 jobs, not 50.
    assert len(times) == 4, times
    for started, job_id in granted:
        due = int(job_id[4:]) / 1000
        assert due <= started + 1e-9, (job_id, started)
        assert started - due <= TIMER_SLACK + 0.001 + 1e-9, (job_id, started)
