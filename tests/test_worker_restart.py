"""The sidecar restart (systemd ``BindsTo=``, a Kubernetes pod restarted whole): the
worker and its heartbeat both die, a new worker and a new heartbeat start, and the
saved watch list still names the dead incarnation's job.

Real processes throughout: the worker stand-in and ``heartbeat run`` are subprocesses
killed with SIGKILL, the heartbeat has a state directory and a control socket, and
what reached Elasticsearch is read from the emulator's request log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio

from tests.conftest import ES
from tests.helpers_control import api_client, short_dir
from tests.helpers_daemon import run_daemon
from tests.helpers_worker import WorkerProcess

HOST = "sidecar-host"


def sidecar_config(path: Path, url: str, *, state: Path, socket: Path, pid_file: Path) -> Path:
    lines = [
        "[elasticsearch]",
        f"hosts = [{json.dumps(url)}]",
        "request_timeout = 5",
        "[schedule]",
        "interval = 1",  # the floor (issue 9 item 12)
        "jitter = 0",
        "shutdown_timeout = 1",
        "status_check_interval = 0",
        "[state]",
        f"dir = {json.dumps(str(state))}",
        "[control]",
        f"socket = {json.dumps(str(socket))}",
        "[worker]",
        f"pid_file = {json.dumps(str(pid_file))}",
        "probe_interval = 0.05",
        "failure_threshold = 2",
        "clock_skew = 0",
        "[logging]",
        'format = "json"',
        'level = "info"',
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


async def until(check: object, within: float = 15.0) -> None:
    assert callable(check)
    with anyio.fail_after(within):
        while not check():
            await anyio.sleep(0.02)


async def test_after_a_sidecar_restart_the_old_job_is_never_checked_in_again(es: ES) -> None:
    emu = es.emu
    with short_dir() as directory:
        socket = directory / "control.sock"
        worker = WorkerProcess(directory / "worker.pid")
        config = sidecar_config(
            directory / "heartbeat.toml",
            es.url,
            state=directory / "state",
            socket=socket,
            pid_file=worker.pid_file,
        )
        try:
            worker.start()
            old = emu.create_job("c1", status="pending")
            emu.claim(old, HOST)  # the first worker claims it
            async with run_daemon(config) as first:
                await first.wait_for("control_listening")
                async with api_client(socket) as call:
                    assert (await call("PUT", f"/jobs/{old}")).status == 201
                await until(lambda: len(emu.checkins(old)) >= 2)
                # Both die at once (BindsTo=, an OOM kill of the pod, a node reboot).
                worker.kill()
                first.process.kill()
                assert await first.wait() == -9
            died_at = time.monotonic()
            # The boot time in /proc/stat is in whole seconds: the new incarnation
            # starts well over a second after the old job's claim.
            await anyio.sleep(1.5)
            worker.start()
            new = emu.create_job("c1", status="pending")
            emu.claim(new, HOST)  # the new worker claims a job of its own
            async with run_daemon(config) as second:
                await second.wait_for("state_loaded")
                await second.wait_for("control_listening")
                async with api_client(socket) as call:
                    assert (await call("PUT", f"/jobs/{new}")).status == 201
                await until(lambda: len(emu.checkins(new)) >= 3)
                removed = await second.wait_for("job_removed")
                async with api_client(socket) as call:
                    listed = (await call("GET", "/jobs")).json["jobs"]
                    status = (await call("GET", "/status")).json
                await anyio.sleep(1.0)
        finally:
            worker.close()
    assert [r.at for r in emu.checkins(old) if r.at > died_at] == []
    assert (removed["job_id"], removed["reason"]) == (old, "worker_restarted")
    assert [job["id"] for job in listed] == [new]
    assert status["worker"]["up"] is True and status["worker"]["pid"] == worker.pid
    [found] = second.named("worker_found")
    assert found["pid"] == worker.pid
    assert second.named("worker_orphans_dropped")[0]["orphaned"] == 1
