"""The paced floor for ``bench/checkin_cpu.py``: the least CPU any aiohttp program can
spend per check-in when the check-ins are spread out in time.

A smart paced loop on bare aiohttp: every ``TICK`` (20 ms) one feeder wakes, puts every
request due by then onto a queue, and sleeps to the next tick; ``concurrency`` workers
(32) drain the queue, each ``PUT`` + read the body + check the status on one shared
session. One wake-up per tick rather than one per request, no task per request, no
bookkeeping: only the requests and the pacing. A request waits at most one tick
(its lateness is at most 20 ms, well inside heartbeat's budget of seconds).

Flat out (everything due at once) the same loop is exactly ``bare aiohttp`` with 32
workers, which checkin_cpu.py already measures: the floor is measured paced only.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from urllib.parse import quote

import aiohttp

#: The feeder's period: requests due within one tick go out together.
TICK = 0.020


async def paced_floor(
    session: Callable[[], aiohttp.ClientSession],
    warm: list[str],
    ids: list[str],
    concurrency: int,
    rate: float | None,
) -> tuple[float, float, int]:
    """``(CPU s, wall s, successes)`` of checking ``ids`` in at ``rate`` per second,
    after ``warm`` (all at once, to open the connections; not measured)."""
    loop = asyncio.get_running_loop()
    async with session() as client:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        ok = done = 0
        warmed = asyncio.Event()

        async def worker() -> None:
            nonlocal ok, done
            while (job_id := await queue.get()) is not None:
                path = f"/_connector/_sync_job/{quote(job_id, safe=',*')}/_check_in"
                async with client.put(path) as response:
                    await response.read()
                    ok += response.status == 200
                    done += 1
                    if done == len(warm):
                        warmed.set()

        async def feed(batch: list[str], per_second: float | None) -> None:
            if per_second is None:
                for job_id in batch:
                    queue.put_nowait(job_id)
                return
            start = loop.time()
            sent = 0
            tick = 0
            while sent < len(batch):
                # Every request due by now (request i is due at start + i / rate).
                due = min(len(batch), int((loop.time() - start) * per_second) + 1)
                for job_id in batch[sent:due]:
                    queue.put_nowait(job_id)
                sent = due
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * TICK - loop.time()))

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await feed(warm, None)
        await warmed.wait()
        gc.collect()
        ok = done = 0
        cpu, wall = time.process_time(), time.perf_counter()
        await feed(ids, rate)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return time.process_time() - cpu, time.perf_counter() - wall, ok
