"""Helpers for the metrics and health tests: a running Heartbeat with its listener on
port 0, real HTTP scrapes parsed with the Prometheus client's own parser, polling.

    async with running(config_for(es.url, jobs=["job-a"])) as hb:
        await until(lambda: sample(await scrape(hb), "heartbeat_watched_jobs") == 1)
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
from prometheus_client.parser import text_string_to_metric_families

from heartbeat import Config, Heartbeat

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config_for(url: str, jobs: list[str] | None = None, **sections: dict[str, Any]) -> Config:
    """A Config against ``url`` with the listener on port 0 and quick retries."""
    data: dict[str, Any] = {
        "elasticsearch": {"hosts": [url], "request_timeout": 2},
        "jobs": {"ids": jobs or []},
        "metrics": {"listen": "127.0.0.1:0"},
        "backoff": {"initial": 0.05, "multiplier": 2.0, "max": 0.2},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return Config(**data)


@asynccontextmanager
async def running(config: Config, **kwargs: Any) -> AsyncIterator[Heartbeat]:
    async with Heartbeat(config, **kwargs) as hb:
        assert hb.listener is not None
        yield hb


async def get(hb: Heartbeat, path: str, **headers: str) -> tuple[int, str, str]:
    """``(status, content type header, body)`` of a GET on the listener."""
    assert hb.listener is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(hb.listener.base_url + path, headers=headers) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


async def get_json(hb: Heartbeat, path: str) -> tuple[int, Any]:
    assert hb.listener is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(hb.listener.base_url + path) as response,
    ):
        return response.status, await response.json()


async def scrape(hb: Heartbeat) -> Samples:
    status, _, text = await get(hb, "/metrics")
    assert status == 200
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``check`` every 20 ms until it is true; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not await check():
            await anyio.sleep(0.02)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_sample(
    hb: Heartbeat,
    name: str,
    predicate: Callable[[float | None], bool],
    within: float = 5.0,
    **labels: str,
) -> Samples:
    """Scrape until ``predicate(value of name{labels})`` holds; returns that scrape."""
    found: Samples = {}

    async def check() -> bool:
        nonlocal found
        found = await scrape(hb)
        return predicate(sample(found, name, **labels))

    try:
        await until(check, within)
    except TimeoutError:
        value = sample(found, name, **labels)
        raise AssertionError(f"{name}{labels or ''} is {value} after {within} s") from None
    return found
