"""The scheduler on a manual clock, for tests/test_scheduler*.py: a scripted check-in
function that records its calls, a Scheduler built around it, the scheduler's loop
running in the test's task group, and the clock advanced from due time to due time.

The ``clock`` and ``script`` fixtures (tests/conftest.py) give a test a fresh
``ManualClock(start=T0)`` and a ``Script`` on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.outcomes import Outcome, Success
from heartbeat.scheduler import Scheduler

T0 = 1000.0
OK = Success(200)


class Script:
    """A check-in function that answers from per-job scripts and records calls."""

    def __init__(self, clock: ManualClock, default: Outcome = OK) -> None:
        self.clock = clock
        self.default = default
        self.scripts: dict[str, list[Outcome]] = defaultdict(list)
        self.calls: list[tuple[float, str]] = []
        self.active = 0
        self.peak = 0
        self.gate: anyio.Event | None = None

    def script(self, job_id: str, *outcomes: Outcome) -> None:
        self.scripts[job_id].extend(outcomes)

    async def __call__(self, job_id: str) -> Outcome:
        self.calls.append((self.clock.monotonic(), job_id))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await anyio.lowlevel.checkpoint()
        finally:
            self.active -= 1
        queue = self.scripts.get(job_id)
        return queue.pop(0) if queue else self.default

    def times(self, job_id: str) -> list[float]:
        return [round(t - T0, 6) for t, j in self.calls if j == job_id]


def make(
    clock: ManualClock,
    script: Script,
    *,
    rng: Callable[[], float] = lambda: 0.5,
    **schedule: Any,
) -> Scheduler:
    return Scheduler(
        script,
        schedule=ScheduleSettings(**{"interval": 60.0, "jitter": 0.1, **schedule}),
        backoff_settings=BackoffSettings(initial=1.0, multiplier=2.0, max=60.0),
        clock=clock,
        rng=rng,
    )


@asynccontextmanager
async def scheduling(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            for _ in range(10):  # let the loop grant what is due now
                await anyio.lowlevel.checkpoint()
            yield scheduler
            scheduler.stop()


async def run_until(clock: ManualClock, scheduler: Scheduler, until: float) -> None:
    """Advance the clock from due time to due time up to ``T0 + until``."""
    await clock.advance(0)
    while True:
        due = scheduler.next_wakeup()
        if due is None or due > T0 + until:
            break
        await clock.advance(max(due - clock.monotonic(), 0.0))
    await clock.advance(max(T0 + until - clock.monotonic(), 0.0))
