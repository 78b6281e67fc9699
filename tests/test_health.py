"""/livez, /readyz and the event-loop lag monitor, over real HTTP against the emulator."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.clock import ManualClock
from heartbeat.emulator import Fault
from heartbeat.health import LIVENESS_TIMEOUT, LagMonitor, assess
from tests.conftest import ES
from tests.helpers_http import LISTENER, get_json, one_job_at_risk, parse, sample
from tests.support import free_port, make_config, running, until

pytestmark = pytest.mark.timeout(30)


async def wait_for_json(hb: Any, path: str, status: int, **expected: Any) -> dict[str, Any]:
    """Poll ``path`` until it answers ``status`` with ``expected`` fields in its body."""
    last: tuple[int, Any] = (0, None)

    async def check() -> bool:
        nonlocal last
        last = await get_json(hb, path)
        answer, body = last
        return answer == status and all(body.get(k) == v for k, v in expected.items())

    try:
        await until(check, every=0.02)
    except TimeoutError:
        raise AssertionError(f"{path} is {last}, waited for {status} {expected}") from None
    body: dict[str, Any] = last[1]
    return body


async def until_outage(hb: Any) -> None:
    async def check() -> bool:
        return bool(hb.scheduler.in_outage)

    await until(check)


# --- assess(): the pure part -------------------------------------------------------------


def test_assess_counts_jobs_past_half_idle_after() -> None:
    risk = assess([100.0, 140.0, 151.0, 199.0], now=300.0, idle_after=300.0)
    assert (risk.jobs, risk.at_risk, risk.oldest_age) == (4, 2, 200.0)


def test_assess_without_jobs() -> None:
    risk = assess([], now=300.0, idle_after=300.0)
    assert (risk.jobs, risk.at_risk, risk.oldest_age) == (0, 0, 0.0)


# --- /livez ------------------------------------------------------------------------------


async def test_livez_follows_the_scheduler_ticks(es: ES) -> None:
    clock = ManualClock()
    async with running(make_config(es.url, LISTENER), clock=clock) as (hb, _):
        status, body = await get_json(hb, "/livez")
        assert (status, body) == (200, {"live": True, "last_tick_age_seconds": 0})
        # Time jumps, but the scheduler loop runs and ticks: still live.
        await clock.advance(LIVENESS_TIMEOUT + 1)
        status, body = await get_json(hb, "/livez")
        assert (status, body["live"]) == (200, True)
        # A scheduler that no longer runs no longer ticks.
        hb.scheduler.stop()
        await clock.advance(LIVENESS_TIMEOUT + 1)
        status, body = await get_json(hb, "/livez")
    assert status == 503
    assert body == {
        "live": False,
        "reason": "scheduler_stalled",
        "last_tick_age_seconds": LIVENESS_TIMEOUT + 1,
    }


# --- /readyz -----------------------------------------------------------------------------


async def test_readyz_through_an_outage(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    es.emu.always(Fault(status=503))
    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_unreachable")
        assert body["ready"] is False
        assert body["elasticsearch"] == "unreachable"
        es.emu.always(None)
        body = await wait_for_json(hb, "/readyz", 200)
    assert body["elasticsearch"] == "ok"
    assert body["ready"] is True
    assert body["reason"] is None
    assert (body["jobs"], body["jobs_at_risk"]) == (1, 0)


@pytest.mark.parametrize("jobs", [["job-a"], [f"job-{n}" for n in range(5)]])
async def test_readyz_says_unauthorized_for_a_403_not_unreachable(es: ES, jobs: list[str]) -> None:
    for job_id in jobs:
        es.emu.create_job(job_id=job_id)
    es.emu.privileges = "monitor"  # reads only: every check-in answers 403
    with capture_logs() as logs:
        async with running(make_config(es.url, LISTENER, jobs={"ids": jobs})) as (hb, _):
            body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_unauthorized")
            assert body["elasticsearch"] == "unauthorized"
            await until_outage(hb)
            # Still unauthorized, not unreachable, once in outage mode.
            body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_unauthorized")
            assert "unauthorized" in hb.summary()
            es.emu.privileges = "manage"
            await wait_for_json(hb, "/readyz", 200)
    [outage] = [e for e in logs if e["event"] == "elasticsearch_unreachable"]
    assert (outage["cause"], outage["reached"], outage["reason"]) == (
        "unauthorized",
        True,
        "unauthorized_403",
    )


async def test_readyz_says_misrouted_for_a_wrong_path_prefix(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    # Elasticsearch itself answers 400 "no handler found for uri": not our endpoint.
    with capture_logs() as logs:
        async with running(
            make_config(es.url + "/wrong-prefix", LISTENER, jobs={"ids": ["job-a"]})
        ) as (hb, _):
            body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_misrouted")
            assert body["elasticsearch"] == "misrouted"
            await until_outage(hb)
            body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_misrouted")
    assert "job-a" in {job.id for job in hb.jobs()}
    [outage] = [e for e in logs if e["event"] == "elasticsearch_unreachable"]
    assert (outage["cause"], outage["reached"]) == ("misrouted", True)


async def test_the_outage_line_says_when_nothing_was_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    with capture_logs() as logs:
        async with running(make_config(url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
            body = await wait_for_json(hb, "/readyz", 503, reason="elasticsearch_unreachable")
    assert body["elasticsearch"] == "unreachable"
    [outage] = [e for e in logs if e["event"] == "elasticsearch_unreachable"]
    assert (outage["cause"], outage["reached"], outage["reason"]) == (
        "unreachable",
        False,
        "connection",
    )


async def test_readyz_while_a_job_is_at_risk(es: ES) -> None:
    async with one_job_at_risk(es) as hb:
        body = await wait_for_json(hb, "/readyz", 503, reason="jobs_at_risk")
        assert body["jobs_at_risk"] == 1
        assert body["elasticsearch"] == "ok"
        assert body["oldest_checkin_age_seconds"] >= 1.0
        es.emu.always(None, job_id="job-b")
        body = await wait_for_json(hb, "/readyz", 200)
    assert body["jobs_at_risk"] == 0


async def test_readyz_before_the_first_answer(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    es.emu.script([Fault(delay=0.5)], job_id="job-a")
    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        status, body = await get_json(hb, "/readyz")
        assert (status, body["reason"], body["elasticsearch"]) == (
            503,
            "elasticsearch_not_contacted",
            "unknown",
        )
        await wait_for_json(hb, "/readyz", 200)


async def test_readyz_with_nothing_to_watch() -> None:
    # Nothing is late when nothing is watched, whatever state Elasticsearch is in.
    async with running(make_config(f"http://127.0.0.1:{free_port()}", LISTENER)) as (hb, _):
        status, body = await get_json(hb, "/readyz")
    assert status == 200
    assert body == {
        "ready": True,
        "reason": None,
        "elasticsearch": "unknown",
        "jobs": 0,
        "jobs_at_risk": 0,
        "oldest_checkin_age_seconds": 0.0,
    }


# --- event-loop lag ----------------------------------------------------------------------


def test_lagging_is_logged_once_per_episode() -> None:
    monitor = LagMonitor()
    with capture_logs() as logs:
        for now, lag in [(1, 0.0), (2, 1.5), (3, 1.2), (4, 0.8), (5, 0.3), (6, 0.9), (7, 1.1)]:
            monitor.observe(lag, now)
    assert logs == [
        {"event": "event_loop_lagging", "log_level": "warning", "lag_s": 1.5},
        {"event": "event_loop_recovered", "log_level": "info", "duration_s": 4.5, "max_lag_s": 1.5},
        {"event": "event_loop_lagging", "log_level": "warning", "lag_s": 1.1},
    ]
    assert monitor.lag == 1.1


async def test_a_blocked_loop_is_measured_and_logged(es: ES) -> None:
    with capture_logs() as logs:
        async with running(make_config(es.url, LISTENER)) as (hb, _):
            await anyio.sleep(0.1)
            time.sleep(1.5)  # noqa: ASYNC251 -- blocking the loop is the point
            with anyio.fail_after(5):
                while not any(entry["event"] == "event_loop_lagging" for entry in logs):
                    await anyio.sleep(0.01)
            # Read at once, before the next measurement replaces it.
            lag = sample(
                parse(hb.metrics.exposition()[0].decode()), "heartbeat_event_loop_lag_seconds"
            )
            with anyio.fail_after(5):
                while not any(entry["event"] == "event_loop_recovered" for entry in logs):
                    await anyio.sleep(0.01)
    lagging = [entry for entry in logs if entry["event"] == "event_loop_lagging"]
    assert len(lagging) == 1
    assert 1.0 < lagging[0]["lag_s"] < 5.0
    assert lag is not None
    assert lag == pytest.approx(lagging[0]["lag_s"], abs=0.001)
    assert hb.health.lag_monitor.lag < 1.0
