"""The scheduler on a manual clock: exact due times, fairness, outcomes, outage mode.

The check-in function is a scripted coroutine here (the HTTP side is tested against
the emulator in test_client.py); time only moves when the test advances it.
"""

from __future__ import annotations

from collections import defaultdict

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, Config, ElasticsearchSettings, ScheduleSettings
from heartbeat.daemon import Heartbeat
from heartbeat.outage import RECOVERY_SPREAD
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Rejected,
    Retryable,
    Unauthorized,
)
from heartbeat.scheduler import Scheduler
from tests.helpers_scheduler import OK, T0, Script, make, run_until, scheduling

UNAVAILABLE = Retryable("http", "unavailable", status=503)
REFUSED = Retryable("connection", "connection refused")


async def test_success_schedule_is_exact_and_does_not_drift(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 200)
    assert script.times("job-a") == [0, 60, 120, 180]


async def test_jitter_stays_within_bounds(clock: ManualClock, script: Script) -> None:
    values = iter([0.0, 1.0, 0.0, 1.0])
    scheduler = make(clock, script, rng=lambda: next(values, 0.5), jitter=0.1)
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 200)
    # anchors 60, 120, 180; offsets -6, +6, -6 around them.
    assert script.times("job-a") == [0, 54, 126, 174]


async def test_retry_delays_exact_sequence(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script, jitter=0.0)
    limited = Retryable("http", "too many requests", status=429, retry_after=5.0)
    script.script("job-a", UNAVAILABLE, limited, OK)
    scheduler.watchlist.watch("job-a")
    scheduler.watchlist.watch("job-b")  # succeeds: keeps the cluster out of outage mode
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 61)
    # 0: 503 -> full jitter of 1 s at u=0.5: 0.5 s; 0.5: 429 with Retry-After 5 s
    # (jitter gives 1 s, Retry-After wins): 5.5; success there; next due 0 + 60.
    assert script.times("job-a") == [0, 0.5, 5.5, 60]


async def test_not_found_drops_the_job_and_logs_once(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script)
    gone = NotFound("connector sync job [gone] not found")
    script.script("gone", gone, gone)
    scheduler.watchlist.watch("gone")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 5)
            assert scheduler.pending_drops == 1
            await run_until(clock, scheduler, 300)
    # The first 404 marks it; a second one, drop_confirm_after (10 s) later, drops it.
    assert script.times("gone") == [0, 10]
    assert "gone" not in scheduler
    assert scheduler.pending_drops == 0
    dropped = [e for e in logs if e["event"] == "job_dropped"]
    assert dropped == [
        {
            "event": "job_dropped",
            "log_level": "warning",
            "job_id": "gone",
            "reason": "not_found",
            "status": 404,
            "server_reason": "connector sync job [gone] not found",
        }
    ]


async def test_rejected_drops_the_job(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script)
    script.script("bad", Rejected(400, "request body is not supported"))
    scheduler.watchlist.watch("bad")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 100)
    assert "bad" not in scheduler
    assert [(e["reason"], e["status"]) for e in logs if e["event"] == "job_dropped"] == [
        ("rejected", 400)
    ]


async def test_misrouted_404_never_drops(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script, jitter=0.0)
    proxy = Misrouted(404, "404 without X-Elastic-Product: <html>")
    script.script("job-a", proxy, proxy)
    scheduler.watchlist.watch("job-a")
    scheduler.watchlist.watch("job-b")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 61)
    assert "job-a" in scheduler
    assert script.times("job-a") == [0, 0.5, 1.5, 60]
    failed = [e for e in logs if e["event"] == "checkin_failed"]
    assert failed[0]["reason"] == "misrouted"
    assert not [e for e in logs if e["event"] == "job_dropped"]


