"""What each command loads: ``--version`` and ``--help`` none of the heavy libraries, a
daemon only what its configuration needs (no redis without a queue, no
prometheus_client without a metrics listener, never the emulator), ``check-in`` neither
the daemon nor anyio, and no command a TLS context it does not need.

Measured on real subprocesses with ``python -X importtime``, which reports every module
as it is imported (but not one loaded with ``importlib.import_module``), or with
``sys.modules`` as the command exits; the time figures are for ``bench/startup.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trustme

import heartbeat
from heartbeat import config as configuration
from heartbeat.config import checks
from heartbeat.errors import ConfigError
from tests.conftest import ES
from tests.helpers_daemon import DAEMON
from tests.support import toml, write_config

HEAVY = ("aiohttp", "pydantic", "pydantic_settings", "prometheus_client", "redis")


def clean_env() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def imported(importtime: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | total | name``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def roots(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_none_of_the_heavy_libraries(flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "heartbeat", flag],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    modules = imported(result.stderr)
    assert "heartbeat.cli" in modules  # the report is read correctly
    assert roots(modules).isdisjoint(HEAVY), sorted(roots(modules) & set(HEAVY))


def test_the_public_names_load_on_first_use() -> None:
    script = (
        "import sys, heartbeat\n"
        "assert not {'aiohttp', 'pydantic'} & set(sys.modules), 'eager'\n"
        "from heartbeat import Heartbeat, load_config\n"
        "for name in heartbeat.__all__:\n"
        "    getattr(heartbeat, name)\n"
        "print(Heartbeat.__module__, load_config.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.split() == ["heartbeat.daemon", "heartbeat.config.loading"]
    assert sorted(heartbeat.__all__) == sorted(n for n in dir(heartbeat) if n in heartbeat.__all__)


async def daemon_imports(config: Path) -> set[str]:
    """The modules a ``heartbeat run`` imported by the time it has checked in, idle."""
    process = await anyio.open_process(
        [sys.executable, "-X", "importtime", "-m", "heartbeat", "run", "--config", str(config)],
        env=clean_env(),
    )
    async with process:
        assert process.stdout is not None and process.stderr is not None
        out = b""
        with anyio.fail_after(30):
            while b"checkin_succeeded" not in out:
                chunk = await process.stdout.receive()
                out += chunk
        await anyio.sleep(0.5)  # idle: the first check-in is not where imports end
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
        err = b"".join([chunk async for chunk in process.stderr]).decode()
    return imported(err)


async def test_a_sidecar_without_queue_or_metrics_loads_neither(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="job-a")
    plain = write_config(
        tmp_path / "plain.toml",
        toml(es.url, DAEMON, jobs={"ids": ["job-a"]}, schedule={"interval": 30.0}),
    )
    modules = await daemon_imports(plain)
    assert "heartbeat.daemon" in modules
    assert roots(modules).isdisjoint({"redis", "prometheus_client"})
    assert not {m for m in modules if m.startswith(("heartbeat.emulator", "aiohttp.web"))}
    # The same daemon with a metrics listener does load prometheus_client.
    with_metrics = write_config(
        tmp_path / "metrics.toml",
        toml(es.url, DAEMON, jobs={"ids": ["job-a"]}, schedule={"interval": 30.0}),
    )
    with_metrics.write_text(with_metrics.read_text() + "[metrics]\nlisten = '127.0.0.1:0'\n")
    assert "prometheus_client" in roots(await daemon_imports(with_metrics))


#: Runs the ``heartbeat`` command given as arguments, then prints ``sys.modules`` on
#: stderr as it exits: ``-X importtime`` does not see ``importlib.import_module``, which
#: anyio uses to load its event loop.
MODULES_AT_EXIT = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
    "sys.argv[0] = 'heartbeat'\n"
    "from heartbeat.__main__ import entry\n"
    "entry()\n"
)


async def test_check_in_loads_neither_the_daemon_nor_anyio(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    environment = {**clean_env(), "HEARTBEAT_ELASTICSEARCH__HOSTS": f'["{es.url}"]'}
    result = await anyio.run_process(
        [sys.executable, "-c", MODULES_AT_EXIT, "check-in", "--config", os.devnull, "job-a"],
        env=environment,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, b"ok         'job-a'\n")
    modules = set(json.loads(result.stderr.decode().splitlines()[-1]))
    assert {"heartbeat.cli.checkin", "aiohttp", "pydantic"} <= modules  # read correctly
    assert not {"heartbeat.scheduler", "heartbeat.daemon", "heartbeat.runtime"} & modules
    assert roots(modules).isdisjoint({"anyio", "redis", "prometheus_client"})


def test_a_tls_context_is_built_at_load_only_to_check_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    real = checks.build_context
    monkeypatch.setattr(checks, "build_context", lambda es: built.append(es) or real(es))
    for hosts in ("http://127.0.0.1:9200", "https://127.0.0.1:9200"):
        configuration.load(write_config(tmp_path / "plain.toml", toml(hosts)))
    assert built == []  # the client builds its own, for https:// hosts
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    text = toml("https://127.0.0.1:9200", elasticsearch={"ca_certs": str(ca)})
    configuration.load(write_config(tmp_path / "ca.toml", text))
    assert len(built) == 1
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"elasticsearch\.ca_certs"):
        configuration.load(write_config(tmp_path / "ca.toml", text))
