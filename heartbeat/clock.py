"""Time, injected: the scheduler never calls ``time.monotonic()`` or sleeps directly.

:class:`SystemClock` is the real one. :class:`ManualClock` only moves when a test
calls :meth:`ManualClock.advance`, so scheduler tests assert exact delay sequences.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.lowlevel


class Timer(Protocol):
    def cancel(self) -> None:
        """Do not call the callback (a no-op once it has been called)."""


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for due times)."""

    def wall(self) -> float:
        """Seconds since the epoch (for Retry-After dates and what we report)."""

    async def wait_until(self, event: anyio.Event, deadline: float | None) -> None:
        """Return when ``event`` is set or :meth:`monotonic` has reached ``deadline``."""

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` from the event loop once :meth:`monotonic` has reached
        ``deadline``: the cheapest timed wake-up there is (no task, no cancel scope), for
        the scheduler's loop, which sleeps and wakes up once per check-in or more."""


class SystemClock:
    """The real clock, on asyncio (which heartbeat runs on, embedded or not)."""

    # The C functions themselves, not methods that call them: the scheduler reads the
    # clock a few times per check-in.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def wait_until(self, event: anyio.Event, deadline: float | None) -> None:
        if deadline is None:
            await event.wait()
            return
        with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
            await event.wait()

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        # call_later with our own clock's delay: the loop's clock need not be ours.
        delay = max(deadline - time.monotonic(), 0.0)
        return asyncio.get_running_loop().call_later(delay, callback)


class ManualClock:
    """A clock for tests: time stands still until :meth:`advance`."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._moved = anyio.Event()
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    async def wait_until(self, event: anyio.Event, deadline: float | None) -> None:
        async with anyio.create_task_group() as tg:

            async def watch_event() -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch_event)
            while deadline is None or self._now < deadline:
                moved = self._moved
                await moved.wait()
            tg.cancel_scope.cancel()

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = _ManualTimer(callback)
        if deadline <= self._now:
            asyncio.get_running_loop().call_soon(timer.fire)  # as a real clock: not now
        else:
            heapq.heappush(self._timers, (deadline, next(self._order), timer))
        return timer

    def _fire(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            timer.fire()

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every task that can run, run."""
        self._now += seconds
        self._fire()
        moved, self._moved = self._moved, anyio.Event()
        moved.set()
        for _ in range(50):
            await anyio.lowlevel.checkpoint()


class _ManualTimer:
    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self._callback = None

    def fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
