"""Shared fixtures. Each block says what it provides; add new blocks below the last one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from heartbeat.emulator import Emulator, serve

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
