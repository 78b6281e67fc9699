"""``bench/scale.py --adds``: RSS per watched job, and the longest event-loop block while
jobs are added from the configuration, the state file and one ``POST /jobs``.

Each job count runs in a fresh child process (``python bench/scale.py --adds-child N``),
so one count's garbage is not the next one's RSS. The child:

1. imports everything, enters and leaves one Heartbeat with no job (its one-off costs),
   and reads RSS: the baseline;
2. makes N ids (20 characters, like real sync-job ids) and a Heartbeat whose
   ``[jobs] ids`` are those N, with a state dir and the control API on a unix socket;
   enters it (the ids are added from the configuration) and reads RSS once they are
   all watched, then again after the state file with N jobs is written;
3. POSTs one ``/jobs`` body of new ids, as many as fit the API's 64 KiB limit (its
   answer waits for the state file with N + those ids to be written);
4. gives every job an outcome (a last success, failures for one in seven, as check-ins
   would) and writes ``outcomes.json`` as the saver does every period;
5. leaves, and enters a second Heartbeat on the same state dir and configuration, as
   a restart does: the N + posted ids come back from the state file with their
   outcomes (then the configuration's N are found already watched).

The longest block is what :class:`heartbeat.health.LagMonitor` (the daemon's own
``heartbeat_event_loop_lag_seconds``) measures, sampling every 5 ms, during each of
steps 2 to 5: how much later than asked a sleeping task woke up. The check-ins go
to ``bench/_stub.py`` in another process; the interval is an hour, so few go out.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel

from heartbeat.config import (
    Config,
    ControlSettings,
    ElasticsearchSettings,
    JobsSettings,
    ScheduleSettings,
    StateSettings,
)
from heartbeat.control import MAX_BODY, ControlSource
from heartbeat.daemon import Heartbeat
from heartbeat.health import LagMonitor

API_KEY = "YmVuY2g6YmVuY2gta2V5LW5vdC1hLXNlY3JldA=="
#: The issue's targets: RSS in MB per job count, and the longest block in seconds.
RSS_TARGETS_MB = {100_000: 80.0, 1_000_000: 450.0}
BLOCK_TARGET_S = 0.100
SAMPLE_PERIOD = 0.005


class LongestBlock(LagMonitor):
    """The lag monitor, keeping the worst sample since :meth:`reset`, and the longest
    garbage collection since then (``gc.callbacks``: the profile behind a block)."""

    def __init__(self) -> None:
        super().__init__(threshold=float("inf"))
        self.worst = 0.0
        self.worst_gc = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._collection)

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.worst_gc = max(self.worst_gc, time.perf_counter() - self._gc_started)

    def observe(self, lag: float, now: float) -> None:
        super().observe(lag, now)
        self.worst = max(self.worst, lag)

    def reset(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def reset_gc(self) -> float:
        worst, self.worst_gc = self.worst_gc, 0.0
        return worst


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


def config(url: str, ids: list[str], state: Path, socket: Path) -> Config:
    return Config(
        elasticsearch=ElasticsearchSettings(hosts=[url], api_key=API_KEY),
        schedule=ScheduleSettings(interval=3600.0),
        jobs=JobsSettings(ids=ids),
        state=StateSettings(dir=state),
        control=ControlSettings(socket=socket),
    )


async def until_saved(hb: Heartbeat) -> None:
    assert hb.state is not None
    hb.state.changed()
    await hb.state.persisted()


async def child(jobs: int, url: str) -> dict[str, Any]:
    monitor = LongestBlock()
    result: dict[str, Any] = {"jobs": jobs}
    with tempfile.TemporaryDirectory() as tmp:
        state, socket = Path(tmp) / "state", Path(tmp) / "control.sock"
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor.run, SAMPLE_PERIOD)
            async with Heartbeat(config(url, [], Path(tmp) / "warm", socket)):
                pass
            gc.collect()
            result["rss_empty_mb"] = rss_mb()
            ids = [f"c{i:019d}" for i in range(jobs)]
            # Loaded (and validated by pydantic) before the event loop, as by `run`.
            first = config(url, ids, state, socket)
            await anyio.sleep(0.05)
            monitor.reset()
            monitor.reset_gc()
            start = time.perf_counter()
            async with Heartbeat(first) as hb:
                result["config_add_s"] = time.perf_counter() - start
                result["block_config_s"] = monitor.reset()
                result["gc_config_s"] = monitor.reset_gc()
                gc.collect()
                result["rss_added_mb"] = rss_mb()
                await until_saved(hb)
                result["block_save_s"] = monitor.reset()
                result["gc_save_s"] = monitor.reset_gc()
                result["rss_saved_mb"] = rss_mb()
                await hb.start(ControlSource(hb.config.control).run, hb)
                posted = post_body(jobs)
                monitor.reset()
                monitor.reset_gc()
                async with aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(socket))
                ) as session:
                    start = time.perf_counter()
                    async with session.post("http://control/jobs", data=posted[1]) as answer:
                        body = await answer.json()
                    result["post_s"] = time.perf_counter() - start
                result["post_ids"] = posted[0]
                result["post_added"] = len(body.get("added", ()))
                result["block_post_s"] = monitor.reset()
                result["gc_post_s"] = monitor.reset_gc()
                await give_outcomes(hb)
                monitor.reset()
                monitor.reset_gc()
                start = time.perf_counter()
                await write_outcomes(hb)
                result["outcomes_s"] = time.perf_counter() - start
                result["block_outcomes_s"] = monitor.reset()
                result["gc_outcomes_s"] = monitor.reset_gc()
            again = config(url, ids, state, socket)
            await anyio.sleep(0.05)
            monitor.reset()
            monitor.reset_gc()
            start = time.perf_counter()
            async with Heartbeat(again) as hb:
                result["state_add_s"] = time.perf_counter() - start
                result["block_state_s"] = monitor.reset()
                result["gc_state_s"] = monitor.reset_gc()
                result["restored"] = len(hb.scheduler)
            tg.cancel_scope.cancel()
    result["peak_mb"] = peak_mb()
    return result


async def give_outcomes(hb: Heartbeat) -> None:
    """An outcome for every job, as check-ins would leave them (not measured)."""
    now = hb.scheduler.clock.wall()
    for n, job_id in enumerate(hb.scheduler.watchlist.job_ids()):
        if not n % 10_000:
            await anyio.lowlevel.checkpoint()
        failing = n % 7 == 0
        hb.scheduler.watchlist.restore_outcome(
            job_id, now - n % 60, 2 if failing else 0, "http_503: busy" if failing else None
        )


async def write_outcomes(hb: Heartbeat) -> None:
    """``outcomes.json`` once, as the state saver writes it every period."""
    assert hb.state is not None
    assert hb.state._outcomes_snapshot is not None
    await hb.state._write_outcomes(hb.state._outcomes_snapshot())


def post_body(jobs: int) -> tuple[int, bytes]:
    """The most new ids one POST /jobs takes (its body limit is MAX_BODY bytes)."""
    count = MAX_BODY // 24
    while True:
        body = json.dumps({"ids": [f"p{jobs + i:019d}" for i in range(count)]}).encode()
        if len(body) <= MAX_BODY:
            return count, body
        count -= 10


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(jobs: int, url: str) -> None:
    from heartbeat import logs

    logs.configure(format="json", level="info", stream=open("/dev/null", "w"))  # noqa: SIM115
    print(json.dumps(asyncio.run(child(jobs, url))), flush=True)


def measure(counts: list[int], url: str, script: Path) -> list[dict[str, Any]]:
    results = []
    for jobs in counts:
        print(f"adds: {jobs} jobs in a fresh process...", flush=True)
        done = subprocess.run(
            [sys.executable, str(script), "--adds-child", str(jobs), "--url", url],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(f"the {jobs}-job child failed ({done.returncode}):\n{done.stderr[-4000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def block_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms = {seconds / BLOCK_TARGET_S:.2f} x"


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else f"missed by {value - limit:.3g}"


def report(results: list[dict[str, Any]]) -> None:
    rows = [["jobs", "RSS empty", "RSS added", "per job", "after save", "peak", "target"]]
    collections = [["jobs", "config", "state file", "save", "POST", "outcomes", ""]]
    blocks = [
        [
            "jobs",
            "config",
            "state file (restart)",
            "save",
            "one POST /jobs",
            "outcomes write",
            "target 100 ms",
        ]
    ]
    for r in results:
        jobs = r["jobs"]
        per_job = (r["rss_added_mb"] - r["rss_empty_mb"]) * 2**20 / jobs
        limit = RSS_TARGETS_MB.get(jobs)
        worst_rss = max(r["rss_added_mb"], r["rss_saved_mb"])
        rows.append(
            [
                f"{jobs:,}",
                f"{r['rss_empty_mb']:.1f} MB",
                f"{r['rss_added_mb']:.1f} MB",
                f"{per_job:.0f} B",
                f"{r['rss_saved_mb']:.1f} MB",
                f"{r['peak_mb']:.1f} MB",
                "" if limit is None else f"{limit:.0f} MB: {verdict(worst_rss, limit)}",
            ]
        )
        paths = ("config", "state", "save", "post", "outcomes")
        worst = max(r[f"block_{path}_s"] for path in paths)
        block = {path: block_ms(r[f"block_{path}_s"]) for path in paths}
        collections.append(
            [f"{jobs:,}", *(f"{r[f'gc_{path}_s'] * 1000:.0f} ms" for path in paths), ""]
        )
        blocks.append(
            [
                f"{jobs:,}",
                f"{block['config']} (in {r['config_add_s']:.2f} s)",
                f"{block['state']} (in {r['state_add_s']:.2f} s)",
                block["save"],
                f"{block['post']} ({r['post_added']} ids, {r['post_s']:.2f} s)",
                f"{block['outcomes']} (in {r['outcomes_s']:.2f} s)",
                verdict(worst * 1000, BLOCK_TARGET_S * 1000),
            ]
        )
        assert r["restored"] == jobs + r["post_added"], r
    print()
    print(table(rows))
    print("(per job: RSS added over RSS empty, the id string and the config's list included)")
    print()
    print("longest event-loop block while adding (LagMonitor, 5 ms samples):")
    print(table(blocks))
    print("(save: the first state-file write after the add, not an add itself;")
    print(" x: the block over the 100 ms goal)")
    print()
    print("longest garbage collection in each (gc.callbacks), the profile behind a block:")
    print(table(collections))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