async def test_unauthorized_is_logged_once_and_jobs_are_kept(
    clock: ManualClock, script: Script
) -> None:
    denied = Unauthorized(403, "action [...] is unauthorized for API key id [k]")
    script.default = denied
    scheduler = make(clock, script)
    scheduler.watchlist.watch_many([f"job-{n}" for n in range(5)], "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 250)
    assert len(scheduler) == 5
    events = [e for e in logs if e["event"] == "elasticsearch_unauthorized"]
    assert len(events) == 1
    assert "manage_connector" in events[0]["needed"]
    assert ".elastic-connectors-sync-jobs" in events[0]["needed"]


async def test_grants_in_due_order_within_the_in_flight_limit(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, max_in_flight=2, ramp_rate=1000.0)
    script.gate = anyio.Event()
    ids = [f"job-{n}" for n in range(6)]
    scheduler.watchlist.watch_many(ids, "test")
    async with scheduling(scheduler):
        await clock.advance(1)
        assert [job for _, job in script.calls] == ids[:2]
        assert scheduler.in_flight == 2
        script.gate.set()
        await clock.advance(0)
    assert [job for _, job in script.calls] == ids
    assert script.peak == 2


async def test_one_request_per_job_even_when_it_outlasts_the_interval(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0, interval=10.0, idle_after=30.0)
    script.gate = anyio.Event()
    scheduler.watchlist.watch("slow")
    async with scheduling(scheduler):
        for _ in range(5):
            await clock.advance(10)
        assert script.times("slow") == [0]
        script.gate.set()
        await clock.advance(0)
    assert len(script.calls) == 1


async def test_a_slot_freed_with_nothing_due_still_wakes_the_loop(
    clock: ManualClock, script: Script
) -> None:
    # While every slot is busy the loop ignores the heap and sleeps until its next
    # periodic task. The worker that frees the slot, finding nothing due yet, must wake
    # it, or job-b (due at 1) waits for that periodic task (at 10).
    scheduler = make(clock, script, jitter=0.0, max_in_flight=1, ramp_rate=1.0)
    scheduler.add_periodic(10.0, lambda _now: None)
    script.gate = anyio.Event()
    scheduler.watchlist.watch_many(["job-a", "job-b"], "test")
    async with scheduling(scheduler):
        await clock.advance(0.5)
        assert scheduler.in_flight == 1
        script.gate.set()
        await clock.advance(0)
        await run_until(clock, scheduler, 70)
    assert script.times("job-a") == [0, 60]
    assert script.times("job-b") == [1, 61]


async def test_a_job_waiting_for_a_slot_goes_as_soon_as_one_frees(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0, max_in_flight=1)
    script.gate = anyio.Event()
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await clock.advance(1)
        scheduler.watchlist.watch("job-b")
        await clock.advance(1)
        assert script.times("job-b") == []
        script.gate.set()
        await clock.advance(0)
        await run_until(clock, scheduler, 130)
    assert script.times("job-a") == [0, 60, 120]
    # Due at 1, sent at 2 when the slot freed; then on its own schedule, from 1.
    assert script.times("job-b") == [2, 61, 121]


async def test_a_batch_is_ramped_not_burst(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script, ramp_rate=1000.0)
    scheduler.watchlist.watch_many([f"job-{n}" for n in range(10_000)], "test")
    assert scheduler.next_due() == T0
    dues = sorted(job.next_due for job in scheduler.watchlist.jobs() if job.next_due is not None)
    offset = clock.wall() - clock.monotonic()
    assert dues[-1] - offset - T0 == pytest.approx(9.999)
    async with scheduling(scheduler):
        await clock.advance(1.0)
        for _ in range(50):  # time stands still; let the loop work through what is due
            await clock.advance(0)
        # About one second's worth of the ramp, not the whole batch.
        assert 990 <= len(script.calls) <= 1010


async def test_failing_job_gets_three_attempts_before_idle(
    clock: ManualClock, script: Script
) -> None:
    """Even with the server asking for long pauses, the idle cap squeezes in retries."""
    conflict = Retryable("http", "version conflict", status=409, retry_after=600, job_specific=True)
    script.script("job-a", OK, *[conflict] * 20)
    scheduler = make(clock, script, jitter=0.0, rng=lambda: 0.999)
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 299)
    attempts_after_success = [t for t in script.times("job-a") if 0 < t < 300]
    assert len(attempts_after_success) >= 4  # the 60 s check-in plus three retries


