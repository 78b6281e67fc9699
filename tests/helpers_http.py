"""Helpers for the metrics and health tests: the config layer that puts the listener
on port 0, real HTTP requests to it, scrapes parsed with the Prometheus client's own
parser.

    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        await wait_for_sample(hb, "heartbeat_watched_jobs", lambda value: value == 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from heartbeat import Heartbeat
from tests.support import Sections, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


#: The layer for these tests: the listener on port 0 and quick retries.
LISTENER: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "jobs": {"ids": []},
    "metrics": {"listen": "127.0.0.1:0"},
    "backoff": {"initial": 0.05, "multiplier": 2.0, "max": 0.2},
}


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
        await until(check, within, every=0.02)
    except TimeoutError:
        value = sample(found, name, **labels)
        raise AssertionError(f"{name}{labels or ''} is {value} after {within} s") from None
    return found
