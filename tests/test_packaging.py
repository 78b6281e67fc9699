"""The installed distribution as a user sees it: its name, its one version, its command.

The wheel itself (built, checked with twine, installed in a fresh venv and run) is
tested by ``scripts/dist-test`` (``make dist-test``, run by ``.ci/run``).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path

import anyio

import heartbeat


def test_the_distribution_is_connector_heartbeat_with_the_package_version() -> None:
    # PyPI's "heartbeat" is an unrelated project: ours must be found under its own name.
    distribution = importlib.metadata.distribution("connector-heartbeat")
    assert distribution.version == heartbeat.__version__
    scripts = {
        ep.name: ep.value for ep in distribution.entry_points if ep.group == "console_scripts"
    }
    assert scripts == {"heartbeat": "heartbeat.__main__:entry"}
    assert distribution.metadata["License-Expression"] == "Apache-2.0"
    assert distribution.metadata["Requires-Python"] == ">=3.11"


async def test_the_installed_command_prints_the_single_version() -> None:
    command = shutil.which("heartbeat", path=str(Path(sys.executable).parent))
    assert command is not None, "the console script `heartbeat` is not installed"
    with anyio.fail_after(30):
        result = await anyio.run_process([command, "--version"], check=False)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"heartbeat {heartbeat.__version__}"
