"""Helpers for the metrics and health tests: the config layer that puts the listener
on port 0, a Heartbeat with one job at risk, real HTTP requests to the listener, scrapes
parsed with the Prometheus client's own parser.

    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        await wait_for_sample(hb, "heartbeat_watched_jobs", lambda value: value == 1)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from heartbeat import Heartbeat
from heartbeat.emulator import Fault
from tests.conftest import ES
from tests.support import Sections, make_config, running, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


#: The layer for these tests: the listener on port 0 and quick retries.
LISTENER: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "jobs": {"ids": []},
    "metrics": {"listen": "127.0.0.1:0"},
    "backoff": {"initial": 0.05, "multiplier": 2.0, "max": 0.2},
}


@asynccontextmanager
async def one_job_at_risk(es: ES) -> AsyncIterator[Heartbeat]:
    """A Heartbeat watching job-a, checked in every 0.5 s (well inside idle_after / 2),
    and job-b, refused with 409: that concerns one document, so the cluster stays "up"
    and only job-b falls behind, at risk after idle_after / 2 = 1 s."""
    es.emu.create_job(job_id="job-a")
    es.emu.create_job(job_id="job-b")
    es.emu.always(Fault(status=409), job_id="job-b")
    schedule = {"interval": 0.5, "jitter": 0.1, "idle_after": 2.0}
    config = make_config(es.url, LISTENER, jobs={"ids": ["job-a", "job-b"]}, schedule=schedule)
    async with running(config) as (hb, _):
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
