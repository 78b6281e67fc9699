"""The scheduler's pause (the worker is down) and per-job hold (its document is being
read), on a manual clock: exact times of the check-ins that go out, and none that do not.
"""

from __future__ import annotations

from heartbeat.clock import ManualClock
from tests.helpers_scheduler import Script, make, run_until, scheduling


async def test_paused_nothing_is_checked_in_and_resume_checks_in_at_once(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    scheduler.watchlist.watch_many(["a", "b"], "api")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 121)
        assert script.times("a") == [0.0, 60.0, 120.0]
        assert script.times("b") == [0.001, 60.001, 120.001]
        scheduler.pause()
        await run_until(clock, scheduler, 300)
        assert script.times("a") == [0.0, 60.0, 120.0]  # nothing while paused
        assert len(scheduler) == 2  # paused, not unwatched
        scheduler.resume()
        await run_until(clock, scheduler, 301)
        # Overdue since 180: both go out at once on resume, then every interval.
        assert script.times("a")[3:] == [300.0]
        assert script.times("b")[3:] == [300.0]
        await run_until(clock, scheduler, 421)
        assert script.times("a")[3:] == [300.0, 360.0, 420.0]


async def test_a_held_job_waits_and_the_others_do_not(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script, jitter=0.0)
    scheduler.watchlist.watch("held", "api")
    assert scheduler.hold("held")
    scheduler.watchlist.watch("free", "api")
    assert not scheduler.hold("not-watched")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 90)
        assert script.times("held") == []
        assert script.times("free") == [0.001, 60.001]
        scheduler.release("held")
        await run_until(clock, scheduler, 151)
        # Overdue: checked in on release, then every interval from there.
        assert script.times("held") == [90.0, 150.0]
        scheduler.release("held")  # releasing twice changes nothing
        await run_until(clock, scheduler, 211)
        assert script.times("held") == [90.0, 150.0, 210.0]


async def test_a_job_held_before_its_due_time_goes_out_on_time_when_released(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    scheduler.watchlist.watch("job", "api")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 10)
        assert script.times("job") == [0.0]
        scheduler.hold("job")
        await clock.advance(5)
        scheduler.release("job")
        await run_until(clock, scheduler, 61)
        assert script.times("job") == [0.0, 60.0]
