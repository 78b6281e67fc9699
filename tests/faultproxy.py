"""A fault-injecting TCP proxy for the tests: sits between heartbeat and the emulator.

Modes (``proxy.mode = ...``, applied to new connections and to data still flowing):

``pass``       forward both ways
``refuse``     stop listening: connections are refused (the port stays reserved)
``reset``      forward the request, then abort the connection after the first bytes
               of the answer (a reset in the middle of a response)
``blackhole``  accept and read, never answer
``drip``       forward the answer one byte at a time, ``drip_interval`` apart
``garbage``    answer every request with bytes that are not HTTP, then close

Only loopback; everything it starts, it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.drip_interval = 0.5
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def set_mode(self, mode: str) -> None:
        """Switch mode; ``refuse`` closes the listener and every open connection."""
        self.mode = mode
        if mode == "refuse":
            await self.stop_listening()
            self.drop_connections()
        elif self._server is None:
            await self.start()
        if mode in {"reset", "blackhole", "garbage", "drip"}:
            self.drop_connections()  # keep-alive connections must not bypass the fault

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        await self.stop_listening()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode == "blackhole":
            while await reader.read(65536):
                pass
            return
        if mode == "garbage":
            await reader.read(65536)
            writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n\xff\xfe")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            upstream = asyncio.ensure_future(self._pump(reader, up_writer, "request"))
            downstream = asyncio.ensure_future(self._pump(up_reader, writer, "response"))
            _, pending = await asyncio.wait(
                {upstream, downstream}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        finally:
            up_writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if direction == "response" and self.mode == "reset":
                writer.write(data[: max(1, len(data) // 3)])
                await writer.drain()
                writer.transport.abort()
                return
            if direction == "response" and self.mode == "drip":
                for byte in data:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(self.drip_interval)
                continue
            writer.write(data)
            await writer.drain()


@asynccontextmanager
async def fault_proxy(upstream_url: str) -> AsyncIterator[FaultProxy]:
    host, port = upstream_url.removeprefix("http://").rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
