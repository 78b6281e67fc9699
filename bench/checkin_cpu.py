"""Client-side CPU per 10,000 check-ins: heartbeat vs bare aiohttp vs the official client.

One stand-in server in a separate process (its CPU is not counted) answers every
check-in as Elasticsearch does (200, ``{"result":"updated"}``, ``X-Elastic-Product``):
first ``bench/_stub.py`` (aiohttp), then nginx (``bench/_nginx.py``, a C server that
is never the bottleneck), each measured and printed in turn (``--server`` picks one);
not the emulator, which grows a request log, so every variant sees the same, steady
server. In this process, each variant makes
10,000 check-ins with the same concurrency, the same headers and one connection pool,
and we measure ``time.process_time()`` (user + system CPU of this process, all
threads) around those 10,000 only: set-up, a warm-up that opens the connections,
and tear-down are outside the measurement.

Variants:

* ``heartbeat/scheduler``: the daemon's path. A :class:`heartbeat.Heartbeat` (real
  Scheduler + Client, logging configured as ``heartbeat run`` does, at info level)
  is given 10,000 jobs due at once (``ramp_rate`` high) and grants them
  ``max_in_flight`` at a time; done when the outcome observer has seen 10,000.
  Its periodic status reads (``status_check_interval``, GETs, not check-ins) are
  turned off. The headline ratios use this one.
* ``heartbeat/client``: ``Client.check_in`` alone, from ``max_in_flight`` workers.
* ``bare aiohttp``: one ``ClientSession`` with the same headers, ``max_in_flight``
  workers, ``PUT`` + read the body + check the status. The floor flat out.
* ``paced floor`` (paced only): ``bench/_floor.py``, a smart paced loop on bare
  aiohttp: every 20 ms tick puts the requests due by then on a queue that
  ``max_in_flight`` workers drain. The floor paced: one wake-up per tick, not one per
  request (the ``bare aiohttp`` workers, paced, each sleep until their next request).
* ``official client``: ``AsyncElasticsearch(...).connector.sync_job_check_in`` from
  ``max_in_flight`` workers, pool of ``max_in_flight + 4`` connections (as heartbeat;
  its default is 10). Warnings keep Python's default filters, so each call still
  pays for its ``GeneralAvailabilityWarning`` (``inspect.stack()`` and
  ``warnings.warn``); only the printing is replaced by a counter.
* ``bare aiohttp + 2 us`` (flat out only), the control: bare aiohttp plus 2 us of
  pure Python (a counting loop, calibrated at start-up) per check-in. What it costs
  above bare aiohttp shows what any client doing a little more per request pays in
  the flat-out measurement, over and above the work itself.

Two measurements, each with the four variants above (and the control, flat out):

* **flat out**: every check-in is due at once and each variant goes as fast as it can.
  The client and the stub then each keep one of this machine's two cores nearly busy,
  and a client's CPU per request is not only its own work: the control measures that
  2 us more pure Python per check-in shows as 2-10 us more here, from run to run.
* **paced**: the check-ins are spread at ``--rate`` per second (default 1,000, the rate
  the scale benchmark's lateness is measured at; 100,000 jobs at the default 60 s
  interval need 1,667/s). Every variant sends the same requests at the same moments:
  the daemon from its ramp (``ramp_rate``), the others from a loop that sleeps until
  each request's time. This is how the daemon runs in production: the scheduler's
  own sleeping and waking is measured too.

Rounds are interleaved (a, a', b, c, a, a', b, c, ...); the table shows the median.
Ratios are taken within each round and the median of those is held to the targets
(the ratio of the medians is printed beside it).
Targets (issue 13): paced, heartbeat / paced floor <= 1.05; flat out, heartbeat / bare
aiohttp <= 1.10; both, heartbeat / official client <= 0.5.

Usage: ``python bench/checkin_cpu.py [--rounds 7] [--paced-rounds 5] [--rate 1000]
[--checkins 10000] [--concurrency 32]`` (``--rate 0`` skips the paced measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote

# `python bench/checkin_cpu.py` puts bench/ first on sys.path.
import _floor
import aiohttp
from _nginx import SERVERS, running_server

from heartbeat import logs
from heartbeat.client import ACCEPT, USER_AGENT, Client
from heartbeat.config import Config, ElasticsearchSettings, ScheduleSettings, StateSettings
from heartbeat.daemon import Heartbeat
from heartbeat.outcomes import Outcome, Success

API_KEY = "YmVuY2g6YmVuY2gta2V5LW5vdC1hLXNlY3JldA=="
WARMUP = 300
#: Flat out: heartbeat / bare aiohttp with 32 workers (issue 13).
TARGET_BARE = 1.10
#: Paced: heartbeat / the paced floor (bench/_floor.py).
TARGET_FLOOR = 1.05
TARGET_OFFICIAL = 0.5


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    ok: int


#: (server url, warm-up ids, measured ids, concurrency, check-ins per second or None)
Measured = Callable[[str, list[str], list[str], int, float | None], Awaitable[Run]]


def job_ids(prefix: str, count: int) -> list[str]:
    """Ids shaped like real sync-job ids (20 url-safe characters)."""
    return [f"{prefix}{i:0{20 - len(prefix)}d}" for i in range(count)]


async def drive(
    call: Callable[[str], Awaitable[bool]],
    ids: Iterable[str],
    concurrency: int,
    rate: float | None = None,
) -> int:
    """``concurrency`` workers take ids from one iterator; returns how many succeeded.
    With ``rate``, id number i is not sent before i / rate seconds from the start."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    it = enumerate(ids)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for index, job_id in it:
            if rate is not None:
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            succeeded = await call(job_id)  # not `ok += await ...`: that loses updates
            ok += succeeded

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def timed(
    call: Callable[[str], Awaitable[bool]],
    warm: list[str],
    ids: list[str],
    concurrency: int,
    rate: float | None,
) -> Run:
    await drive(call, warm, concurrency)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    ok = await drive(call, ids, concurrency, rate)
    return Run(time.process_time() - cpu, time.perf_counter() - wall, ok)


