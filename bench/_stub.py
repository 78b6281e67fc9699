"""A minimal Elasticsearch stand-in for the benchmarks, run in its own process.

Every request except ``GET /_stub/stats`` gets what Elasticsearch answers to a
successful check-in: HTTP 200, ``{"result":"updated"}``, ``Content-Type:
application/json`` and ``X-Elastic-Product: Elasticsearch``. Nothing is routed,
checked or recorded beyond counters, so the server costs as little CPU per request
as aiohttp allows and is not what a benchmark measures. (The built-in emulator would
also do: it answers the same bytes, but it copies every request's headers into its
request log and 404s unknown job ids, so it is slower and grows while a benchmark runs.)

``GET /_stub/stats`` answers ``{"requests": n, "by_method": {"PUT": n, ...}, "cpu_s":
seconds}``: requests served (in all, and per method) and the server process's CPU
time, so a benchmark can tell whether the server kept up and what it was sent.

Run as ``python bench/_stub.py [--port 0]``: prints ``stub_listening url=...`` and
serves until SIGTERM/SIGINT. :func:`running_stub` does that from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

BODY = b'{"result":"updated"}'
HEADERS = {"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch"}


async def serve(host: str, port: int) -> None:
    served = 0
    by_method: dict[str, int] = {}

    async def handle(request: web.BaseRequest) -> web.Response:
        nonlocal served
        if request.method == "GET" and request.path == "/_stub/stats":
            stats = {"requests": served, "by_method": by_method, "cpu_s": time.process_time()}
            return web.Response(body=json.dumps(stats).encode(), headers=HEADERS)
        await request.read()
        served += 1
        by_method[request.method] = by_method.get(request.method, 0) + 1
        return web.Response(body=BODY, headers=HEADERS)

    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"stub_listening url=http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def running_stub() -> Iterator[str]:
    """Start the stub in a child process on a free loopback port; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("stub_listening url="):
            raise RuntimeError(f"stub server did not start: {line!r}")
        yield line.split("=", 1)[1]
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stub_stats(url: str) -> dict[str, Any]:
    """The stub's counters (a blocking call: use it between measurements)."""
    with urllib.request.urlopen(f"{url}/_stub/stats", timeout=5) as answer:  # noqa: S310
        stats: dict[str, Any] = json.loads(answer.read())
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
