"""The host pool alone (heartbeat.hosts): which host an attempt goes to, dead times,
one trial at a time. Pure: the test passes the time."""

from __future__ import annotations

import pytest

from heartbeat.hosts import MAX_DEAD_BACKOFF, HostPool, dead_time

A, B, C = "http://a:9200", "http://b:9200", "http://c:9200"


def urls(pool: HostPool, now: float, tried: frozenset[int] = frozenset()) -> str | None:
    choice = pool.pick(now, tried)
    return None if choice is None else choice[0].url


def test_dead_time_doubles_up_to_the_cap() -> None:
    assert [dead_time(n) for n in range(0, 8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert dead_time(10_000) == MAX_DEAD_BACKOFF


def test_requests_stay_on_the_first_host_while_it_works() -> None:
    pool = HostPool([A, B])
    for now in range(10):
        host, trial = pool.pick(float(now)) or (None, None)
        assert host is not None and host.url == A and trial is False
        assert pool.answered(host, trial=False) is False


def test_a_failed_host_is_skipped_and_the_attempt_goes_to_the_next_at_once() -> None:
    pool = HostPool([A, B])
    host, trial = pool.pick(0.0) or (None, False)
    assert host is not None
    assert pool.failed(host, 0.5, trial=trial) is True  # host_down, once
    # The same request, having tried A: B, at once.
    assert urls(pool, 0.5, frozenset({0})) == B
    # New requests skip A while it is dead.
    assert urls(pool, 1.0) == B
    assert urls(pool, 1.49) == B


def test_requests_already_under_way_do_not_extend_the_dead_time() -> None:
    pool = HostPool([A, B])
    attempts = [pool.pick(0.0) for _ in range(8)]  # eight requests in flight on A
    assert {choice[0].url for choice in attempts if choice} == {A}
    marked = [pool.failed(choice[0], 0.5, trial=choice[1]) for choice in attempts if choice]
    assert marked == [True] + [False] * 7  # one host_down line
    assert pool.hosts[0].failures == 1
    assert pool.hosts[0].dead_until == 1.5


def test_one_trial_at_a_time_once_the_dead_time_is_over() -> None:
    pool = HostPool([A, B])
    a = pool.hosts[0]
    pool.failed(a, 0.5, trial=False)
    choice = pool.pick(1.5)
    assert choice == (a, True)  # the trial
    assert urls(pool, 1.6) == B  # everyone else keeps skipping A meanwhile
    assert urls(pool, 1.7) == B
    # The trial times out: A is dead for longer, and that request goes to B at once.
    assert pool.failed(a, 2.0, trial=True) is False  # still down: no second line
    assert a.dead_until == 2.0 + 2.0
    assert urls(pool, 2.0, frozenset({0})) == B
    assert urls(pool, 3.9) == B
    # The next trial answers: A is back (host_up, once).
    choice = pool.pick(4.0)
    assert choice == (a, True)
    assert pool.answered(a, trial=True) is True
    assert a.failures == 0
    assert pool.answered(a, trial=False) is False


def test_every_host_dead_uses_the_one_due_back_first() -> None:
    pool = HostPool([A, B, C])
    a, b, c = pool.hosts
    pool.failed(a, 0.0, trial=False)  # until 1.0
    pool.failed(b, 0.0, trial=False)
    pool.failed(b, 0.0, trial=True)  # until 2.0
    pool.failed(c, 0.5, trial=False)  # until 1.5
    assert urls(pool, 0.9) == A  # forced: nobody is alive, A comes back first
    # A forced attempt that fails changes nothing, and the request has had its try.
    assert pool.failed(a, 0.95, trial=False) is False
    assert a.dead_until == 1.0
    assert urls(pool, 0.95, frozenset({0})) is None


def test_a_single_host_is_never_marked_dead() -> None:
    pool = HostPool([A])
    host, trial = pool.pick(0.0) or (None, False)
    assert host is not None
    host.identity = "confirmed"
    assert pool.failed(host, 0.0, trial=trial) is False
    assert host.identity is None  # GET / is read again once it answers
    assert urls(pool, 0.0) == A
    assert urls(pool, 0.0, frozenset({0})) is None


def test_a_released_trial_is_free_again() -> None:
    pool = HostPool([A, B])
    a = pool.hosts[0]
    pool.failed(a, 0.0, trial=False)
    assert pool.pick(1.0) == (a, True)
    pool.released(a, trial=True)  # cancelled, or a TLS error: says nothing
    assert pool.pick(1.0) == (a, True)


def test_no_hosts_is_refused() -> None:
    with pytest.raises(ValueError, match="no hosts"):
        HostPool([])
