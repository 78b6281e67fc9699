"""The command line as a user runs it: real subprocesses, the emulator over loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from heartbeat.emulator import Fault
from tests.conftest import ES
from tests.helpers_daemon import DAEMON
from tests.support import heartbeat_cli, toml, write_config


async def test_check_in_all_succeed(es: ES, tmp_path: Path) -> None:
    ids = [es.emu.create_job(job_id=name) for name in ("job-a", "a/b?c#d é")]
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    code, out, _ = await heartbeat_cli("check-in", "--config", str(config), *ids)
    assert code == 0
    assert out.splitlines() == ["ok         'job-a'", "ok         'a/b?c#d é'"]
    assert [r.job_id for r in es.emu.checkins()] == ids


async def test_check_in_not_found_exits_1(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="here")
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    code, out, _ = await heartbeat_cli("check-in", "--config", str(config), "here", "gone")
    assert code == 1
    assert out.splitlines()[1] == "not_found  'gone': connector sync job [gone] not found"


@pytest.mark.parametrize("fault", ["503", "invalid id"])
async def test_check_in_other_failures_exit_2(es: ES, tmp_path: Path, fault: str) -> None:
    es.emu.create_job(job_id="here")
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    ids = ["here", "gone"]
    if fault == "503":
        es.emu.always(Fault(status=503), job_id="here")
    else:
        ids.append("tab\tinside")
    code, out, _ = await heartbeat_cli("check-in", "--config", str(config), *ids)
    assert code == 2
    assert len(out.splitlines()) == len(ids)
    assert out.splitlines()[-1].startswith("invalid" if fault == "invalid id" else "not_found")


async def test_check_in_unreachable_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path / "hb.toml", toml("http://127.0.0.1:9", DAEMON))
    code, out, _ = await heartbeat_cli("check-in", "--config", str(config), "job")
    assert code == 2
    assert out.startswith("failed     'job': connection: cannot connect")


async def test_help_lists_every_command() -> None:
    code, out, _ = await heartbeat_cli("--help")
    assert code == 0
    for command in ("run", "check-in", "validate", "emulator", "demo"):
        assert command in out
    code, out, _ = await heartbeat_cli("run", "--help")
    assert code == 0
    assert "--config" in out
    assert "--job" in out


async def test_version() -> None:
    code, out, _ = await heartbeat_cli("--version")
    assert (code, out.strip()) == (0, "heartbeat 0.1.0")


@pytest.mark.parametrize("module", ["heartbeat.__main__", "heartbeat.cli"])
async def test_both_entry_points_run_the_command_line(module: str) -> None:
    # heartbeat.__main__:entry is the console script; heartbeat.cli:entry is what the
    # scripts of installs made before it still call.
    script = f"import sys; sys.argv[0] = 'heartbeat'; from {module} import entry; entry()"
    for args, code, stream in ((["--version"], 0, "stdout"), (["check-in"], 2, "stderr")):
        with anyio.fail_after(60):
            result = await anyio.run_process([sys.executable, "-c", script, *args], check=False)
        assert result.returncode == code, (module, args)
        assert getattr(result, stream).decode().startswith("heartbeat"), (module, args)


@pytest.mark.parametrize("duration", ["3", "6"])  # 3: what dist-test and image-test run
async def test_demo_runs_and_summarises(tmp_path: Path, duration: str) -> None:
    code, out, err = await heartbeat_cli("demo", "--duration", duration, cwd=tmp_path)
    assert code == 0, err
    assert "job_dropped" in out
    assert "summary" in out
    assert "sync-to-delete           dropped" in out
