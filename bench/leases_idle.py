"""100,000 leases cost no CPU between expiries: measure it.

Builds a scheduler (not running: no check-ins, so only the leases can cost anything)
with 100,000 watched jobs, grants each a lease, then measures this process's CPU time
over an idle window, against the same window with the jobs and no leases (the
baseline, measured in the same run). Then all leases are renewed, and the window after
that is measured too: a renewal pushes nothing onto the heap, so it costs nothing later.

    python bench/leases_idle.py [--jobs 100000] [--window 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.leases import LeaseKeeper
from heartbeat.outcomes import Outcome, Success
from heartbeat.scheduler import Scheduler


async def check_in(_job_id: str) -> Outcome:
    return Success(200)


async def idle_cpu(window: float) -> float:
    """CPU seconds this process used while the event loop idled for ``window``."""
    start = time.process_time()
    await anyio.sleep(window)
    return time.process_time() - start


async def main(jobs: int, window: float) -> None:
    scheduler = Scheduler(check_in, schedule=ScheduleSettings(), backoff_settings=BackoffSettings())
    ids = [f"job-{index}" for index in range(jobs)]
    scheduler.watchlist.watch_many(ids, "control")
    keeper = LeaseKeeper(scheduler)
    baseline = await idle_cpu(window)
    started = time.process_time()
    keeper.grant(ids, "control", 3600.0)
    granting = time.process_time() - started
    leased = await idle_cpu(window)
    started = time.process_time()
    keeper.grant(ids, "control", 3600.0)  # every lease renewed
    renewing = time.process_time() - started
    renewed = await idle_cpu(window)
    keeper.close()
    print(f"{jobs:,} jobs, idle windows of {window:g} s")
    print(f"  baseline, no leases:       {baseline * 1000:8.2f} ms CPU")
    print(
        f"  {jobs:,} leases:          {leased * 1000:8.2f} ms CPU  (granting them: "
        f"{granting * 1000:.0f} ms, {granting / jobs * 1e6:.2f} us each)"
    )
    print(
        f"  after renewing every one:  {renewed * 1000:8.2f} ms CPU  (renewing: "
        f"{renewing * 1000:.0f} ms, {renewing / jobs * 1e6:.2f} us each)"
    )
    print(f"  heap entries: {len(keeper.book._heap):,} for {len(keeper.book):,} leases")
    ratio = (max(leased, renewed) + 1e-4) / (baseline + 1e-4)
    print(f"  (leases or renewed) / baseline: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    anyio.run(main, args.jobs, args.window)
