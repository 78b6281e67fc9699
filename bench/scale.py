"""100,000 watched jobs in one process: memory, idle CPU, and lateness at 1,000 check-ins/s.

A real :class:`heartbeat.Heartbeat` (Scheduler + Client, logging configured as
``heartbeat run`` does, at info level, into /dev/null) checks jobs in against the
stub server ``bench/_stub.py`` in another process (so its CPU is not counted here).

Phase 0, the baseline: a bare aiohttp loop (one session, the same headers) starting
the same requests on the same 1 ms grid for 10 s, each request a task, as a minimal
client would. Its CPU and lateness are what this box and event loop cost anyway.

Phase 1, memory, burst and idle: a Heartbeat with ``interval = 3600`` s and every
job due at once (``ramp_rate`` high).

* RSS (``VmRSS`` of /proc/self/status) once the Heartbeat runs with no job, then
  right after ``watch_many`` of 100,000 ids (the ids are made after the first reading,
  so their strings count), then once every job has been checked in once.
* The burst: how fast the 100,000 first check-ins go out (the most this process can
  do; the server is in another process on the other core).
* Idle: every job just checked in, the next due time about an hour away: CPU seconds
  this process uses over 10 s of wall time.

Phase 2, lateness: a fresh Heartbeat, ``interval = 100`` s, 100,000 jobs added with
``ramp_rate = jobs / interval = 1000``/s: their first check-ins are due 1 ms apart,
i.e. 1,000 check-ins/s, exactly as 100,000 jobs spread evenly over the interval.
Due times come from ``hb.jobs()`` right after ``watch_many``; an outcome observer
gives each request's start (``now - seconds``). Lateness = start - due, over the
check-ins due in a 45 s window that starts 2 s in (connections open in those 2 s).
Everything else keeps the daemon's defaults; in particular its status reads (one
``GET`` per job per ``status_check_interval``, 300 s: 333/s for 100,000 jobs) go out
alongside, so "CPU per request" divides by every request the server saw.

Targets: 100,000 jobs in at most 150 MB RSS; p99 lateness at most 1 s.

Usage: ``python bench/scale.py [--jobs 100000] [--window 45]``

``python bench/scale.py --adds [--counts 100000,1000000]`` measures instead RSS per
watched job and the longest event-loop block while adding them (bench/_adds.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python bench/scale.py` puts bench/ first on sys.path.
import _adds
import aiohttp
from _stub import running_stub, stub_stats

from heartbeat import logs
from heartbeat.client import ACCEPT, USER_AGENT
from heartbeat.config import Config, ElasticsearchSettings, ScheduleSettings, StateSettings
from heartbeat.daemon import Heartbeat
from heartbeat.outcomes import Outcome, Success

API_KEY = "YmVuY2g6YmVuY2gta2V5LW5vdC1hLXNlY3JldA=="
RSS_TARGET_MB = 150.0
P99_TARGET_S = 1.0
IDLE_SECONDS = 10.0
BASELINE_SECONDS = 10.0
#: Phase 2's interval: 100,000 jobs every 100 s is 1,000 check-ins/s.
INTERVAL = 100.0
WARMUP_SECONDS = 2.0
#: Phase 2 waits this long after the window for the last check-ins due in it.
GRACE_SECONDS = 5.0
#: Phase 1 gives up on the burst after this long.
BURST_LIMIT_SECONDS = 150.0


def status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_mb() -> float:
    return status_kb("VmRSS") / 1024


def job_ids(prefix: str, count: int) -> list[str]:
    """Ids shaped like real sync-job ids (20 url-safe characters)."""
    return [f"{prefix}{i:0{20 - len(prefix)}d}" for i in range(count)]


def config(url: str, *, interval: float, ramp_rate: float) -> Config:
    return Config(
        elasticsearch=ElasticsearchSettings(hosts=[url], api_key=API_KEY),
        schedule=ScheduleSettings(interval=interval, ramp_rate=ramp_rate),
        state=StateSettings(dir=None),
    )


@dataclass
class Counter:
    target: int
    seen: int = 0
    ok: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, _job_id: str, outcome: Outcome, _seconds: float) -> None:
        self.seen += 1
        self.ok += isinstance(outcome, Success)
        if self.seen >= self.target:
            self.done.set()


@dataclass
class Baseline:
    lateness: list[float]
    cpu_s: float
    seconds: float


async def baseline(url: str, rate: float, seconds: float) -> Baseline:
    """Bare aiohttp: a request task started at every point of a 1/rate grid."""
    headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT, "Authorization": f"ApiKey {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=36)
    session = aiohttp.ClientSession(
        url, connector=connector, headers=headers, skip_auto_headers=("Content-Type",)
    )
    lateness: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def check_in(n: int, due: float | None) -> None:
        if due is not None:
            lateness.append(time.monotonic() - due)
        async with session.put(f"/_connector/_sync_job/b{n:019d}/_check_in") as response:
            await response.read()

    async with session:
        await asyncio.gather(*(check_in(n, None) for n in range(32)))  # open the pool
        start = time.monotonic() + 0.1
        cpu = time.process_time()
        for n in range(int(rate * seconds)):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(check_in(n, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        cpu_s = time.process_time() - cpu
    return Baseline(lateness, cpu_s, seconds)


@dataclass
class Idle:
    label: str
    cpu_s: float
    wall_s: float
    requests: dict[str, int]


@dataclass
class Phase1:
    rss_empty: float
    rss_added: float
    rss_round: float
    add_s: float
    burst_s: float
    burst_done: int
    burst_ok: int
    burst_cpu_s: float
    idle: list[Idle]


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    methods = set(before["by_method"]) | set(after["by_method"])
    counts = {m: after["by_method"].get(m, 0) - before["by_method"].get(m, 0) for m in methods}
    return {m: n for m, n in sorted(counts.items()) if n}


async def idle(url: str, label: str) -> Idle:
    before = await stub_stats_async(url)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
    after = await stub_stats_async(url)
    return Idle(label, cpu_s, wall_s, requests_between(before, after))


async def phase1(url: str, jobs: int) -> Phase1:
    async with Heartbeat(config(url, interval=3600.0, ramp_rate=1e9)) as hb:
        # No await until the jobs are added, as with ids from the configuration: every
        # helper task (the status reads too, when there are any) starts with them.
        gc.collect()
        rss_empty = rss_mb()
        ids = job_ids("s", jobs)
        counter = Counter(jobs)
        hb.scheduler.outcome_observers.append(counter.observe)
        start = time.perf_counter()
        hb.watch_many(ids, "bench")  # synchronous: nothing is checked in before we await
        add_s = time.perf_counter() - start
        rss_added = rss_mb()
        cpu = time.process_time()
        with contextlib.suppress(TimeoutError):  # reported as fewer than `jobs` done
            await asyncio.wait_for(counter.done.wait(), BURST_LIMIT_SECONDS)
        burst_s = time.perf_counter() - start - add_s
        burst_cpu_s = time.process_time() - cpu
        await asyncio.sleep(1.0)  # the last answers, then quiet
        gc.collect()
        rss_round = rss_mb()
        idles = [await idle(url, "idle")]
        status_reads = "status_check_interval" in ScheduleSettings.model_fields
        if status_reads and hb.config.schedule.status_check_interval > 0:
            idles[0].label = "idle, status reads on (default)"
            # The daemon's own reload path (SIGHUP) turns them off.
            schedule = hb.config.schedule.model_copy(update={"status_check_interval": 0.0})
            await hb.apply(hb.config.model_copy(update={"schedule": schedule}))
            idles.append(await idle(url, "idle, status reads off"))
        return Phase1(
            rss_empty=rss_empty,
            rss_added=rss_added,
            rss_round=rss_round,
            add_s=add_s,
            burst_s=burst_s,
            burst_done=counter.seen,
            burst_ok=counter.ok,
            burst_cpu_s=burst_cpu_s,
            idle=idles,
        )


@dataclass
class Phase2:
    lateness: list[float]
    expected: int
    failed: int
    window_s: float
    cpu_s: float
    server_requests: dict[str, int]
    server_cpu_s: float


async def phase2(url: str, jobs: int, window: float) -> Phase2:
    # The ramp spreads the jobs evenly over one interval: jobs / INTERVAL per second.
    async with Heartbeat(config(url, interval=INTERVAL, ramp_rate=jobs / INTERVAL)) as hb:
        ids = job_ids("t", jobs)
        hb.watch_many(ids, "bench")
        # Public snapshots (wall clock) back onto the monotonic clock the scheduler uses.
        offset = time.time() - time.monotonic()
        due = {view.id: view.next_due - offset for view in hb.jobs() if view.next_due}
        first = min(due.values())
        lo, hi = first + WARMUP_SECONDS, first + WARMUP_SECONDS + window
        expected = sum(lo <= d < hi for d in due.values())
        lateness: list[float] = []
        failed = 0

        def observe(job_id: str, outcome: Outcome, seconds: float) -> None:
            nonlocal failed
            started = time.monotonic() - seconds
            when = due.get(job_id)
            if when is None or not lo <= when < hi:
                return
            lateness.append(started - when)
            failed += not isinstance(outcome, Success)

        hb.scheduler.outcome_observers.append(observe)
        await asyncio.sleep(max(0.0, lo - time.monotonic()))
        before = await stub_stats_async(url)
        cpu = time.process_time()
        await asyncio.sleep(max(0.0, hi - time.monotonic()))
        cpu_s = time.process_time() - cpu
        after = await stub_stats_async(url)
        await asyncio.sleep(GRACE_SECONDS)
        return Phase2(
            lateness=lateness,
            expected=expected,
            failed=failed,
            window_s=window,
            cpu_s=cpu_s,
            server_requests=requests_between(before, after),
            server_cpu_s=after["cpu_s"] - before["cpu_s"],
        )


async def stub_stats_async(url: str) -> dict[str, Any]:
    return await asyncio.to_thread(stub_stats, url)


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i != 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rates(requests: dict[str, int], seconds: float) -> str:
    """``PUT 1000/s, GET 333/s``: PUT are check-ins, GET status reads."""
    return ", ".join(f"{m} {n / seconds:.0f}/s" for m, n in requests.items()) or "nothing"


def verdict(value: float, target: float) -> str:
    return "yes" if value <= target else f"NO (+{value - target:.3g})"


async def main_async(jobs: int, window: float, say: Callable[[str], None]) -> int:
    with running_stub() as url:
        say(f"scale: {jobs} jobs, server {url} (bench/_stub.py, separate process)")
        rate = jobs / INTERVAL
        say(f"phase 0: bare aiohttp at {rate:.0f} requests/s for {BASELINE_SECONDS:.0f} s...")
        p0 = await baseline(url, rate, BASELINE_SECONDS)
        gc.collect()
        say("phase 1: add all jobs, check each in once (as fast as possible), then idle...")
        p1 = await phase1(url, jobs)
        gc.collect()
        say(f"phase 2: {jobs} jobs at {jobs / INTERVAL:.0f} check-ins/s for {window:.0f} s...")
        p2 = await phase2(url, jobs, window)
    peak = status_kb("VmHWM") / 1024
    rss_jobs = max(p1.rss_added, p1.rss_round)
    late = sorted(p2.lateness)
    missing = p2.expected - len(late)
    p50, p99 = percentile(late, 0.50), percentile(late, 0.99)
    # Missing check-ins (still not started GRACE_SECONDS after the window) count as
    # later than anything measured.
    p99_honest = p99 if missing <= 0.01 * p2.expected else float("inf")
    burst_rate = p1.burst_done / p1.burst_s
    per_job = (p1.rss_added - p1.rss_empty) * 1024 * 1024 / jobs

    rows = [["measure", "value", "note"]]
    rows += [
        ["RSS, Heartbeat running, no job", f"{p1.rss_empty:.1f} MB", ""],
        [f"RSS, {jobs} jobs just added", f"{p1.rss_added:.1f} MB", f"{per_job:.0f} B per job"],
        [f"RSS, {jobs} jobs, each checked in once", f"{p1.rss_round:.1f} MB", ""],
        ["peak RSS of the whole run (VmHWM)", f"{peak:.1f} MB", "all phases"],
        [f"watch_many({jobs})", f"{p1.add_s:.3f} s", "synchronous: the loop waits"],
        [
            f"burst: {p1.burst_done} first check-ins",
            f"{burst_rate:.0f} /s",
            f"{p1.burst_ok} ok; {p1.burst_cpu_s / p1.burst_done * 1e6:.0f} us CPU each",
        ],
    ]
    for quiet in p1.idle:
        rows.append(
            [
                f"{quiet.label}: CPU in {quiet.wall_s:.1f} s",
                f"{quiet.cpu_s:.3f} s",
                f"{quiet.cpu_s / quiet.wall_s * 100:.2f} % of a core; "
                f"server saw {rates(quiet.requests, quiet.wall_s)}",
            ]
        )
    print()
    print(table(rows))

    base = sorted(p0.lateness)
    b50, b99 = percentile(base, 0.50), percentile(base, 0.99)
    hb_cpu = p2.cpu_s / p2.window_s
    base_cpu = p0.cpu_s / p0.seconds
    hb_requests = sum(p2.server_requests.values())
    hb_per_request = p2.cpu_s / max(hb_requests, 1)
    base_per_request = p0.cpu_s / max(len(base), 1)
    steady = [[f"at {rate:,.0f} check-ins/s", "heartbeat", "bare aiohttp", "ratio"]]
    steady += [
        [
            "check-ins started per second",
            f"{len(late) / p2.window_s:.0f}",
            f"{len(base) / p0.seconds:.0f}",
            "",
        ],
        [
            "all requests per second (server count)",
            f"{hb_requests / p2.window_s:.0f}",
            f"{len(base) / p0.seconds:.0f}",
            "",
        ],
        ["client CPU, % of a core", f"{hb_cpu * 100:.1f}", f"{base_cpu * 100:.1f}", ""],
        [
            "client CPU per request, us",
            f"{hb_per_request * 1e6:.0f}",
            f"{base_per_request * 1e6:.0f}",
            f"{hb_per_request / base_per_request:.2f}",
        ],
        ["lateness p50, ms", f"{p50 * 1000:.1f}", f"{b50 * 1000:.1f}", ""],
        ["lateness p99, ms", f"{p99 * 1000:.1f}", f"{b99 * 1000:.1f}", ""],
        ["lateness max, ms", f"{late[-1] * 1000:.1f}", f"{base[-1] * 1000:.1f}", ""],
        [
            "lateness mean, ms",
            f"{statistics.fmean(late) * 1000:.1f}",
            f"{statistics.fmean(base) * 1000:.1f}",
            "",
        ],
    ]
    print()
    print(table(steady))
    print(
        f"(heartbeat: {len(late)} of {p2.expected} check-ins due in the {p2.window_s:.0f} s "
        f"window, {p2.failed} failed; server at {p2.server_cpu_s / p2.window_s * 100:.1f} % "
        f"of a core, saw {rates(p2.server_requests, p2.window_s)})"
    )
    if missing > 0:
        late_by = f"{GRACE_SECONDS:.0f} s after it"
        print(f"({missing} check-ins due in the window had not started {late_by})")

    targets = [["target", "measured", "limit", "met"]]
    targets += [
        [
            f"RSS with {jobs} jobs",
            f"{rss_jobs:.1f} MB",
            f"{RSS_TARGET_MB:.0f} MB",
            verdict(rss_jobs, RSS_TARGET_MB),
        ],
        [
            f"p99 lateness at {rate:,.0f}/s",
            f"{p99 * 1000:.1f} ms",
            f"{P99_TARGET_S * 1000:.0f} ms",
            verdict(p99_honest, P99_TARGET_S),
        ],
    ]
    print()
    print(table(targets))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=45.0)
    parser.add_argument("--adds", action="store_true", help="RSS per job, longest block")
    parser.add_argument("--counts", default="100000,1000000", help="job counts for --adds")
    parser.add_argument("--adds-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.adds_child:
        _adds.run_child(args.adds_child, args.url)
        return 0
    if args.adds:
        with running_stub() as url:
            counts = [int(n) for n in args.counts.split(",")]
            _adds.report(_adds.measure(counts, url, Path(__file__)))
        return 0
    devnull = open(os.devnull, "w")  # noqa: SIM115
    logs.configure(format="json", level="info", stream=devnull)

    def say(text: str) -> None:
        print(text, flush=True)

    return asyncio.run(main_async(args.jobs, args.window, say))


if __name__ == "__main__":
    sys.exit(main())
