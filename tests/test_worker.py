"""[worker]: check-ins only while the worker is alive, none for an earlier incarnation.

Real things only: the worker is a real process with a pid file (killed with SIGKILL and
started again), the health endpoint a real loopback server switched between 200 and
503, and every assertion about check-ins reads the emulator's request log: which
check-ins reached it, and when (its ``at``, on this process's monotonic clock).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat import worker as worker_module
from heartbeat.control import ControlAPI
from heartbeat.daemon import Heartbeat
from heartbeat.emulator import Emulator, Fault
from heartbeat.liveness import Alive, Dead
from heartbeat.probes import probe_pid_file
from tests.conftest import ES
from tests.helpers_http import get_json, sample, scrape
from tests.helpers_worker import WorkerProcess, health_server
from tests.support import Sections, make_config, running, until

HOST = "worker-host"
INTERVAL = 0.3
PROBE = 0.05


#: The layer for these tests: a quick schedule, a quick probe, no state.
WORKER: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "schedule": {"interval": INTERVAL, "jitter": 0.0, "status_check_interval": 0},
    "backoff": {"initial": 0.05, "max": 0.2},
    "state": {"dir": None},
    "worker": {
        "probe_interval": PROBE,
        "probe_timeout": 1,
        "failure_threshold": 2,
        "clock_skew": 0,
    },
}


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(tmp_path / "worker.pid")
    yield process
    process.close()


def times(emu: Emulator, job_id: str) -> list[float]:
    """When each check-in of ``job_id`` reached the emulator (time.monotonic)."""
    return [record.at for record in emu.checkins(job_id)]


def reads(emu: Emulator, job_id: str) -> list[float]:
    return [r.at for r in emu.requests if r.action == "get" and r.job_id == job_id]


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# -- the pid file probe, against real processes -------------------------------------------


def test_the_pid_file_probe(tmp_path: Path, worker: WorkerProcess) -> None:
    pid_file = worker.pid_file
    assert probe_pid_file(pid_file) == Dead("pid_file_missing", f"{pid_file} does not exist")
    pid_file.write_text("")
    assert probe_pid_file(pid_file).reason == "pid_file_empty"  # type: ignore[union-attr]
    pid_file.write_text("not a pid\n")
    assert probe_pid_file(pid_file).reason == "pid_file_invalid"  # type: ignore[union-attr]
    before = time.time()
    pid = worker.start()
    result = probe_pid_file(pid_file)
    assert isinstance(result, Alive)
    assert result.incarnation.pid == pid
    # The start time is /proc's (clock ticks after a boot time in whole seconds).
    assert result.incarnation.start is not None
    assert before - 1.5 <= result.incarnation.start <= time.time()
    assert probe_pid_file(pid_file) == result  # the same incarnation, probe after probe
    worker.kill(reap=False)  # SIGKILL, not yet reaped by its parent: a zombie
    deadline = time.monotonic() + 5
    while probe_pid_file(pid_file) == result and time.monotonic() < deadline:
        time.sleep(0.01)  # SIGKILL is delivered asynchronously
    assert probe_pid_file(pid_file).reason == "process_zombie"  # type: ignore[union-attr]
    assert worker.process is not None
    worker.process.wait(5)
    assert probe_pid_file(pid_file).reason == "process_gone"  # type: ignore[union-attr]
    worker.start()
    again = probe_pid_file(pid_file)
    assert isinstance(again, Alive) and again.incarnation != result.incarnation


# -- pause and resume ---------------------------------------------------------------------


async def test_no_check_in_while_the_worker_is_down_and_at_once_when_it_is_back(
    es: ES, worker: WorkerProcess, tmp_path: Path
) -> None:
    worker.start()
    job = es.emu.create_job("c1", worker_hostname=HOST)
    aside = tmp_path / "aside.pid"
    config = make_config(es.url, WORKER, worker={"pid_file": str(worker.pid_file)})
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            assert hb.worker is not None
            hb.watch(job)
            await until(lambda: len(times(es.emu, job)) >= 2, within=10)
            os.replace(worker.pid_file, aside)  # the worker "vanishes": no pid file
            await until(lambda: named(logs, "worker_down"), within=10)
            down_at = time.monotonic()
            await anyio.sleep(4 * INTERVAL)
            # Paused, not unwatched: nothing reached Elasticsearch, the job is kept.
            assert [t for t in times(es.emu, job) if t > down_at + 0.05] == []
            assert job in hb.scheduler
            assert hb.health.readiness().reason == "worker_down"
            assert hb.worker.status()["up"] is False
            assert "worker down" in hb.summary()
            os.replace(aside, worker.pid_file)  # the same process again
            await until(lambda: named(logs, "worker_up"), within=10)
            up_at = time.monotonic()
            await until(lambda: [t for t in times(es.emu, job) if t > down_at], within=10)
            first_after = min(t for t in times(es.emu, job) if t > down_at)
            # At once, not a whole interval later.
            assert first_after - up_at < INTERVAL / 2
            assert hb.health.readiness().reason != "worker_down"
    [down] = named(logs, "worker_down")
    assert (down["reason"], down["jobs"], down["log_level"]) == ("pid_file_missing", 1, "error")
    [up] = named(logs, "worker_up")
    assert up["duration_s"] >= 4 * INTERVAL
    assert up["pid"] == worker.pid
    assert named(logs, "job_removed") == [] and named(logs, "worker_restarted") == []


async def test_a_killed_worker_stops_every_check_in(es: ES, worker: WorkerProcess) -> None:
    worker.start()
    jobs = [es.emu.create_job("c1", worker_hostname=HOST) for _ in range(5)]
    config = make_config(es.url, WORKER, worker={"pid_file": str(worker.pid_file)})
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            hb.watch_many(jobs)
            await until(lambda: all(len(times(es.emu, job)) >= 2 for job in jobs), within=10)
            killed_at = time.monotonic()
            worker.kill()
            await until(lambda: named(logs, "worker_down"), within=10)
            await anyio.sleep(4 * INTERVAL)
            late = [t for job in jobs for t in times(es.emu, job) if t > killed_at]
            # At most what was due before failure_threshold probes noticed it.
            window = 2 * PROBE + 0.1
            assert all(t < killed_at + window for t in late), (late, killed_at)
            assert len(hb.scheduler) == 5
    assert named(logs, "worker_down")[0]["reason"] == "process_gone"


# -- a new incarnation --------------------------------------------------------------------


async def test_a_restarted_worker_s_earlier_jobs_are_dropped_and_its_own_kept(
    es: ES, worker: WorkerProcess
) -> None:
    first = worker.start()
    old = es.emu.create_job("c1", worker_hostname=HOST)  # claimed by the first incarnation
    config = make_config(es.url, WORKER, worker={"pid_file": str(worker.pid_file)})
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            hb.watch(old)
            await until(lambda: len(times(es.emu, old)) >= 2, within=10)
            # The boot time in /proc/stat is in whole seconds: start the next
            # incarnation well over a second after the old job's claim.
            await anyio.sleep(1.5)
            worker.kill()
            second = worker.start()
            new = es.emu.create_job("c1", worker_hostname=HOST)  # claimed by the second
            unclaimed = es.emu.create_job("c1", status="pending")
            hb.watch_many([new, unclaimed])
            await until(lambda: named(logs, "worker_restarted"), within=10)
            restarted_at = time.monotonic()
            await until(
                lambda: len(times(es.emu, new)) >= 2 and times(es.emu, unclaimed), within=10
            )
            assert old not in hb.scheduler
            await anyio.sleep(2 * INTERVAL)
    [restarted] = named(logs, "worker_restarted")
    assert restarted["previous"]["pid"] == first and restarted["current"]["pid"] == second
    assert restarted["orphaned"] == 1
    assert [(e["job_id"], e["reason"]) for e in named(logs, "job_removed")] == [
        (old, "worker_restarted")
    ]
    assert [t for t in times(es.emu, old) if t > restarted_at] == []
    # Each new job's document was read before its first check-in.
    for job in (new, unclaimed):
        assert reads(es.emu, job) and min(reads(es.emu, job)) < min(times(es.emu, job))


async def test_a_failed_read_changes_nothing_and_is_read_again_later(
    es: ES, worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "RETRY_READ", 0.3)
    worker.start()
    orphan = es.emu.create_job("c1", worker_hostname=HOST, started_at=ago(60))
    es.emu.always(Fault(status=503, actions=frozenset({"get"})))
    config = make_config(es.url, WORKER, worker={"pid_file": str(worker.pid_file)})
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            hb.watch(orphan)
            await until(lambda: len(reads(es.emu, orphan)) >= 3, within=10)
            # Uncertain: still vouched for, still watched.
            assert len(times(es.emu, orphan)) >= 2
            assert orphan in hb.scheduler
            es.emu.always(None)
            await until(lambda: orphan not in hb.scheduler, within=10)
            # A check-in already on the wire when the job was dropped may still reach
            # the emulator (under load, after this task sees the drop); none may start.
            await until(lambda: hb.scheduler.in_flight == 0, within=10)
            dropped_at = time.monotonic()
            await anyio.sleep(2 * INTERVAL)
    assert [t for t in times(es.emu, orphan) if t > dropped_at] == []
    assert [(e["job_id"], e["reason"]) for e in named(logs, "job_removed")] == [
        (orphan, "worker_restarted")
    ]


async def test_restored_or_configured_jobs_of_an_earlier_incarnation_are_never_checked_in(
    es: ES, worker: WorkerProcess
) -> None:
    """At start, before the first probe, nothing is checked in; then every watched job
    is read against the incarnation first seen."""
    worker.start()
    orphan = es.emu.create_job("c1", worker_hostname=HOST, started_at=ago(60))
    current = es.emu.create_job("c1", worker_hostname=HOST)
    config = make_config(
        es.url, WORKER, worker={"pid_file": str(worker.pid_file)}, jobs={"ids": [orphan, current]}
    )
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            await until(lambda: len(times(es.emu, current)) >= 2, within=10)
            assert orphan not in hb.scheduler
    assert times(es.emu, orphan) == []
    [found] = named(logs, "worker_found")
    assert found["pid"] == worker.pid
    [dropped] = named(logs, "worker_orphans_dropped")
    assert dropped["orphaned"] == 1


async def test_a_worker_never_seen_alive_gets_no_check_in(es: ES, tmp_path: Path) -> None:
    job = es.emu.create_job("c1")
    config = make_config(
        es.url, WORKER, worker={"pid_file": str(tmp_path / "none.pid")}, jobs={"ids": [job]}
    )
    with anyio.fail_after(30), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            await until(lambda: named(logs, "worker_down"), within=10)
            await anyio.sleep(2 * INTERVAL)
            assert job in hb.scheduler
    assert times(es.emu, job) == []
    assert named(logs, "worker_down")[0]["never_up"] is True


# -- the health URL -----------------------------------------------------------------------


async def test_health_url_switched_between_200_and_503_and_a_new_started_at(es: ES) -> None:
    async with health_server() as health:
        health.started_at = ago(5).isoformat()
        job = es.emu.create_job("c1", worker_hostname=HOST)
        config = make_config(es.url, WORKER, worker={"health_url": health.url})
        with anyio.fail_after(30), capture_logs() as logs:
            async with Heartbeat(config) as hb:
                hb.watch(job)
                await until(lambda: len(times(es.emu, job)) >= 2, within=10)
                health.status = 503
                await until(lambda: named(logs, "worker_down"), within=10)
                down_at = time.monotonic()
                await anyio.sleep(3 * INTERVAL)
                assert [t for t in times(es.emu, job) if t > down_at + 0.05] == []
                health.status = 200
                await until(lambda: named(logs, "worker_up"), within=10)
                up_at = time.monotonic()
                await until(lambda: [t for t in times(es.emu, job) if t > up_at], within=10)
                # A new incarnation: the job was claimed by the earlier one.
                health.started_at = datetime.now(UTC).isoformat()
                await until(lambda: named(logs, "worker_restarted"), within=10)
                restarted_at = time.monotonic()
                mine = es.emu.create_job("c1", worker_hostname=HOST)
                hb.watch(mine)
                await until(lambda: len(times(es.emu, mine)) >= 2, within=10)
                assert job not in hb.scheduler
    assert named(logs, "worker_down")[0]["reason"] == "health_failed"
    assert "503" in named(logs, "worker_down")[0]["error"]
    assert named(logs, "worker_restarted")[0]["orphaned"] == 1
    assert [t for t in times(es.emu, job) if t > restarted_at] == []


async def test_both_probes_must_say_alive(es: ES, worker: WorkerProcess) -> None:
    worker.start()
    async with health_server() as health:
        job = es.emu.create_job("c1")
        config = make_config(
            es.url, WORKER, worker={"pid_file": str(worker.pid_file), "health_url": health.url}
        )
        with anyio.fail_after(30), capture_logs() as logs:
            async with Heartbeat(config) as hb:
                hb.watch(job)
                await until(lambda: times(es.emu, job), within=10)
                health.status = 503  # the process lives on, but does no work
                await until(lambda: named(logs, "worker_down"), within=10)
                assert hb.worker is not None and not hb.worker.up


# -- discovery ----------------------------------------------------------------------------


async def test_discovery_watches_only_the_current_incarnation_s_jobs(
    es: ES, worker: WorkerProcess
) -> None:
    worker.start()
    old = es.emu.create_job("c1", worker_hostname=HOST, started_at=ago(60))
    mine = es.emu.create_job("c1", worker_hostname=HOST)
    config = make_config(
        es.url,
        WORKER,
        discovery={"connector_ids": ["c1"], "worker_hostname": HOST, "interval": 0.05},
        worker={"pid_file": str(worker.pid_file)},
    )
    with anyio.fail_after(30):
        async with running(config, "discovery") as (hb, _):
            await until(lambda: len(times(es.emu, mine)) >= 2, within=10)
            lists = len([r for r in es.emu.requests if r.action == "list"])
            await until(
                lambda: len([r for r in es.emu.requests if r.action == "list"]) > lists + 4,
                within=10,
            )
            assert old not in hb.scheduler and mine in hb.scheduler
    assert times(es.emu, old) == []


# -- what an operator sees ----------------------------------------------------------------


async def test_metrics_readyz_and_status_show_the_worker(es: ES, worker: WorkerProcess) -> None:
    worker.start()
    config = make_config(
        es.url, WORKER, worker={"pid_file": str(worker.pid_file)}, metrics={"listen": "127.0.0.1:0"}
    )
    with anyio.fail_after(30):
        async with Heartbeat(config) as hb:
            await until(lambda: hb.worker is not None and hb.worker.up, within=10)
            assert sample(await scrape(hb), "heartbeat_worker_up") == 1
            status, body = await get_json(hb, "/readyz")
            assert body["reason"] != "worker_down"
            worker_status = ControlAPI(hb, token=None).status()["worker"]
            assert worker_status["up"] is True and worker_status["pid"] == worker.pid
            assert worker_status["started_at"].endswith("Z") and worker_status["since"]
            worker.kill()
            await until(lambda: hb.worker is not None and not hb.worker.up, within=10)
            assert sample(await scrape(hb), "heartbeat_worker_up") == 0
            status, body = await get_json(hb, "/readyz")
            assert (status, body["ready"], body["reason"]) == (503, False, "worker_down")
            assert ControlAPI(hb, token=None).status()["worker"]["up"] is False


async def test_without_worker_there_is_no_worker_metric_and_no_pause(es: ES) -> None:
    job = es.emu.create_job("c1")
    config = make_config(es.url, WORKER, jobs={"ids": [job]}, metrics={"listen": "127.0.0.1:0"})
    config = config.model_copy(update={"worker": type(config.worker)()})
    with anyio.fail_after(30):
        async with Heartbeat(config) as hb:
            assert hb.worker is None
            await until(lambda: times(es.emu, job), within=10)
            samples = await scrape(hb)
            assert all(name != "heartbeat_worker_up" for name, _ in samples)
            assert ControlAPI(hb, token=None).status()["worker"] is None


def test_the_boot_time_without_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd's ProcSubset=pid, /proc/stat is hidden: CLOCK_BOOTTIME stands in."""
    from heartbeat import probes

    btime = probes._read_btime(Path("/proc"))

    def hidden(_proc: Path) -> float:
        raise PermissionError("/proc/stat")

    monkeypatch.setattr(probes, "_boot_time", None)
    monkeypatch.setattr(probes, "_read_btime", hidden)
    fallback = probes.boot_time()
    assert btime <= fallback < btime + 1.5  # btime is in whole seconds
