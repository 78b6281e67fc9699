"""Time, injected: the scheduler never calls ``time.monotonic()`` or sleeps directly.

:class:`SystemClock` is the real one. :class:`ManualClock` only moves when a test
calls :meth:`ManualClock.advance`, so scheduler tests assert exact delay sequences.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for due times)."""

    def wall(self) -> float:
        """Seconds since the epoch (for Retry-After dates and what we report)."""

    async def wait_until(self, event: anyio.Event, deadline: float | None) -> None:
        """Return when ``event`` is set or :meth:`monotonic` has reached ``deadline``."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def wait_until(self, event: anyio.Event, deadline: float | None) -> None:
        if deadline is None:
            await event.wait()
            return
        with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
            await event.wait()


class ManualClock:
    """A clock for tests: time stands still until :meth:`advance`."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._moved = anyio.Event()

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

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every task that can run, run."""
        self._now += seconds
        moved, self._moved = self._moved, anyio.Event()
        moved.set()
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
