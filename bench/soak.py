"""Soak: many jobs, a short interval, random faults, for minutes; then the figures.

    python bench/soak.py [--jobs 10000] [--interval 1] [--minutes 10] [--seed 1]

Runs the built-in emulator in a separate process (its jobs kept in a data file so a
restart keeps them, as Elasticsearch would) and a Heartbeat in this process. Every
20-40 s a random fault is injected through the emulator's control API for 3-8 s: a 503
storm, 429 with Retry-After, slow answers, connection resets, or a restart of the
emulator process. Reports requests, successes, drops, the largest gap between two
successful check-ins of one job (the figure that matters: it must stay far below the
300 s idle rule), the achieved check-in rate, and RSS at start and end.

Loopback only; stops by itself. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc

from heartbeat import Heartbeat, logs
from heartbeat.config import BackoffSettings, Config, ElasticsearchSettings, ScheduleSettings
from heartbeat.outcomes import NotFound, Outcome, Rejected, Success


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stats:
    def __init__(self, ids: list[str], now: float) -> None:
        self.last_ok = dict.fromkeys(ids, now)
        self.max_gap = 0.0
        self.max_gap_job = ""
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.drops = 0

    def observe(self, job_id: str, outcome: Outcome, _seconds: float) -> None:
        self.requests += 1
        now = time.monotonic()
        if isinstance(outcome, Success):
            self.successes += 1
            gap = now - self.last_ok.get(job_id, now)
            if gap > self.max_gap:
                self.max_gap, self.max_gap_job = gap, job_id
            self.last_ok[job_id] = now
        elif isinstance(outcome, (NotFound, Rejected)):
            self.drops += 1
        else:
            self.failures += 1

    def open_gap(self, watched: set[str]) -> float:
        """The longest time any still-watched job has now gone without a success."""
        now = time.monotonic()
        return max((now - t for j, t in self.last_ok.items() if j in watched), default=0.0)


class Emulator:
    def __init__(self, port: int, data: Path) -> None:
        self.port = port
        self.data = data
        self.url = f"http://127.0.0.1:{port}"
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        self.process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "heartbeat",
                "emulator",
                "--port",
                str(self.port),
                "--data",
                str(self.data),
            ],
            stderr=None,
        )
        assert self.process.stdout is not None
        with anyio.fail_after(60):
            await self.process.stdout.receive()

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            with anyio.fail_after(60):
                await self.process.wait()
            await self.process.aclose()
            self.process = None


async def inject(session: aiohttp.ClientSession, url: str, fault: dict[str, Any] | None) -> None:
    if fault is None:
        async with session.delete(f"{url}/_emulator/faults") as response:
            await response.read()
        return
    body = {"mode": "always", "job_id": None, "faults": [fault]}
    async with session.post(f"{url}/_emulator/faults", json=body) as response:
        await response.read()


FAULTS: dict[str, dict[str, Any] | None] = {
    "503 storm": {"status": 503},
    "429 Retry-After 2": {"status": 429, "retry_after": "2"},
    "slow answers (3 s)": {"delay": 3.0},
    "connection resets": {"reset": True},
    "emulator restart": None,
}


async def soak(jobs: int, interval: float, minutes: float, seed: int) -> None:
    rng = random.Random(seed)
    logs.configure(format="console", level="info")
    workdir = Path(tempfile.mkdtemp(prefix="heartbeat-soak-"))
    data = workdir / "jobs.json"
    ids = [f"soak-{n:06}" for n in range(jobs)]
    data.write_text(
        json.dumps(
            [
                {
                    "job_id": i,
                    "connector_id": "c1",
                    "job_type": "full",
                    "status": "in_progress",
                    "worker_hostname": "soak",
                }
                for i in ids
            ]
        )
    )
    emulator = Emulator(free_port(), data)
    await emulator.start()
    config = Config(
        elasticsearch=ElasticsearchSettings(hosts=[emulator.url], request_timeout=5.0),
        schedule=ScheduleSettings(
            interval=interval, jitter=0.1, max_in_flight=64, ramp_rate=2000.0
        ),
        backoff=BackoffSettings(initial=0.5, multiplier=2.0, max=10.0),
    )
    rss_start = rss_mb()
    stats = Stats(ids, time.monotonic())
    log: list[str] = []
    started = time.monotonic()
    deadline = started + minutes * 60
    try:
        async with aiohttp.ClientSession() as session, Heartbeat(config) as hb:
            hb.scheduler.outcome_observers.append(stats.observe)
            hb.watch_many(ids, "soak")
            await anyio.sleep(min(30.0, minutes * 10))
            rss_ramped = rss_mb()
            while time.monotonic() < deadline - 15:
                await anyio.sleep(rng.uniform(20, 40))
                if time.monotonic() > deadline - 15:
                    break
                name = rng.choice(list(FAULTS))
                length = rng.uniform(3, 8)
                at = time.monotonic() - started
                log.append(f"{at:6.0f} s  {name} for {length:.1f} s")
                print(
                    f"[{at:6.0f} s] {name} for {length:.1f} s "
                    f"(requests so far {stats.requests}, max gap {stats.max_gap:.1f} s)",
                    flush=True,
                )
                if name == "emulator restart":
                    await emulator.stop()
                    await anyio.sleep(length)
                    await emulator.start()
                else:
                    await inject(session, emulator.url, FAULTS[name])
                    await anyio.sleep(length)
                    await inject(session, emulator.url, None)
            await anyio.sleep(max(0.0, deadline - time.monotonic()))
            watched = {job.id for job in hb.jobs()}
            open_gap = stats.open_gap(watched)
            rss_end = rss_mb()
    finally:
        await emulator.stop()
    elapsed = time.monotonic() - started
    print()
    print(f"soak: {jobs} jobs, interval {interval:g} s, {elapsed / 60:.1f} min, seed {seed}")
    print("faults injected:")
    for line in log:
        print(f"  {line}")
    print(f"{'requests':<34}{stats.requests:>12}")
    print(f"{'successes':<34}{stats.successes:>12}")
    print(f"{'failed attempts (retried)':<34}{stats.failures:>12}")
    print(f"{'drops':<34}{stats.drops:>12}")
    print(f"{'jobs still watched':<34}{len(watched):>12}")
    print(f"{'achieved check-ins/s':<34}{stats.successes / elapsed:>12.0f}")
    print(f"{'target check-ins/s (jobs/interval)':<34}{jobs / interval:>12.0f}")
    print(
        f"{'largest gap between successes':<34}{max(stats.max_gap, open_gap):>10.1f} s"
        f"  ({stats.max_gap_job})"
    )
    print(
        f"{'RSS start / ramped / end':<34}{rss_start:>6.0f} / {rss_ramped:.0f} / {rss_end:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    anyio.run(soak, args.jobs, args.interval, args.minutes, args.seed)


if __name__ == "__main__":
    main()