async def test_outage_mode_probes_one_at_a_time_and_recovers_spread(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0, max_in_flight=8)
    ids = [f"job-{n:03}" for n in range(100)]
    scheduler.watchlist.watch_many(ids, "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 59)  # all checked in once
            assert len(script.calls) == 100
            script.default = REFUSED
            await run_until(clock, scheduler, 180)
            during = [t for t, _ in script.calls if t > T0 + 60]
            assert scheduler.in_outage
            assert script.peak <= 8
            # Outage declared after 8 failures; then one probe at a time,
            # backing off, never more often than the probe cap allows.
            assert len(during) < 8 + 20
            script.default = OK
            outage_calls = len(script.calls)
            # The next probe comes within the probe cap (30 s); then the spread.
            await run_until(clock, scheduler, 180 + 30 + 60 * RECOVERY_SPREAD + 1)
            recovered_calls = script.calls[outage_calls:]
    assert not scheduler.in_outage
    assert {job for _, job in recovered_calls} == set(ids)
    events = [e["event"] for e in logs]
    assert events.count("elasticsearch_unreachable") == 1
    assert events.count("elasticsearch_recovered") == 1
    assert events.count("checkin_failed") <= 2
    recovered = next(e for e in logs if e["event"] == "elasticsearch_recovered")
    assert recovered["duration_s"] > 0
    # Spread: no second holds more than a fair share of the 100 recovery check-ins.
    per_second: dict[int, int] = defaultdict(int)
    for t, _ in recovered_calls:
        per_second[int(t)] += 1
    assert max(per_second.values()) <= 5


async def test_failures_across_jobs_are_aggregated(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script, jitter=0.0)
    failing = [f"bad-{n}" for n in range(10)]
    for job_id in failing:
        script.script(job_id, UNAVAILABLE)
    interleaved = [
        x for pair in zip(failing, [f"ok-{n}" for n in range(10)], strict=True) for x in pair
    ]
    scheduler.watchlist.watch_many(interleaved, "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 61)
    failed = [e for e in logs if e["event"] == "checkin_failed"]
    assert len(failed) == 2
    assert failed[0]["job_id"] == "bad-0"
    assert failed[1]["failures"] == 9
    assert failed[1]["jobs"] == 9
    assert not scheduler.in_outage


async def test_unwatch_while_in_flight_stops_the_job(clock: ManualClock, script: Script) -> None:
    scheduler = make(clock, script)
    script.gate = anyio.Event()
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await clock.advance(0)
        assert scheduler.watchlist.unwatch("job-a")
        script.gate.set()
        await run_until(clock, scheduler, 300)
    assert script.times("job-a") == [0]
    assert scheduler.watchlist.jobs() == []


async def test_shorter_interval_on_reconfigure_takes_effect_at_once(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    scheduler.watchlist.watch("job-a")
    async with scheduling(scheduler):
        await clock.advance(1)
        scheduler.reconfigure(
            schedule=ScheduleSettings(interval=10.0, jitter=0.0),
            backoff_settings=BackoffSettings(),
        )
        await run_until(clock, scheduler, 25)
    assert script.times("job-a") == [0, 11, 21]


async def test_invalid_ids_are_refused_before_anything_changes() -> None:
    # The scheduler and its watch list trust their ids: each is validated once, where
    # it enters (heartbeat.jobid); for an embedder, that is Heartbeat's library API.
    hb = Heartbeat(Config(elasticsearch=ElasticsearchSettings(hosts=["http://127.0.0.1:9"])))
    with pytest.raises(ValueError, match="empty"):
        hb.watch_many(["ok", ""], "test")
    assert len(hb.scheduler) == 0


async def test_the_readme_pressure_figure(clock: ManualClock, script: Script) -> None:
    """docs/reliability.md: with 1,000 jobs, the defaults and a 60 s outage, heartbeat
    sends at most 2 x max_in_flight + 10 probes requests (steady state would be 1,000)."""
    import random

    rng = random.Random(7)
    scheduler = Scheduler(
        script,
        schedule=ScheduleSettings(),
        backoff_settings=BackoffSettings(),
        clock=clock,
        rng=rng.random,
    )
    scheduler.watchlist.watch_many([f"job-{n:04}" for n in range(1000)], "test")
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 70)
        script.default = REFUSED
        before = len(script.calls)
        await run_until(clock, scheduler, 130)
        during = len(script.calls) - before
    assert scheduler.in_outage
    assert during <= 2 * 32 + 10, during


async def test_one_sick_job_backs_off_alone_without_an_outage(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    script.script("sick", *[UNAVAILABLE] * 20)
    scheduler.watchlist.watch_many(["sick", "job-b"], "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 61)
            assert not scheduler.in_outage
    # Its own backoff (full jitter at u=0.5 of 1, 2, 4 ... s), however many failures
    # in a row: they all come from one job.
    assert script.times("sick")[:6] == [0, 0.5, 1.5, 3.5, 7.5, 15.5]
    assert script.times("job-b") == [0.001, 60.001]
    assert not [e for e in logs if e["event"] == "elasticsearch_unreachable"]


async def test_failures_from_distinct_jobs_declare_the_outage(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    script.default = UNAVAILABLE
    scheduler.watchlist.watch_many(["job-a", "job-b", "job-c", "job-d"], "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 1)
            assert scheduler.in_outage
    [outage] = [e for e in logs if e["event"] == "elasticsearch_unreachable"]
    assert (outage["failing_jobs"], outage["cause"], outage["reached"]) == (
        3,
        "unreachable",
        False,
    )


async def test_a_404_that_lasts_less_than_drop_confirm_after_drops_nothing(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0, drop_confirm_after=5.0)
    script.script("blip", NotFound("connector sync job [blip] not found"))  # then OK
    scheduler.watchlist.watch("blip")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 61)
    assert "blip" in scheduler
    assert scheduler.pending_drops == 0
    # Checked again 5 s later, succeeded: back on its schedule (0 + 60).
    assert script.times("blip") == [0, 5, 60]
    assert not [e for e in logs if e["event"] == "job_dropped"]
    [first] = [e for e in logs if e["event"] == "checkin_failed"]
    assert (first["reason"], first["job_id"]) == ("not_found", "blip")


async def test_a_storm_of_404s_drops_nothing_before_idle_after(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0, idle_after=300.0)
    ids = [f"job-{n:02}" for n in range(20)]
    scheduler.watchlist.watch_many(ids, "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 59)
            script.default = NotFound("connector sync job [x] not found")  # index gone
            await run_until(clock, scheduler, 299)
            assert len(scheduler) == 20
            assert scheduler.pending_drops == 20
            await run_until(clock, scheduler, 400)
    # Checked in every interval meanwhile; dropped once their 404s lasted idle_after.
    times = script.times("job-00")
    assert times[:4] == [0, 60, 70, 120]  # on its usual schedule
    assert len(scheduler) == 0
    storm = [e for e in logs if e["event"] == "drop_storm_deferred"]
    assert len(storm) == 1
    assert storm[0]["watched"] == 20
    dropped = [e for e in logs if e["event"] == "job_dropped"]
    assert len(dropped) == 20
    assert scheduler.pending_drops == 0


async def test_a_few_404s_among_many_jobs_are_dropped_after_confirmation(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, jitter=0.0)
    ids = [f"job-{n:02}" for n in range(30)]
    gone = NotFound("connector sync job [x] not found")
    for job_id in ids[:12]:  # a connector deleted with its 12 jobs: not half the list
        script.script(job_id, gone, gone)
    scheduler.watchlist.watch_many(ids, "test")
    with capture_logs() as logs:
        async with scheduling(scheduler):
            await run_until(clock, scheduler, 20)
    assert len(scheduler) == 18
    assert not [e for e in logs if e["event"] == "drop_storm_deferred"]


async def test_the_start_up_ramp_checks_in_the_oldest_success_first(
    clock: ManualClock, script: Script
) -> None:
    scheduler = make(clock, script, ramp_rate=10.0)
    scheduler.watchlist.watch_many(["fresh", "never", "stale", "older"], "state")
    wall = clock.wall()
    # As restored from the state file: last successes 10 s, 250 s and 100 s ago.
    scheduler.watchlist.restore_outcome("fresh", wall - 10, 0, None)
    scheduler.watchlist.restore_outcome("stale", wall - 250, 3, "timeout: no answer within 10 s")
    scheduler.watchlist.restore_outcome("older", wall - 100, 0, None)
    scheduler.ramp_oldest_first()
    async with scheduling(scheduler):
        await run_until(clock, scheduler, 1)
    # Never succeeded first, then the oldest success; 0.1 s apart (ramp_rate 10/s).
    assert [job for _, job in script.calls] == ["never", "stale", "older", "fresh"]
    assert [round(t - T0, 6) for t, _ in script.calls] == [0, 0.1, 0.2, 0.3]
    view = scheduler.watchlist.job("fresh")
    assert view is not None and view.consecutive_failures == 0
