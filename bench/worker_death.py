"""When the worker dies: how long until its jobs' last check-in, per deployment.

Measures, with real processes and real time, the time from the worker's death to the
last check-in of its job that reaches Elasticsearch (the built-in emulator, in this
process; heartbeat as a library in this process; the worker a real subprocess):

* ``pid_file``: the worker stand-in is killed with SIGKILL;
* ``health_url``: the health endpoint starts answering 503, and, in another round,
  stops answering at all (a hung worker: every probe times out);
* a lease (``ttl``): the producer stops renewing right after a renewal (the worst case).

The check-in interval is short (0.2 s), so a check-in is due at every moment: what is
measured is how long heartbeat keeps vouching, the worst case for any interval. The
probes run with the defaults (``probe_interval`` 5 s, ``probe_timeout`` 2 s,
``failure_threshold`` 3) unless ``--quick``. The worker dies at a random moment of the
probe cycle; each deployment is measured ``--rounds`` times and the worst is printed
next to the bound it is held to.

From the last check-in, Elasticsearch's connector service fails the job as idle once
its ``last_seen`` is 300 s old, at its next cleanup (every 300 s): 300-600 s more. That
part is Elasticsearch's and is added, not measured (the emulator has no idle cleanup).

    python bench/worker_death.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from heartbeat import logs
from heartbeat.config import Config
from heartbeat.daemon import Heartbeat
from heartbeat.emulator import Emulator, serve
from tests.helpers_worker import WorkerProcess, health_server

INTERVAL = 0.2
IDLE_AFTER = 300.0
CLEANUP_EVERY = 300.0


def config_for(url: str, probe: dict[str, Any], worker: dict[str, Any]) -> Config:
    return Config(
        elasticsearch={"hosts": [url], "request_timeout": 2},
        schedule={"interval": INTERVAL, "jitter": 0.0, "status_check_interval": 0},
        state={"dir": None},
        logging={"level": "warning"},
        worker={**probe, **worker},
    )


async def wait_for(check: Any, within: float = 60.0) -> None:
    with anyio.fail_after(within):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


async def last_checkin_after(
    emu: Emulator, job: str, death: float, stopped: Any, settle: float = 1.0
) -> float:
    """Wait until heartbeat has stopped vouching (``stopped()``) and then ``settle``
    seconds more; return the time from ``death`` to the job's last check-in."""
    await wait_for(stopped)
    await anyio.sleep(settle)
    times = [r.at for r in emu.checkins(job)]
    return max(0.0, max(times) - death) if times else 0.0


async def pid_file_round(emu: Emulator, url: str, probe: dict[str, Any], cycle: float) -> float:
    with tempfile.TemporaryDirectory() as directory:
        worker = WorkerProcess(Path(directory) / "worker.pid")
        worker.start()
        job = emu.create_job("c1", worker_hostname="w")
        try:
            async with Heartbeat(config_for(url, probe, {"pid_file": str(worker.pid_file)})) as hb:
                hb.watch(job)
                await wait_for(lambda: len(emu.checkins(job)) >= 3)
                await anyio.sleep(random.uniform(0, cycle))
                death = time.monotonic()
                worker.kill()
                return await last_checkin_after(emu, job, death, lambda: not hb.worker.up)
        finally:
            worker.close()


async def health_round(
    emu: Emulator, url: str, probe: dict[str, Any], cycle: float, *, hung: bool
) -> float:
    async with health_server() as health:
        job = emu.create_job("c1", worker_hostname="w")
        async with Heartbeat(config_for(url, probe, {"health_url": health.url})) as hb:
            hb.watch(job)
            await wait_for(lambda: len(emu.checkins(job)) >= 3)
            await anyio.sleep(random.uniform(0, cycle))
            death = time.monotonic()
            if hung:
                health.delay = 3600.0  # accepts, never answers: each probe times out
            else:
                health.status = 503
            return await last_checkin_after(emu, job, death, lambda: not hb.worker.up)


async def lease_round(emu: Emulator, url: str, ttl: float) -> float:
    job = emu.create_job("c1", worker_hostname="w")
    config = Config(
        elasticsearch={"hosts": [url], "request_timeout": 2},
        schedule={"interval": INTERVAL, "jitter": 0.0, "status_check_interval": 0},
        state={"dir": None},
        logging={"level": "warning"},
    )
    async with Heartbeat(config) as hb:
        hb.watch(job, source="control", ttl=ttl)
        await wait_for(lambda: len(emu.checkins(job)) >= 3)
        hb.watch(job, source="control", ttl=ttl)  # the producer's last renewal...
        death = time.monotonic()  # ...and then it dies
        return await last_checkin_after(emu, job, death, lambda: job not in hb.scheduler)


def line(name: str, values: list[float], bound: float, formula: str) -> None:
    worst = max(values)
    print(
        f"{name:34} worst {worst:6.2f} s  (rounds: {', '.join(f'{v:.2f}' for v in values)})"
        f"  bound {bound:6.2f} s = {formula}  worst/bound {worst / bound:.2f}"
        f"  -> job failed by Elasticsearch {worst + IDLE_AFTER:.0f}-"
        f"{worst + IDLE_AFTER + CLEANUP_EVERY:.0f} s after the death"
    )


async def main(rounds: int, quick: bool) -> None:
    probe = (
        {"probe_interval": 1.0, "probe_timeout": 0.5, "failure_threshold": 3}
        if quick
        else {"probe_interval": 5.0, "probe_timeout": 2.0, "failure_threshold": 3}
    )
    cycle, threshold = probe["probe_interval"], probe["failure_threshold"]
    ttl = 5.0 if quick else 10.0
    emu = Emulator()
    async with serve(emu) as url:
        print(
            f"probe_interval {cycle:g} s, probe_timeout {probe['probe_timeout']:g} s, "
            f"failure_threshold {threshold}; check-in interval {INTERVAL} s; {rounds} rounds"
        )
        bound = cycle * threshold + INTERVAL
        values = [await pid_file_round(emu, url, probe, cycle) for _ in range(rounds)]
        line("pid_file, worker SIGKILLed", values, bound, "probe_interval x threshold + interval")
        values = [await health_round(emu, url, probe, cycle, hung=False) for _ in range(rounds)]
        line("health_url, answers 503", values, bound, "probe_interval x threshold + interval")
        values = [await health_round(emu, url, probe, cycle, hung=True) for _ in range(rounds)]
        hung_bound = bound + probe["probe_timeout"]
        line("health_url, hangs", values, hung_bound, "... + probe_timeout")
        values = [await lease_round(emu, url, ttl) for _ in range(rounds)]
        line(f"lease, ttl {ttl:g} s, producer dead", values, ttl + INTERVAL, "ttl + interval")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 s probes instead of 5 s")
    args = parser.parse_args()
    logs.configure(format="console", level="error")  # worker_down lines are errors: quiet
    anyio.run(main, args.rounds, args.quick)
