"""The outage rule alone: outcomes in, transitions out, no event loop and no clock
(the times are plain numbers), so each rule is one exact sequence."""

from __future__ import annotations

import pytest

from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.outage import (
    PROBE_CAP_FRACTION,
    PROBE_CAP_OF_INTERVAL,
    RECOVERY_SPREAD,
    Enter,
    OutageRule,
    Probe,
    Recover,
    probe_delay,
    recovery_times,
)
from heartbeat.outcomes import Misrouted, Retryable, Unauthorized

REFUSED = Retryable("connection", "connection refused")
CONFLICT = Retryable("http", "version conflict", status=409, job_specific=True)


def rule(*, max_in_flight: int = 3, u: float = 0.5) -> OutageRule:
    return OutageRule(ScheduleSettings(max_in_flight=max_in_flight), BackoffSettings(), lambda: u)


def test_three_failures_from_three_jobs_enter_and_an_answer_recovers() -> None:
    outage = rule()
    assert outage.failed("a", REFUSED, 10.0, watched=100) is None
    assert outage.failed("b", REFUSED, 11.0, watched=100) is None
    assert outage.contact_ok is None  # two jobs are not yet the cluster failing
    entered = outage.failed("c", REFUSED, 12.0, watched=100)
    assert isinstance(entered, Enter)
    assert (entered.cause, entered.failures, entered.failing_jobs) == ("unreachable", 3, 3)
    assert outage.since == 12.0 and outage.contact_ok is False
    assert entered.probe_at == outage.probe_at > 12.0
    outage.probe_sent()
    outage.probe_sent()
    assert outage.answered(42.0) == Recover(duration=30.0, probes=2)
    assert (outage.since, outage.failures, outage.jobs, outage.cause) == (None, 0, set(), None)
    assert outage.contact_ok is True
    assert outage.answered(43.0) is None  # no outage to end


def test_one_sick_job_never_declares_an_outage() -> None:
    outage = rule()
    for n in range(50):
        assert outage.failed("sick", REFUSED, float(n), watched=100) is None
    assert outage.since is None
    assert outage.contact_ok is None  # readiness follows distinct jobs, not one
    assert outage.jobs == {"sick"} and outage.failures == 50


def test_an_answer_between_failures_starts_the_count_again() -> None:
    outage = rule()
    outage.failed("a", REFUSED, 1.0, watched=100)
    outage.failed("b", REFUSED, 2.0, watched=100)
    outage.answered(3.0)
    assert outage.failed("c", REFUSED, 4.0, watched=100) is None
    assert outage.failures == 1


def test_a_conflict_on_one_document_is_not_a_cluster_failure() -> None:
    outage = rule()
    for job_id in "abcdef":
        assert outage.failed(job_id, CONFLICT, 1.0, watched=100) is None
    assert outage.failures == 0 and outage.since is None


def test_the_cause_is_the_latest_failures() -> None:
    outage = rule()
    outage.failed("a", REFUSED, 1.0, watched=100)
    outage.failed("b", Misrouted(404, "no product header"), 2.0, watched=100)
    entered = outage.failed("c", Unauthorized(401, "bad key"), 3.0, watched=100)
    assert isinstance(entered, Enter) and entered.cause == "unauthorized"
    mismatch = Retryable("cluster_mismatch", "another cluster")
    outage.failed("d", mismatch, 4.0, watched=100)
    assert outage.cause == "cluster_mismatch"


def test_more_in_flight_needs_more_failures_and_few_jobs_fewer() -> None:
    assert rule(max_in_flight=8).needed(watched=100) == (8, 3)
    assert rule(max_in_flight=8).needed(watched=2) == (3, 2)
    assert rule().needed(watched=0) == (3, 1)


def test_a_failed_probe_backs_off_and_only_a_probe_moves_the_next() -> None:
    outage = rule(u=0.999)
    for n, job_id in enumerate("abc"):
        entered = outage.failed(job_id, REFUSED, float(n), watched=100)
    assert isinstance(entered, Enter)
    first = entered.probe_at - 2.0
    # A request sent before the outage began fails now: no probe moves.
    assert outage.failed("d", REFUSED, 3.0, watched=100) is None
    assert outage.attempt == 1
    delays = [first]
    now = 10.0
    for _ in range(8):
        step = outage.failed("a", REFUSED, now, watched=100, probe=True)
        assert isinstance(step, Probe) and step.probe_at == outage.probe_at
        delays.append(step.probe_at - now)
        now = step.probe_at
    assert delays == sorted(delays)  # growing...
    cap = min(ScheduleSettings().idle_after * PROBE_CAP_FRACTION, 60.0 * PROBE_CAP_OF_INTERVAL)
    assert delays[-1] == pytest.approx(cap, rel=0.01)  # ...up to the cap


def test_a_probe_honours_retry_after_up_to_a_tenth_of_idle_after() -> None:
    schedule, settings = ScheduleSettings(), BackoffSettings()
    longest = schedule.idle_after * PROBE_CAP_FRACTION
    for asked, expected in [(longest / 2, longest / 2), (longest * 10, longest)]:
        busy = Retryable("http", "busy", status=429, retry_after=asked)
        delay = probe_delay(1, busy, 0.0, schedule=schedule, backoff_settings=settings)
        assert delay == pytest.approx(expected)


def test_recovery_is_spread_over_part_of_the_interval() -> None:
    times = recovery_times(100.0, 4, 60.0)
    step = 60.0 * RECOVERY_SPREAD / 4
    assert times == pytest.approx([100.0, 100.0 + step, 100.0 + 2 * step, 100.0 + 3 * step])
    assert recovery_times(100.0, 1, 60.0) == [100.0]
    assert recovery_times(100.0, 0, 60.0) == []
