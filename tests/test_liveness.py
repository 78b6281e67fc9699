"""The worker liveness rule and the vouching rule, pure: events in, transitions out."""

from __future__ import annotations

from datetime import UTC, datetime

from heartbeat.liveness import (
    Alive,
    Dead,
    Down,
    Incarnation,
    Restarted,
    Up,
    WorkerLiveness,
    parse_time,
    vouches_for,
)

FIRST = Incarnation(pid=100, ticks=5_000, start=1_700_000_000.0)
SECOND = Incarnation(pid=200, ticks=9_000, start=1_700_000_040.0)
DEAD = Dead("process_gone", "no process 100")


def test_unknown_until_the_first_success_and_down_only_after_the_threshold() -> None:
    rule = WorkerLiveness(failure_threshold=3)
    assert rule.state == "unknown" and not rule.up
    assert rule.observe(DEAD, 0.0) == []
    assert rule.observe(DEAD, 5.0) == []
    assert rule.observe(DEAD, 10.0) == [Down("process_gone", "no process 100", never_up=True)]
    assert rule.observe(DEAD, 15.0) == []  # logged once
    assert rule.observe(Alive(FIRST), 20.0) == [Up(10.0, FIRST)]
    assert rule.up and rule.since == 20.0


def test_first_success_is_up_without_a_duration() -> None:
    rule = WorkerLiveness(failure_threshold=3)
    assert rule.observe(Alive(FIRST), 0.0) == [Up(None, FIRST)]
    assert rule.observe(Alive(FIRST), 5.0) == []


def test_failures_must_be_consecutive() -> None:
    rule = WorkerLiveness(failure_threshold=3)
    rule.observe(Alive(FIRST), 0.0)
    for now in range(1, 30, 3):
        assert rule.observe(DEAD, float(now)) == []
        assert rule.observe(DEAD, now + 1.0) == []
        assert rule.observe(Alive(FIRST), now + 2.0) == []
    assert rule.up


def test_back_up_as_the_same_incarnation_is_up_with_how_long_it_was_down() -> None:
    rule = WorkerLiveness(failure_threshold=2)
    rule.observe(Alive(FIRST), 0.0)
    assert rule.observe(DEAD, 5.0) == []
    [down] = rule.observe(DEAD, 10.0)
    assert isinstance(down, Down) and not down.never_up
    assert rule.state == "down" and rule.since == 10.0
    assert rule.observe(Alive(FIRST), 17.5) == [Up(7.5, FIRST)]


def test_another_incarnation_is_a_restart_whether_or_not_a_probe_failed_between() -> None:
    rule = WorkerLiveness(failure_threshold=3)
    rule.observe(Alive(FIRST), 0.0)
    # Restarted between two probes: never seen down.
    assert rule.observe(Alive(SECOND), 5.0) == [Restarted(FIRST, SECOND)]
    assert rule.incarnation == SECOND
    for now in (10.0, 15.0, 20.0):
        rule.observe(DEAD, now)
    assert rule.observe(Alive(FIRST), 25.0) == [Up(5.0, FIRST), Restarted(SECOND, FIRST)]


def test_the_same_pid_with_another_start_is_another_incarnation() -> None:
    reused = Incarnation(pid=FIRST.pid, ticks=7_000, start=1_700_000_020.0)
    assert reused != FIRST
    # The wall-clock start is derived (boot time may be read differently): not identity.
    assert Incarnation(pid=100, ticks=5_000, start=1_699_999_999.0) == FIRST
    assert Incarnation(started_at="a") != Incarnation(started_at="b")


def test_a_job_is_vouched_for_from_the_incarnation_start_minus_the_skew() -> None:
    start = FIRST.start
    assert start is not None
    assert vouches_for(start, FIRST, 10.0)
    assert vouches_for(start - 10.0, FIRST, 10.0)
    assert not vouches_for(start - 10.001, FIRST, 10.0)
    assert not vouches_for(start - 0.5, FIRST, 0.0)
    # Unclaimed (no started_at), no incarnation, or an incarnation without a start:
    # nothing to tell them apart by, so vouched for.
    assert vouches_for(None, FIRST, 0.0)
    assert vouches_for(0.0, None, 0.0)
    assert vouches_for(0.0, Incarnation(started_at="x"), 0.0)


def test_times_in_documents() -> None:
    moment = datetime(2025, 1, 31, 12, 0, 0, 500_000, tzinfo=UTC).timestamp()
    assert parse_time("2025-01-31T12:00:00.500Z") == moment
    assert parse_time("2025-01-31T12:00:00.500000+00:00") == moment
    assert parse_time("2025-01-31T12:00:00.5") == moment  # naive: UTC
    for unreadable in (None, "", "yesterday", 17, {"a": 1}):
        assert parse_time(unreadable) is None
