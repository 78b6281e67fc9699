"""The pure delay maths, alone."""

from __future__ import annotations

import email.utils

import pytest

from heartbeat import backoff


def test_ceiling_grows_exponentially_then_caps() -> None:
    ceilings = [
        backoff.backoff_ceiling(n, initial=1.0, multiplier=2.0, maximum=60.0) for n in range(1, 9)
    ]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60]


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert backoff.backoff_ceiling(10_000, initial=1.0, multiplier=2.0, maximum=60.0) == 60.0


def test_full_jitter_spans_zero_to_ceiling() -> None:
    delays = [
        backoff.retry_delay(4, u=u, initial=1.0, multiplier=2.0, maximum=60.0)
        for u in (0.0, 0.5, 0.999)
    ]
    assert delays == [backoff.MIN_RETRY_DELAY, 4.0, pytest.approx(7.992)]


def test_retry_after_is_honoured_but_not_beyond_max() -> None:
    common = {"u": 0.5, "initial": 1.0, "multiplier": 2.0, "maximum": 60.0}
    assert backoff.retry_delay(1, retry_after=20.0, **common) == 20.0
    assert backoff.retry_delay(1, retry_after=3600.0, **common) == 60.0


def test_idle_cap_wins_over_retry_after() -> None:
    cap = backoff.idle_cap(now=250.0, last_success=0.0, idle_after=300.0)
    assert cap == pytest.approx(50 / 3)
    delay = backoff.retry_delay(
        7, u=0.9, initial=1.0, multiplier=2.0, maximum=60.0, retry_after=60.0, cap=cap
    )
    assert delay == pytest.approx(50 / 3)


def test_three_attempts_always_fit_before_idle() -> None:
    """Worst case (u -> 1, long Retry-After): still three attempts before idle_after."""
    now, last_success, attempts = 60.0, 0.0, 0
    while now < last_success + 300.0 and attempts < 3:
        attempts += 1
        cap = backoff.idle_cap(now=now, last_success=last_success, idle_after=300.0)
        now += backoff.retry_delay(
            attempts, u=0.999, initial=1, multiplier=2, maximum=600, retry_after=600, cap=cap
        )
    assert attempts == 3
    assert now < 300.0


def test_idle_cap_lifts_once_idle_after_has_passed() -> None:
    assert backoff.idle_cap(now=301.0, last_success=0.0, idle_after=300.0) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("", None),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert backoff.parse_retry_after(header, now_wall=1_700_000_000.0) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 90, usegmt=True)
    assert backoff.parse_retry_after(header, now_wall=now) == pytest.approx(90.0)
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert backoff.parse_retry_after(past, now_wall=now) is None


def test_next_due_does_not_drift_with_latency() -> None:
    anchor = 0.0
    dues = []
    for latency in (0.3, 2.0, 0.1):
        now = anchor + latency
        anchor, due = backoff.next_due(anchor, now=now, interval=60.0, jitter=0.0, u=0.5)
        dues.append(due)
    assert dues == [60.0, 120.0, 180.0]


def test_next_due_jitter_is_bounded_and_does_not_accumulate() -> None:
    anchor, due_low = backoff.next_due(0.0, now=0.1, interval=60.0, jitter=0.1, u=0.0)
    assert due_low == pytest.approx(54.0)
    anchor, due_high = backoff.next_due(anchor, now=54.1, interval=60.0, jitter=0.1, u=1.0)
    assert anchor == 120.0
    assert due_high == pytest.approx(126.0)


def test_next_due_restarts_from_now_when_far_behind() -> None:
    anchor, due = backoff.next_due(0.0, now=500.0, interval=60.0, jitter=0.0, u=0.5)
    assert (anchor, due) == (560.0, 560.0)
