"""The daemon as a real process: signals, reload, shutdown; and the library API."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat import Heartbeat, InvalidJobId
from heartbeat.config import Config, ElasticsearchSettings, ScheduleSettings
from heartbeat.emulator import Fault
from tests.conftest import ES
from tests.helpers_daemon import DAEMON, run_daemon
from tests.support import toml, write_config


async def test_sigterm_lets_the_in_flight_check_in_finish_and_exits_0(
    es: ES, tmp_path: Path
) -> None:
    job = es.emu.create_job(job_id="job-a")
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": [job]}))
    async with run_daemon(config) as daemon:
        started = await daemon.wait_for("daemon_started")
        assert started["jobs"] == 1
        await daemon.wait_for("checkin_succeeded")
        # The next check-in hangs for 1.5 s; SIGTERM arrives while it is in flight.
        es.emu.script([Fault(delay=1.5)], job_id=job)
        with anyio.fail_after(5):
            while es.emu.faults.pending(job):
                await anyio.sleep(0.05)
        await anyio.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    stopping = daemon.named("daemon_stopping")
    assert stopping[0]["signal"] == "SIGTERM"
    assert stopping[0]["in_flight"] == 1
    assert daemon.named("daemon_stopped")[0]["reason"] == "SIGTERM"
    assert es.emu.checkins(job)[-1].status == 200  # the slow request was answered


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_stop_signals_exit_0(es: ES, tmp_path: Path, signum: int) -> None:
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    async with run_daemon(config, "--job", "from-cli") as daemon:
        await daemon.wait_for("daemon_started")
        daemon.signal(signum)
        assert await daemon.wait() == 0
    assert daemon.named("job_added")[0]["source"] == "cli"


async def test_sighup_applies_a_new_config_and_keeps_the_old_one_when_invalid(
    es: ES, tmp_path: Path
) -> None:
    for job_id in ("old-job", "new-job"):
        es.emu.create_job(job_id=job_id)
    path = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": ["old-job"]}))
    async with run_daemon(path) as daemon:
        await daemon.wait_for("checkin_succeeded")
        write_config(
            path, toml(es.url, DAEMON, jobs={"ids": ["new-job"]}, schedule={"ramp_rate": 500.0})
        )
        daemon.signal(signal.SIGHUP)
        reloaded = await daemon.wait_for("config_reloaded")
        assert set(reloaded["changed"]) == {"schedule", "jobs"}
        removed = await daemon.wait_for("job_removed")
        assert (removed["job_id"], removed["reason"]) == ("old-job", "config")
        await anyio.sleep(1.2)
        assert len(es.emu.checkins("new-job")) >= 2

        path.write_text("[schedule]\ninterval = 'often'\n")
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_for("config_reload_failed")
        assert "schedule.interval" in failed["error"]
        before = len(es.emu.checkins("new-job"))
        await anyio.sleep(1.2)
        assert len(es.emu.checkins("new-job")) > before  # still running, old config kept
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_404_drop_is_logged_and_no_further_requests_go_out(es: ES, tmp_path: Path) -> None:
    job = es.emu.create_job(job_id="short-lived")
    config = write_config(
        tmp_path / "hb.toml",
        toml(es.url, DAEMON, jobs={"ids": [job]}, schedule={"drop_confirm_after": 0.5}),
    )
    async with run_daemon(config) as daemon:
        await daemon.wait_for("checkin_succeeded")
        es.emu.delete_job(job)
        dropped = await daemon.wait_for("job_dropped")
        await anyio.sleep(1.5)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert dropped["job_id"] == job
    assert dropped["reason"] == "not_found"
    assert dropped["status"] == 404
    assert dropped["server_reason"] == "connector sync job [short-lived] not found"
    assert dropped["level"] == "warning"
    assert [r.status for r in es.emu.checkins(job)][-1] == 404
    # Two genuine 404s, drop_confirm_after apart, then nothing more.
    first, second = [r.at for r in es.emu.checkins(job) if r.status == 404]
    assert second - first >= 0.5


async def test_json_log_lines_start_with_event_level_timestamp(es: ES, tmp_path: Path) -> None:
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    async with run_daemon(config) as daemon:
        await daemon.wait_for("daemon_started")
        daemon.signal(signal.SIGTERM)
        await daemon.wait()
    first = daemon.named("daemon_started")[0]
    assert list(first)[:3] == ["event", "level", "timestamp"]
    assert first["timestamp"].endswith("Z")
    assert first["level"] == "info"


async def test_config_error_exits_78_and_writes_no_log(tmp_path: Path) -> None:
    path = tmp_path / "hb.toml"
    path.write_text("[schedule]\nintervall = 5\n")
    async with run_daemon(path) as daemon:
        assert await daemon.wait() == 78
    assert daemon.events == []


async def test_library_api_runs_in_the_callers_loop(es: ES) -> None:
    job = es.emu.create_job(job_id="embedded")
    config = Config(
        elasticsearch=ElasticsearchSettings(hosts=[es.url]),
        schedule=ScheduleSettings(interval=0.3, jitter=0.0),
    )
    with anyio.fail_after(10), capture_logs() as logs:
        async with Heartbeat(config) as hb:
            assert hb.watch(job) is True
            assert hb.watch(job) is False
            with pytest.raises(InvalidJobId):
                hb.watch("")
            while len(es.emu.checkins(job)) < 3:
                await anyio.sleep(0.05)
            [view] = hb.jobs()
            assert view.id == job
            assert view.last_success is not None
            assert view.consecutive_failures == 0
            assert hb.unwatch(job) is True
            assert hb.unwatch(job) is False
            count = len(es.emu.checkins(job))
            await anyio.sleep(0.5)
            assert len(es.emu.checkins(job)) == count
    assert [e["event"] for e in logs].count("job_added") == 1


async def test_a_config_file_with_a_secret_readable_by_others_is_warned_about(
    es: ES, tmp_path: Path
) -> None:
    es.emu.api_key = "sekret-daemon-key"
    job = es.emu.create_job(job_id="secured")
    path = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": [job]}))
    text = path.read_text().replace(
        "[elasticsearch]\n", '[elasticsearch]\napi_key = "sekret-daemon-key"\n'
    )
    path.write_text(text)
    path.chmod(0o644)
    async with run_daemon(path) as daemon:
        exposed = await daemon.wait_for("config_file_exposed")
        await daemon.wait_for("checkin_succeeded")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert exposed["path"] == str(path)
    assert es.emu.checkins(job)[0].headers["Authorization"] == "ApiKey sekret-daemon-key"
    assert not any("sekret-daemon-key" in line for line in daemon.raw)


def test_an_invalid_new_id_changes_nothing_where_it_enters() -> None:
    # The watch list trusts its ids: each entry validates them, once (heartbeat.jobid).
    # For an embedder, the entry is the library API; a batch with a bad id is refused
    # whole, before anything changes.
    hb = Heartbeat(Config(elasticsearch=ElasticsearchSettings(hosts=["http://127.0.0.1:9"])))
    hb.watch_many(["a", "b"], "file")
    with pytest.raises(InvalidJobId):
        hb.watch_many(["a", "c", "bad\x00id"], "file")
    assert hb.claimed("file") == {"a", "b"}
