"""The clocks' timers: the scheduler's loop sleeps on them once per check-in or so."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

from heartbeat.clock import ManualClock, SystemClock


async def test_manual_timers_fire_in_deadline_order_when_time_gets_there() -> None:
    clock = ManualClock(start=100.0)
    fired: list[str] = []
    clock.call_at(102.0, lambda: fired.append("b"))
    clock.call_at(101.0, lambda: fired.append("a"))
    cancelled = clock.call_at(101.5, lambda: fired.append("cancelled"))
    cancelled.cancel()
    await clock.advance(0.5)
    assert fired == []
    await clock.advance(1.0)
    assert fired == ["a"]
    await clock.advance(10.0)
    assert fired == ["a", "b"]


async def test_a_manual_timer_already_due_fires_soon_but_not_at_once() -> None:
    clock = ManualClock(start=100.0)
    fired: list[str] = []
    clock.call_at(99.0, lambda: fired.append("late"))
    assert fired == []  # never from inside call_at: the caller is not waiting yet
    await anyio.lowlevel.checkpoint()
    assert fired == ["late"]


async def test_system_timers_fire_after_their_deadline_and_cancel() -> None:
    clock = SystemClock()
    fired = anyio.Event()
    cancelled: list[str] = []
    start = clock.monotonic()
    clock.call_at(start + 0.05, fired.set)
    clock.call_at(start + 0.01, lambda: cancelled.append("no")).cancel()
    with anyio.fail_after(5):
        await fired.wait()
    assert clock.monotonic() - start >= 0.05 - 0.002  # the loop's clock may round
    assert cancelled == []
    assert abs(clock.wall() - time.time()) < 1.0
