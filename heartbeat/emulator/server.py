"""Serving an :class:`~heartbeat.emulator.Emulator` on a socket, in-process or standalone.

Owns :func:`serve` (an async context manager for tests, the demo and the benchmark) and
:func:`run_emulator` (``heartbeat emulator``: serve until SIGTERM/SIGINT, with jobs
optionally kept in a JSON data file across restarts). It does not own what a request is
answered: :meth:`Emulator.handle` does. A raw non-ASCII byte in the request line is
refused by aiohttp's parser (plain-text 400, no product header) before it reaches the
emulator.
"""

from __future__ import annotations

import json
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from aiohttp import web

from heartbeat.emulator.handler import Emulator


@asynccontextmanager
async def serve(
    emulator: Emulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 0.5,
) -> AsyncIterator[str]:
    """Serve ``emulator`` while the block runs; yields the base URL with the bound port.

    aiohttp's low-level server is used, with no router, so no route matching or path
    normalisation happens before :meth:`Emulator.handle`. A handler sleeping on a
    ``delay`` fault is cancelled when its client disconnects.
    """
    server = web.Server(emulator.handle, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = runner.addresses[0][1]
        # a wildcard bind is reached over loopback
        url_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        if ":" in url_host:
            url_host = f"[{url_host}]"
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://{url_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def run_emulator(
    host: str,
    port: int,
    api_key: str | None,
    data: Path | None = None,
    cluster_uuid: str = "emulator",
) -> None:
    """Serve an emulator until SIGTERM/SIGINT, after printing ``emulator_listening url=...``.

    With ``data``, jobs are loaded from that JSON file at start (when it exists) and
    written back at exit, so a restarted emulator keeps its jobs as Elasticsearch would.
    """
    emulator = Emulator(api_key=api_key, cluster_uuid=cluster_uuid)
    data_file = None if data is None else anyio.Path(data)
    if data_file is not None and await data_file.exists():
        emulator.import_jobs(json.loads(await data_file.read_text(encoding="utf-8")))
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with serve(emulator, host, port) as url:
                print(f"emulator_listening url={url}", flush=True)
                async for _ in signals:
                    break
    finally:
        if data_file is not None:
            with anyio.CancelScope(shield=True):
                await data_file.write_text(json.dumps(emulator.export_jobs()), encoding="utf-8")
