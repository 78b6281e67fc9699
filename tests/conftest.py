"""Shared fixtures. Each block says what it provides; add new blocks below the last one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import pytest

from heartbeat.clock import ManualClock
from heartbeat.emulator import Emulator, serve
from tests.helpers_redis import RedisServer
from tests.helpers_scheduler import T0, Script

# -- Elasticsearch emulator -------------------------------------------------------------
# `emulator` is a fresh in-memory Emulator (configure it before the first request:
# credentials, jobs, faults); `emulator_url` serves it on 127.0.0.1, port 0, for the
# duration of the test and yields "http://127.0.0.1:<port>"; `es` bundles the two.


class ES(NamedTuple):
    emu: Emulator
    url: str


@pytest.fixture
def emulator() -> Emulator:
    return Emulator()


@pytest.fixture
async def emulator_url(emulator: Emulator) -> AsyncIterator[str]:
    async with serve(emulator) as url:
        yield url


@pytest.fixture
def es(emulator: Emulator, emulator_url: str) -> ES:
    return ES(emulator, emulator_url)


# -- secrets never reach a log line ----------------------------------------------------
# Everything the tests printed or logged (pytest's captured stdout/stderr of every test,
# which includes the inherited stderr of subprocesses) is kept here and scanned for the
# secrets the tests used by tests/test_zz_secrets.py, which runs last.

CAPTURED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for _title, text in report.sections:
        CAPTURED.append((report.nodeid, text))


# -- Redis -------------------------------------------------------------------------------
# `redis_server` is one real redis-server for the whole session, on a free loopback port,
# without persistence; tests keep apart by using their own stream and group names. A test
# that kills Redis starts its own tests.helpers_redis.RedisServer. A missing redis-server
# fails these tests with a clear message: they never skip.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


# -- the scheduler on a manual clock ---------------------------------------------------
# `clock` is a ManualClock at tests.helpers_scheduler.T0; `script` a Script (the scripted
# check-in function) on it. A module with a clock of its own overrides `clock`.


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


@pytest.fixture
def script(clock: ManualClock) -> Script:
    return Script(clock)