def settings(url: str) -> ElasticsearchSettings:
    return ElasticsearchSettings(hosts=[url], api_key=API_KEY, request_timeout=30.0)


async def heartbeat_scheduler(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    schedule: dict[str, float] = {
        # interval: nobody is due twice during a run; ramp_rate: new jobs are due one
        # 1/rate apart (flat out: everyone is due now).
        "interval": 3600.0,
        "max_in_flight": concurrency,
        "ramp_rate": rate or 1e9,
    }
    if "status_check_interval" in ScheduleSettings.model_fields:
        # Status reads (GET, one per job per interval) are not check-ins: off here.
        schedule["status_check_interval"] = 0.0
    config = Config(
        elasticsearch=settings(url),
        schedule=ScheduleSettings(**schedule),
        state=StateSettings(dir=None),
    )
    ok = 0
    seen = 0
    target = 0
    done = asyncio.Event()

    def observe(_job_id: str, outcome: Outcome, _seconds: float) -> None:
        nonlocal ok, seen
        seen += 1
        ok += isinstance(outcome, Success)
        if seen >= target:
            done.set()

    async with Heartbeat(config) as hb:
        hb.scheduler.outcome_observers.append(observe)
        target = len(warm)
        hb.watch_many(warm, "bench")
        await done.wait()
        done.clear()
        seen = ok = 0
        target = len(ids)
        # watch_many is synchronous: no check-in starts before we await, so adding
        # the jobs is not measured; only their check-ins are.
        gc.collect()
        hb.watch_many(ids, "bench")
        cpu, wall = time.process_time(), time.perf_counter()
        await done.wait()
        run = Run(time.process_time() - cpu, time.perf_counter() - wall, ok)
    return run


async def heartbeat_client(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    async with Client(settings(url), max_in_flight=concurrency) as client:

        async def call(job_id: str) -> bool:
            return isinstance(await client.check_in(job_id), Success)

        return await timed(call, warm, ids, concurrency, rate)


def bare_session(url: str, concurrency: int) -> aiohttp.ClientSession:
    """The baseline's session: the same headers and pool size as heartbeat's."""
    headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT, "Authorization": f"ApiKey {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    # Without skip_auto_headers aiohttp would add "Content-Type: application/octet-stream"
    # to the empty PUT; heartbeat does not send it, so neither does the baseline.
    return aiohttp.ClientSession(
        url, connector=connector, headers=headers, skip_auto_headers=("Content-Type",)
    )


async def bare_aiohttp(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    async with bare_session(url, concurrency) as session:

        async def call(job_id: str) -> bool:
            path = f"/_connector/_sync_job/{quote(job_id, safe=',*')}/_check_in"
            async with session.put(path) as response:
                await response.read()
                return response.status == 200

        return await timed(call, warm, ids, concurrency, rate)


#: The control variant adds this much pure Python CPU to each of bare aiohttp's
#: check-ins (calibrated at start-up by :func:`calibrate`).
CONTROL_US = 2.0
control_spins = 0


def spin(count: int) -> int:
    total = 0
    for i in range(count):
        total += i
    return total


def calibrate() -> int:
    """How many :func:`spin` steps take CONTROL_US of CPU, alone."""
    count = 1000
    started = time.process_time()
    for _ in range(2000):
        spin(count)
    per_step = (time.process_time() - started) / (2000 * count)
    return max(1, round(CONTROL_US * 1e-6 / per_step))


async def bare_aiohttp_control(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    """bare aiohttp plus CONTROL_US of pure Python per check-in: what adding a known
    amount of work to a client costs in this measurement (see the module docstring)."""
    async with bare_session(url, concurrency) as session:

        async def call(job_id: str) -> bool:
            path = f"/_connector/_sync_job/{quote(job_id, safe=',*')}/_check_in"
            async with session.put(path) as response:
                await response.read()
                spin(control_spins)
                return response.status == 200

        return await timed(call, warm, ids, concurrency, rate)


shown_warnings = 0


def count_warning(*_args: object, **_kwargs: object) -> None:
    global shown_warnings
    shown_warnings += 1


async def official_client(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    from elasticsearch import AsyncElasticsearch

    es = AsyncElasticsearch(
        url, api_key=API_KEY, connections_per_node=concurrency + 4, request_timeout=30.0
    )
    try:

        async def call(job_id: str) -> bool:
            response = await es.connector.sync_job_check_in(connector_sync_job_id=job_id)
            return response.meta.status == 200

        return await timed(call, warm, ids, concurrency, rate)
    finally:
        await es.close()


async def paced_floor(
    url: str, warm: list[str], ids: list[str], concurrency: int, rate: float | None
) -> Run:
    """bench/_floor.py: a 20 ms tick feeds a queue that ``concurrency`` workers drain."""
    cpu_s, wall_s, ok = await _floor.paced_floor(
        lambda: bare_session(url, concurrency), warm, ids, concurrency, rate
    )
    return Run(cpu_s, wall_s, ok)


VARIANTS: list[tuple[str, Measured]] = [
    ("heartbeat/scheduler", heartbeat_scheduler),
    ("heartbeat/client", heartbeat_client),
    ("bare aiohttp", bare_aiohttp),
    ("official client", official_client),
]
#: Measured flat out only: the control is about the flat-out measurement.
CONTROL = "bare aiohttp + 2 us"
FLAT_OUT_ONLY = [(CONTROL, bare_aiohttp_control)]
#: Measured paced only: flat out, the floor is bare aiohttp itself.
FLOOR = "paced floor"
PACED_ONLY = [(FLOOR, paced_floor)]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def measure(
    url: str, rounds: int, checkins: int, concurrency: int, rate: float | None
) -> dict[str, list[Run]] | None:
    """Every variant ``rounds`` times, interleaved; None when one of them failed."""
    per_10k = 10_000 / checkins
    variants = VARIANTS + PACED_ONLY if rate else VARIANTS + FLAT_OUT_ONLY
    results: dict[str, list[Run]] = {name: [] for name, _ in variants}
    tag = "p" if rate else "f"
    for r in range(rounds):
        for name, variant in variants:
            warm = job_ids(f"w{tag}{r}{name[:3]}", WARMUP)
            ids = job_ids(f"r{tag}{r}{name[:3]}", checkins)
            run = await variant(url, warm, ids, concurrency, rate)
            if run.ok != checkins:
                print(f"error: {name}: {run.ok} of {checkins} check-ins succeeded")
                return None
            results[name].append(run)
            print(
                f"  round {r + 1}/{rounds}  {name:<20} {run.cpu_s * per_10k:6.3f} CPU s/10k"
                f"  {checkins / run.wall_s:7.0f} check-ins/s",
                flush=True,
            )
    return results


def report(results: dict[str, list[Run]], checkins: int) -> bool:
    """Print the table and the ratios; True when both targets are met."""
    per_10k = 10_000 / checkins
    median = {
        name: statistics.median(r.cpu_s for r in runs) * per_10k for name, runs in results.items()
    }
    rows = [["variant", "CPU s / 10k (median)", "min", "max", "us / check-in", "check-ins/s"]]
    for name, runs in results.items():
        cpus = [r.cpu_s * per_10k for r in runs]
        rate = statistics.median(checkins / r.wall_s for r in runs)
        rows.append(
            [
                name,
                f"{median[name]:.3f}",
                f"{min(cpus):.3f}",
                f"{max(cpus):.3f}",
                f"{median[name] * 100:.0f}",
                f"{rate:.0f}",
            ]
        )
    print()
    print(table(rows))
    print()
    # Each round runs every variant back to back, so a per-round ratio cancels most of
    # the drift of a shared machine; the verdict uses the median of those.
    met = True
    ratio_rows = [["ratio", "median per round", "of medians", "target", "met"]]
    # Paced, the floor is bench/_floor.py; flat out, bare aiohttp with 32 workers.
    paced = FLOOR in results
    pairs: list[tuple[str, str, float | None]] = [
        ("heartbeat/scheduler", FLOOR, TARGET_FLOOR)
        if paced
        else ("heartbeat/scheduler", "bare aiohttp", TARGET_BARE),
        ("heartbeat/scheduler", "official client", TARGET_OFFICIAL),
        ("heartbeat/client", "bare aiohttp", None if paced else TARGET_BARE),
        ("heartbeat/client", "official client", TARGET_OFFICIAL),
    ]
    if paced:
        pairs.append(("heartbeat/scheduler", "bare aiohttp", None))
        pairs.append(("bare aiohttp", FLOOR, None))
    for top, bottom, target in pairs:
        per_round = statistics.median(
            x.cpu_s / y.cpu_s for x, y in zip(results[top], results[bottom], strict=True)
        )
        if top == "heartbeat/scheduler" and target is not None:
            met = met and per_round <= target
        ratio_rows.append(
            [
                f"{top} / {bottom}",
                f"{per_round:.2f}",
                f"{median[top] / median[bottom]:.2f}",
                "" if target is None else f"<= {target:.2f}",
                "" if target is None else "yes" if per_round <= target else "NO",
            ]
        )
    print(table(ratio_rows))
    if CONTROL in results:
        added = statistics.median(
            (x.cpu_s - y.cpu_s) / checkins * 1e6
            for x, y in zip(results[CONTROL], results["bare aiohttp"], strict=True)
        )
        print(
            f"(control: {CONTROL_US:g} us of pure Python added to each bare aiohttp check-in "
            f"measured {added:+.1f} us per check-in here, median per round)"
        )
    return met


async def main_async(
    rounds: int,
    paced_rounds: int,
    rate: float,
    checkins: int,
    concurrency: int,
    servers: tuple[str, ...] = SERVERS,
) -> int:
    sections: list[tuple[str, int, float | None]] = [("flat out", rounds, None)]
    if rate > 0 and paced_rounds > 0:
        sections.append((f"paced at {rate:g} check-ins/s", paced_rounds, rate))
    verdicts: list[tuple[str, bool]] = []
    global control_spins
    control_spins = calibrate()
    for server in servers:
        with running_server(server) as (url, stats, description):
            print(
                f"\n==== server: {server} ({description}) at {url}\n"
                f"checkin_cpu: {checkins} check-ins per run, concurrency {concurrency}",
                flush=True,
            )
            for label, section_rounds, section_rate in sections:
                print(f"\n== {server}, {label}: {section_rounds} interleaved rounds", flush=True)
                before = stats()
                results = await measure(url, section_rounds, checkins, concurrency, section_rate)
                if results is None:
                    return 1
                after = stats()
                served = after["requests"] - before["requests"]
                server_cpu = (after["cpu_s"] - before["cpu_s"]) * 10_000 / served
                print(f"\n== {server}, {label}")
                verdicts.append((f"{server}, {label}", report(results, checkins)))
                print(f"(server: {server_cpu:.3f} CPU s per 10k requests, not counted above)")
    print(
        f"(official client: {shown_warnings} GeneralAvailabilityWarning shown, "
        "Python prints each location once; every call still builds it)"
    )
    print()
    for label, met in verdicts:
        print(f"heartbeat/scheduler targets {'met' if met else 'NOT met'}: {label}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="flat-out rounds (default 7)")
    parser.add_argument("--paced-rounds", type=int, default=5, help="paced rounds (default 5)")
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="check-ins per second of the paced rounds; 0 skips them (default 1000)",
    )
    parser.add_argument("--checkins", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--server",
        choices=[*SERVERS, "both"],
        default="both",
        help="the stand-in server: the aiohttp stub, nginx, or both in turn (default)",
    )
    args = parser.parse_args()
    # As `heartbeat run` configures it (info level); the lines go nowhere.
    devnull = open(os.devnull, "w")  # noqa: SIM115
    logs.configure(format="json", level="info", stream=devnull)
    # Default warning filters (so each call pays what a user's pays); no printing.
    warnings.showwarning = count_warning
    return asyncio.run(
        main_async(
            args.rounds,
            args.paced_rounds,
            args.rate,
            args.checkins,
            args.concurrency,
            SERVERS if args.server == "both" else (args.server,),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
