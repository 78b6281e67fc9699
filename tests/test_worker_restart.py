"""The sidecar restart (systemd ``BindsTo=``, a Kubernetes pod restarted whole): the
worker and its heartbeat both die, a new worker and a new heartbeat start, and the
saved watch list still names the dead incarnation's job.

Real processes throughout: the worker stand-in and ``heartbeat run`` are subprocesses
killed with SIGKILL, the heartbeat has a state directory and a control socket, and
what reached Elasticsearch is read from the emulator's request log.
"""

from __future__ import annotations

import time

import anyio

from tests.conftest import ES
from tests.helpers_control import api_client, short_dir
from tests.helpers_daemon import run_daemon
from tests.helpers_worker import WorkerProcess
from tests.support import Sections, toml, until, write_config

HOST = "sidecar-host"


#: The sidecar's config (state, control socket and pid file added by the test).
SIDECAR: Sections = {
    "elasticsearch": {"request_timeout": 5},
    "schedule": {
        "interval": 1,  # the floor (issue 9 item 12)
        "jitter": 0,
        "shutdown_timeout": 1,
        "status_check_interval": 0,
    },
    "worker": {"probe_interval": 0.05, "failure_threshold": 2, "clock_skew": 0},
    "logging": {"format": "json", "level": "info"},
}


async def test_after_a_sidecar_restart_the_old_job_is_never_checked_in_again(es: ES) -> None:
    emu = es.emu
    with short_dir() as directory:
        socket = directory / "control.sock"
        worker = WorkerProcess(directory / "worker.pid")
        sidecar = toml(
            es.url,
            SIDECAR,
            state={"dir": directory / "state"},
            control={"socket": socket},
            worker={"pid_file": worker.pid_file},
        )
        config = write_config(directory / "heartbeat.toml", sidecar)
        try:
            worker.start()
            old = emu.create_job("c1", status="pending")
            emu.claim(old, HOST)  # the first worker claims it
            async with run_daemon(config) as first:
                await first.wait_for("control_listening")
                async with api_client(socket) as call:
                    assert (await call("PUT", f"/jobs/{old}")).status == 201
                await until(lambda: len(emu.checkins(old)) >= 2, within=15)
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
                await until(lambda: len(emu.checkins(new)) >= 3, within=15)
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
