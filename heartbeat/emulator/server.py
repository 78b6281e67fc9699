"""Serving an :class:`~heartbeat.emulator.Emulator` on a socket, in-process or standalone.

Owns :func:`serve` (an async context manager for tests, the demo and the benchmark) and
:func:`run_emulator` (``heartbeat emulator``: serve until SIGTERM/SIGINT, with jobs
optionally kept in a JSON data file across restarts, see
:mod:`heartbeat.emulator.datafile`). It does not own what a request is answered:
:meth:`Emulator.handle` does. A raw non-ASCII byte in the request line is
refused by aiohttp's parser (plain-text 400, no product header) before it reaches the
emulator.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from aiohttp import web

from heartbeat.emulator import datafile
from heartbeat.emulator.handler import Emulator
from heartbeat.errors import HeartbeatError


class ListenError(HeartbeatError):
    """The emulator cannot listen where it was asked to (port taken, no such address)."""


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
        try:
            await site.start()
        except (OSError, OverflowError) as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            number = getattr(exc, "errno", None)
            reason = os.strerror(number) if number else str(exc)
            if isinstance(exc, socket.gaierror):
                reason = f"unknown host ({exc.strerror})"
            raise ListenError(f"cannot listen on {where}: {reason}") from None
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
    Raises :class:`ListenError` or :class:`~heartbeat.emulator.datafile.DataFileError`
    before listening when it cannot start, and DataFileError when saving fails.
    """
    emulator = Emulator(api_key=api_key, cluster_uuid=cluster_uuid)
    if data is not None:
        datafile.load(data, emulator)  # before listening: a refused file is never replaced
    listening = False
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            async with serve(emulator, host, port) as url:
                listening = True
                print(f"emulator_listening url={url}", flush=True)
                async for _ in signals:
                    break
        finally:
            # Not when it never listened: nothing changed, the file is left as it was.
            if listening and data is not None:
                datafile.save(data, emulator)
