"""The deadline heap alone: lazy invalidation, taking what is due, waking the loop,
the start-up ramp. No event loop: the wake-up is a counter here."""

from __future__ import annotations

import math

import pytest

from heartbeat.deadlines import Deadlines
from heartbeat.watchlist import Job


def job(job_id: str) -> Job:
    return Job(id=job_id, sources=("test",), added=0.0, anchor=0.0, due=0.0)


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_moved_removed_or_held_job_is_skipped_when_it_surfaces() -> None:
    heap = Deadlines(Wakes())
    a, b, c, d = job("a"), job("b"), job("c"), job("d")
    for n, each in enumerate((a, b, c, d)):
        heap.push(each, float(n))
    heap.push(a, 10.0)  # moved: its entry at 0 goes stale
    b.removed = True
    c.held = True
    assert heap.first() is d
    assert heap.take(2.9) is None  # d is due at 3
    assert heap.take(3.0) is d
    assert heap.take(9.9) is None
    assert heap.next_due() == 10.0
    assert heap.take(math.inf) is a
    assert heap.first() is None and len(heap) == 0


def test_a_job_watched_again_at_the_due_time_of_its_stale_entry_is_taken() -> None:
    # Removed, then watched again as a new Job, due at the very time its old entry has:
    # the two entries tie on (due, id), and the heap must not fail comparing the jobs.
    heap = Deadlines(Wakes())
    old, new = job("x"), job("x")
    heap.push(old, 5.0)
    old.removed = True
    heap.push(new, 5.0)
    heap.push(job("y"), 5.0)
    assert {heap.take(5.0).id, heap.take(5.0).id} == {"x", "y"}  # type: ignore[union-attr]
    assert heap.take(math.inf) is None


def test_a_push_before_the_loops_wake_up_wakes_it() -> None:
    wakes = Wakes()
    heap = Deadlines(wakes)
    heap.push(job("awake"), 5.0)  # the loop is awake (-inf): it will look anyway
    assert wakes.count == 0
    heap.wake_before = 10.0  # asleep until 10
    heap.push(job("later"), 12.0)
    assert wakes.count == 0
    heap.push(job("sooner"), 7.0)
    assert wakes.count == 1


def test_the_ramp_spaces_new_jobs_and_restarts_from_now() -> None:
    heap = Deadlines(Wakes())
    first = [job(f"a{n}") for n in range(3)]
    heap.place(first, 100.0, ramp_rate=10.0)
    assert [j.due for j in first] == pytest.approx([100.0, 100.1, 100.2])
    later = [job("b")]
    heap.place(later, 100.05, ramp_rate=10.0)  # behind the ramp: after its end
    assert later[0].due == pytest.approx(100.3)
    gone_by = [job("c")]
    heap.place(gone_by, 200.0, ramp_rate=10.0)  # the ramp ran out: now
    assert gone_by[0].due == 200.0


def test_after_an_outage_everyone_is_due_again_oldest_success_first() -> None:
    heap = Deadlines(Wakes())
    jobs = [job("recent"), job("never"), job("old"), job("busy")]
    jobs[0].last_success, jobs[2].last_success = 50.0, 10.0
    jobs[3].in_flight = True
    for each in jobs:
        heap.push(each, 500.0)
    heap.respread(jobs, 100.0, interval=60.0)
    order = []
    while (taken := heap.take(math.inf)) is not None:
        order.append((taken.id, round(taken.due, 6)))
    assert order == [("never", 100.0), ("old", 112.0), ("recent", 124.0)]
