"""Never drop a live job (issue 12): cluster identity, two 404s, the storm brake,
tombstones, outcomes that survive restarts.

Two emulators with different ``cluster_uuid`` values stand for two clusters; the
assertions are the check-ins (and ``GET /`` reads) that reach each of them.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat import Heartbeat
from heartbeat.emulator import Emulator, Fault, serve
from heartbeat.state import FILENAME, OUTCOMES_FILENAME
from tests.faultproxy import fault_proxy
from tests.helpers_control import api_client, short_dir
from tests.helpers_daemon import run_daemon
from tests.support import Sections, heartbeat_cli, make_config, running, toml, write_config

pytestmark = pytest.mark.timeout(90)

UUID_A, UUID_B = "cluster-a-uuid", "cluster-b-uuid"


#: The layer for these tests: a check-in every 0.5 s, drops confirmed after 0.3 s,
#: quick retries, no state and no control API unless a test sets them.
NEVER_DROP: Sections = {
    "elasticsearch": {"request_timeout": 1.0},
    "schedule": {
        "interval": 0.5,
        "jitter": 0.0,
        "idle_after": 30.0,
        "drop_confirm_after": 0.3,
        "shutdown_timeout": 1.0,
    },
    "backoff": {"initial": 0.1, "multiplier": 2.0, "max": 0.4},
    "state": {"dir": None},
    "control": {"socket": None},
}


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def two_clusters(ids: list[str]) -> tuple[Emulator, Emulator]:
    emu_a = Emulator(cluster_uuid=UUID_A, cluster_name="production")
    emu_b = Emulator(cluster_uuid=UUID_B, cluster_name="staging")
    for job_id in ids:
        emu_a.create_job(job_id=job_id)  # B has none of them: a genuine 404 for each
    return emu_a, emu_b


async def test_a_reload_to_another_cluster_drops_nothing_and_recovers_when_switched_back() -> None:
    ids = [f"job-{n}" for n in range(5)]
    emu_a, emu_b = two_clusters(ids)
    async with serve(emu_a) as url_a, serve(emu_b) as url_b:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(url_a, NEVER_DROP)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(1.2)
                assert hb.health.readiness().ready
                await hb.apply(make_config(url_b, NEVER_DROP))  # someone pointed hosts at staging
                await anyio.sleep(2.0)
                readiness = hb.health.readiness()
                assert (readiness.ready, readiness.reason) == (
                    False,
                    "elasticsearch_cluster_mismatch",
                )
                assert hb.scheduler.in_outage
                switched_back = time.monotonic()
                await hb.apply(make_config(url_a, NEVER_DROP))
                await anyio.sleep(1.5)
                assert hb.health.readiness().ready
                watched = {job.id for job in hb.jobs()}
    assert watched == set(ids)
    assert emu_b.checkins() == []  # not one check-in reached the other cluster
    assert {r.action for r in emu_b.requests} == {"info"}
    assert not events(logs, "job_dropped")
    [mismatch] = events(logs, "elasticsearch_cluster_mismatch")
    assert (mismatch["host"], mismatch["expected"], mismatch["found"]) == (url_b, UUID_A, UUID_B)
    assert mismatch["log_level"] == "error"
    [outage] = events(logs, "elasticsearch_unreachable")
    assert (outage["cause"], outage["reached"]) == ("cluster_mismatch", True)
    assert events(logs, "elasticsearch_recovered")
    for job_id in ids:
        assert [r for r in emu_a.checkins(job_id) if r.at > switched_back and r.status == 200]
    connected = events(logs, "elasticsearch_connected")
    assert {(e["host"], e["cluster_uuid"], e["cluster_name"]) for e in connected} == {
        (url_a, UUID_A, "production")
    }
    assert connected[0]["version"] == "9.1.0"


async def test_a_host_of_another_cluster_is_skipped_like_a_dead_one() -> None:
    ids = [f"job-{n}" for n in range(3)]
    emu_a, emu_b = two_clusters(ids)
    async with serve(emu_a) as url_a, serve(emu_b) as url_b:
        with capture_logs() as logs, anyio.fail_after(30):
            # The expected cluster is pinned; the first host belongs to another one.
            config = make_config([url_b, url_a], NEVER_DROP, elasticsearch={"cluster_uuid": UUID_A})
            async with Heartbeat(config) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(1.6)
                readiness = hb.health.readiness()
                watched = {job.id for job in hb.jobs()}
    assert watched == set(ids)
    assert emu_b.checkins() == []
    for job_id in ids:
        assert len([r for r in emu_a.checkins(job_id) if r.status == 200]) >= 3
    assert readiness.reason == "elasticsearch_cluster_mismatch"
    assert len(events(logs, "elasticsearch_cluster_mismatch")) == 1
    assert not events(logs, "elasticsearch_unreachable")


async def test_a_genuine_drop_on_the_expected_cluster_still_works() -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    ids = [emu.create_job(job_id=f"job-{n}") for n in range(3)]
    async with serve(emu) as url:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(url, NEVER_DROP)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(0.8)
                emu.delete_job("job-0")
                await anyio.sleep(1.5)
                watched = {job.id for job in hb.jobs()}
                [tombstone] = hb.dropped()
    assert watched == {"job-1", "job-2"}
    first, second = [r.at for r in emu.checkins("job-0") if r.status == 404]
    assert 0.3 <= second - first < 0.6  # drop_confirm_after apart, then nothing more
    [dropped] = events(logs, "job_dropped")
    assert (dropped["job_id"], dropped["reason"]) == ("job-0", "not_found")
    assert (tombstone.id, tombstone.reason, tombstone.status) == ("job-0", "not_found", 404)
    assert tombstone.sources == ("test",)


async def test_a_404_shorter_than_drop_confirm_after_drops_nothing() -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    ids = [emu.create_job(job_id=f"job-{n}") for n in range(3)]
    async with serve(emu) as url:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(url, NEVER_DROP)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(0.8)
                emu.script([Fault(status=404)], job_id="job-0")  # one genuine 404
                await anyio.sleep(1.5)
                watched = {job.id for job in hb.jobs()}
                pending = hb.scheduler.pending_drops
    assert watched == set(ids)
    assert pending == 0
    statuses = [(r.status, r.at) for r in emu.checkins("job-0")]
    [(_, blip)] = [(s, t) for s, t in statuses if s == 404]
    after = [t for s, t in statuses if s == 200 and t > blip]
    assert 0.3 <= after[0] - blip < 0.6  # checked again drop_confirm_after later: fine
    assert not events(logs, "job_dropped")


async def test_a_storm_over_most_of_the_list_drops_nothing_before_idle_after() -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    ids = [emu.create_job(job_id=f"job-{n:02}") for n in range(40)]
    schedule = {"interval": 1.0, "idle_after": 6.0, "drop_confirm_after": 0.5}
    async with serve(emu) as url:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(url, NEVER_DROP, schedule=schedule)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(1.5)  # spread over the interval by now
                storm_at = time.monotonic()
                emu.always(Fault(status=404))  # the sync-jobs index is being restored
                await anyio.sleep(3.0)
                during = len(hb.jobs())
                pending = hb.scheduler.pending_drops
                emu.always(None)  # restored, before idle_after
                await anyio.sleep(1.5)
                after = len(hb.jobs())
                pending_after = hb.scheduler.pending_drops
    assert (during, after) == (40, 40)
    assert pending > 20
    assert pending_after == 0
    assert not events(logs, "job_dropped")
    [storm] = events(logs, "drop_storm_deferred")
    assert storm["count"] >= 10 and storm["watched"] == 40
    # Checked in every interval as usual meanwhile, not hammered, not abandoned.
    for job_id in ids:
        storm_checkins = [r.at for r in emu.checkins(job_id) if storm_at <= r.at < storm_at + 3]
        assert 2 <= len(storm_checkins) <= 5, (job_id, storm_checkins)


async def test_identity_unavailable_warns_once_and_drops_as_before() -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    ids = [emu.create_job(job_id=f"job-{n}") for n in range(3)]
    emu.always(Fault(status=403, actions=frozenset({"info"})))  # no monitor privilege
    async with serve(emu) as url:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(url, NEVER_DROP)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(0.8)
                emu.delete_job("job-0")
                await anyio.sleep(1.2)
                watched = {job.id for job in hb.jobs()}
    assert watched == {"job-1", "job-2"}
    [warning] = events(logs, "cluster_identity_unavailable")
    assert warning["status"] == 403 and "monitor" in warning["needed"]


async def test_a_pinned_identity_wins_over_a_remembered_one(tmp_path: Path) -> None:
    ids = ["job-0", "job-1"]
    emu_a, emu_b = two_clusters(ids)
    for job_id in ids:
        emu_b.create_job(job_id=job_id)  # both clusters know the jobs here
    state = tmp_path / "state"
    async with serve(emu_a) as url_a, serve(emu_b) as url_b:
        with anyio.fail_after(30):
            async with Heartbeat(make_config(url_a, NEVER_DROP, state={"dir": state})) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(0.6)
        saved = json.loads((state / FILENAME).read_text())
        assert saved["cluster_uuid"] == UUID_A  # the first cluster seen, remembered
        with capture_logs() as logs, anyio.fail_after(30):
            # Remembered A, no pin: B is another cluster.
            async with Heartbeat(make_config(url_b, NEVER_DROP, state={"dir": state})) as hb:
                await anyio.sleep(0.6)
            assert emu_b.checkins() == []
            # Moved to B on purpose: pinned, B is trusted and A is now the stranger.
            pinned = {"cluster_uuid": UUID_B}
            async with Heartbeat(
                make_config([url_a, url_b], NEVER_DROP, elasticsearch=pinned, state={"dir": state})
            ) as hb:
                await anyio.sleep(0.8)
                watched = {job.id for job in hb.jobs()}
    assert watched == set(ids)
    assert {r.job_id for r in emu_b.checkins() if r.status == 200} == set(ids)
    mismatches = [
        (e["host"], e["expected"]) for e in events(logs, "elasticsearch_cluster_mismatch")
    ]
    assert mismatches == [(url_b, UUID_A), (url_a, UUID_B)]
    assert json.loads((state / FILENAME).read_text())["cluster_uuid"] == UUID_B


async def test_tombstones_and_restore_through_the_api_and_the_cli() -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    for name in ("keep", "a/b gone"):
        emu.create_job(job_id=name)
    with short_dir() as tmp:
        socket = tmp / "control.sock"
        async with serve(emu) as url:
            config = make_config(
                url, NEVER_DROP, state={"dir": tmp / "state"}, control={"socket": socket}
            )
            async with running(config, "control") as (hb, _), api_client(socket) as call:
                assert (await call("PUT", "/jobs/keep")).status == 201
                assert (await call("PUT", "/jobs/a%2Fb%20gone")).status == 201
                emu.delete_job("a/b gone")
                with anyio.fail_after(10):
                    while "a/b gone" in hb.scheduler:
                        await anyio.sleep(0.05)
                dropped = await call("GET", "/dropped")
                assert dropped.status == 200
                [entry] = dropped.json["dropped"]
                assert entry["id"] == "a/b gone"
                assert (entry["reason"], entry["status"]) == ("not_found", 404)
                assert entry["server_reason"] == "connector sync job [a/b gone] not found"
                assert entry["sources"] == ["control"]
                assert entry["dropped_at"].endswith("Z")
                jobs = ("jobs", "--socket", str(socket))
                cli = await heartbeat_cli(*jobs, "dropped", "--json")
                assert cli[0] == 0 and json.loads(cli[1]) == dropped.json
                text = await heartbeat_cli(*jobs, "dropped")
                assert text[0] == 0 and "a/b gone" in text[1] and "not_found" in text[1]
                missing = await call("POST", "/dropped/keep/restore")
                assert missing.status == 404
                assert (await heartbeat_cli(*jobs, "restore", "never-dropped"))[0] == 1
                emu.create_job(job_id="a/b gone")  # it exists again (or never left)
                restored = await heartbeat_cli(*jobs, "restore", "a/b gone")
                assert restored[0] == 0 and "restored" in restored[1]
                assert hb.scheduler.watchlist.job("a/b gone") is not None
                assert (await call("GET", "/dropped")).json == {"dropped": []}
                view = hb.scheduler.watchlist.job("a/b gone")
                assert view is not None and view.sources == ("control",)
    assert [r.status for r in emu.checkins("a/b gone")][-1] == 200  # checked in again


async def test_last_success_comes_back_after_kill_9(tmp_path: Path) -> None:
    emu = Emulator(cluster_uuid=UUID_A)
    emu.create_job(job_id="job-a")
    state = tmp_path / "state"
    async with serve(emu) as url:
        text = toml(
            url,
            schedule={"interval": 1.0, "jitter": 0.0},
            jobs={"ids": ["job-a"]},
            state={"dir": state},
            logging={"format": "json"},
        )
        config = write_config(tmp_path / "hb.toml", text)
        async with run_daemon(config) as daemon:
            saved = await saved_outcome(state / OUTCOMES_FILENAME, "job-a")
            daemon.signal(signal.SIGKILL)
            await daemon.wait()
        emu.always(Fault(status=503))  # after the restart, nothing succeeds
        with capture_logs(), anyio.fail_after(30):
            restarted = make_config(
                url,
                NEVER_DROP,
                state={"dir": state},
                schedule={"idle_after": 2.0},
                jobs={"ids": ["job-a"]},
            )
            async with Heartbeat(restarted) as hb:
                view = hb.scheduler.watchlist.job("job-a")
                assert view is not None and view.last_success is not None
                assert abs(view.last_success - saved) < 0.01
                await anyio.sleep(max(0.0, 1.1 - (time.time() - saved)))  # > idle_after / 2
                assert hb.health.risk().at_risk == 1


async def saved_outcome(path: Path, job_id: str) -> float:
    """The saved last_success of ``job_id`` once the state file has one."""
    with anyio.fail_after(15):
        while True:
            try:
                text = await anyio.Path(path).read_text()
                outcome = json.loads(text).get("outcomes", {}).get(job_id)
            except (OSError, ValueError):
                outcome = None
            if outcome and outcome[0] is not None:
                return float(outcome[0])
            await anyio.sleep(0.2)


async def test_another_cluster_behind_the_same_url_after_a_reconnection() -> None:
    # A DNS or load-balancer change during an outage: the one host URL now leads to
    # another cluster, which answers a genuine 404 for every job.
    ids = [f"job-{n}" for n in range(4)]
    emu_a, emu_b = two_clusters(ids)
    async with serve(emu_a) as url_a, serve(emu_b) as url_b, fault_proxy(url_a) as proxy:
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config(proxy.url, NEVER_DROP)) as hb:
                hb.watch_many(ids, "test")
                await anyio.sleep(1.2)
                await proxy.set_mode("refuse")
                await anyio.sleep(0.8)
                host, port = url_b.removeprefix("http://").rsplit(":", 1)
                proxy.upstream = (host, int(port))
                await proxy.set_mode("pass")
                await anyio.sleep(2.0)
                watched = {job.id for job in hb.jobs()}
                readiness = hb.health.readiness()
    assert watched == set(ids)
    assert emu_b.checkins() == []
    assert {r.action for r in emu_b.requests} == {"info"}
    assert readiness.reason == "elasticsearch_cluster_mismatch"
    [mismatch] = events(logs, "elasticsearch_cluster_mismatch")
    assert (mismatch["host"], mismatch["found"]) == (proxy.url, UUID_B)
    assert not events(logs, "job_dropped")
    assert len(events(logs, "elasticsearch_connected")) == 1  # once per host
