"""Fixtures of the systemd test (``make systemd-test``; not part of ``make test``).

``image`` builds the test image once per run; ``machine_for(mode)`` boots it with
systemd as PID 1 and removes the container at the end of the module that asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.systemd_container.machine import Machine, build_image


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_image(tmp_path_factory.mktemp("systemd-image"))


@pytest.fixture(scope="module")
def machine_for(image: str, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Machine]]:
    booted: list[Machine] = []

    def boot(mode: str) -> Machine:
        module = Path(str(request.path)).stem
        machine = Machine.boot(image, mode, f"heartbeat-{module}-{mode}-{os.getpid()}")
        booted.append(machine)
        return machine

    yield boot
    for machine in booted:
        machine.remove()
