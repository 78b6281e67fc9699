"""The local HTTP listener: ``/metrics``, ``/livez``, ``/readyz``.

Owns one ``aiohttp.web`` application served in the daemon's own event loop (no
thread), on ``[metrics] listen``. It turns :class:`~heartbeat.metrics.Metrics` and
:class:`~heartbeat.health.Health` into HTTP answers and decides nothing itself.

=========  ==============================================================================
path       answer
=========  ==============================================================================
/metrics   Prometheus text format (OpenMetrics when the scraper asks for it)
/livez     200 ``{"live": true, ...}`` while the scheduler loop ticks, else 503
           ``{"live": false, "reason": "scheduler_stalled", ...}``
/readyz    200 ``{"ready": true, ...}`` when the last contact with Elasticsearch
           succeeded and no job is at risk, else 503 ``{"ready": false, "reason": ...}``
=========  ==============================================================================
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from heartbeat.errors import ConfigError
from heartbeat.health import Health
from heartbeat.metrics import Metrics

__all__ = ["Listener", "serve"]

log = structlog.get_logger("heartbeat")

#: Seconds open scrapes get to finish at shutdown.
SHUTDOWN_GRACE = 1.0


class Listener:
    """Where the listener is bound: ``url`` is the first address's ``/metrics`` URL."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.addresses = addresses

    @property
    def url(self) -> str:
        host, port = self.addresses[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    @property
    def base_url(self) -> str:
        return self.url.removesuffix("/metrics")

    def __repr__(self) -> str:
        return f"Listener({self.url!r})"


def build_app(metrics: Metrics, health: Health) -> web.Application:
    _ = metrics.registry  # prometheus_client loaded and the registry built now, not on a scrape

    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_livez(_request: web.Request) -> web.Response:
        liveness = health.liveness()
        return _json(200 if liveness.live else 503, liveness.as_json())

    async def get_readyz(_request: web.Request) -> web.Response:
        readiness = health.readiness()
        return _json(200 if readiness.ready else 503, readiness.as_json())

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/livez", get_livez)
    app.router.add_get("/readyz", get_readyz)
    return app


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def serve(
    metrics: Metrics,
    health: Health,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[Listener] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0: any free port) until cancelled; reports the
    bound :class:`Listener` through ``task_status`` once connections are accepted.

    A bind failure is a :class:`ConfigError` on ``metrics.listen`` (exit status 78):
    restarting will not free a port another program holds.
    """
    runner = web.AppRunner(
        build_app(metrics, health), access_log=None, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ConfigError(
                f"cannot listen on {listen}: {exc.strerror or exc}", key="metrics.listen"
            ) from None
        listener = Listener([(str(address[0]), int(address[1])) for address in runner.addresses])
        log.info(
            "metrics_listening",
            url=listener.url,
            addresses=[f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in listener.addresses],
        )
        task_status.started(listener)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
