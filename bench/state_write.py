"""What saving outcomes costs: one state-file write for 100,000 jobs, against the
watch-list-only write it extends, measured in the same run.

Issue 12 asks that ``last_success``, ``consecutive_failures`` and ``last_error`` be
saved "at most every few seconds, never a full write per check-in; a 100,000-job list
must not cost a full file write per second". heartbeat writes them at most every
``OUTCOME_PERIOD`` (5 s). This script builds a real :class:`heartbeat.Heartbeat` with a
``[state] dir`` (nothing is checked in: the scheduler never runs), gives every job an
outcome as check-ins would, adds the maximum of 1,000 tombstones, then times:

* the baseline: encoding and writing the watch list alone (ids and sources, what the
  file held before outcomes), as :func:`heartbeat.state.encode` does with no extras;
* a watch-list change: the same plus the extras (tombstones, the cluster uuid), through
  the store's own ``save_now`` (fsync and rename included);
* the outcomes file (``outcomes.json``), written on its own every period.

It prints the median of ``--rounds`` rounds of each, the ratios, the file sizes, and
the share of one core the outcomes take at the period the store would use.

    python bench/state_write.py [--jobs 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from heartbeat import Heartbeat
from heartbeat.config import Config
from heartbeat.memory import MAX_TOMBSTONES, Tombstone
from heartbeat.state import OUTCOME_BUDGET, OUTCOME_PERIOD
from heartbeat.statefile import encode, write_atomically


def timed(action: object, rounds: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``rounds`` calls."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        action()  # type: ignore[operator]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hb-bench-") as tmp:
        directory = Path(tmp)
        config = Config(state={"dir": directory}, elasticsearch={"hosts": ["http://127.0.0.1:9"]})
        hb = Heartbeat(config)
        scheduler = hb.scheduler
        ids = [f"sync-job-{n:08d}-Zk3q9" for n in range(args.jobs)]
        scheduler.watchlist.watch_many(ids, "control")
        now = scheduler.clock.wall()
        for n, job_id in enumerate(ids):
            failures = n % 7 == 0
            scheduler.watchlist.restore_outcome(
                job_id,
                now - (n % 60),
                2 if failures else 0,
                "http_503: cluster busy" if failures else None,
            )
        for n in range(MAX_TOMBSTONES):
            hb.tombstones.add(
                Tombstone(f"gone-{n}", "not_found", 404, "not found", now - n, ("queue",))
            )
        hb.identity.remembered = "dQ9w1fnSTXyYhGVb3aZfxg"
        store = hb.state
        assert store is not None
        base_path = directory / "baseline.json"

        def baseline() -> None:
            write_atomically(base_path, encode(scheduler.watchlist.claims()))

        def full() -> None:
            store.save_now()

        def outcomes() -> None:
            store.save_outcomes_now()

        base_wall, base_cpu = timed(baseline, args.rounds)
        full_wall, full_cpu = timed(full, args.rounds)
        out_wall, out_cpu = timed(outcomes, args.rounds)
        base_size = base_path.stat().st_size
        full_size = store.path.stat().st_size
        out_size = store.outcomes_path.stat().st_size
    print(f"jobs: {args.jobs:,}, tombstones: {MAX_TOMBSTONES:,}, rounds: {args.rounds}")
    print(
        f"baseline (watch list only): {base_wall * 1000:7.1f} ms wall, "
        f"{base_cpu * 1000:7.1f} ms CPU, {base_size / 1e6:5.2f} MB"
    )
    print(
        f"watch list with extras:     {full_wall * 1000:7.1f} ms wall, "
        f"{full_cpu * 1000:7.1f} ms CPU, {full_size / 1e6:5.2f} MB  (a watch-list change)"
    )
    print(
        f"outcomes file:              {out_wall * 1000:7.1f} ms wall, "
        f"{out_cpu * 1000:7.1f} ms CPU, {out_size / 1e6:5.2f} MB  (every period)"
    )
    print(f"watch list with extras / baseline: {full_cpu / base_cpu:.2f} x CPU")
    print(f"outcomes / baseline: {out_cpu / base_cpu:.2f} x CPU")
    period = max(OUTCOME_PERIOD, out_wall / OUTCOME_BUDGET)
    print(
        f"outcomes every {period:.1f} s (OUTCOME_PERIOD {OUTCOME_PERIOD:g} s, budget "
        f"{OUTCOME_BUDGET:.0%}): {out_cpu / period * 100:.1f} % of a core "
        f"(one write per second would be {out_cpu * 100:.1f} %)"
    )


if __name__ == "__main__":
    main()
