"""Discovery against the emulator: this host's running jobs of the configured connectors."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.client import Client
from heartbeat.config import ElasticsearchSettings
from heartbeat.daemon import Heartbeat
from heartbeat.emulator import Fault
from heartbeat.errors import ConfigError
from heartbeat.outcomes import Retryable
from tests.conftest import ES
from tests.support import Sections, make_config, running, until

HOST = "host-a"
INTERVAL = 0.05


#: The layer for these tests: connectors c1 and c2 on this host, listed every 0.05 s,
#: no status reads, no state.
DISCOVERY: Sections = {
    "discovery": {"connector_ids": ["c1", "c2"], "worker_hostname": HOST, "interval": INTERVAL},
    "jobs": {"ids": []},
    "schedule": {"status_check_interval": 0},
    "state": {"dir": None},
}


def discovered(hb: Heartbeat) -> set[str]:
    return {
        job_id
        for job_id, sources in hb.scheduler.watchlist.claims().items()
        if "discovery" in sources
    }


async def test_watches_exactly_this_hosts_running_jobs_and_lets_go_of_finished_ones(
    es: ES,
) -> None:
    emu = es.emu
    mine = emu.create_job("c1", status="in_progress", worker_hostname=HOST, job_id="mine")
    stopping = emu.create_job("c1", status="canceling", worker_hostname=HOST, job_id="stopping")
    other_connector = emu.create_job("c2", worker_hostname=HOST, job_id="c2-job")
    emu.create_job("c1", status="in_progress", worker_hostname="host-b", job_id="elsewhere")
    emu.create_job("c1", status="pending", worker_hostname=HOST, job_id="queued")
    emu.create_job("c3", status="in_progress", worker_hostname=HOST, job_id="not-configured")
    emu.create_job("c1", status="completed", worker_hostname=HOST, job_id="done")
    both = emu.create_job("c1", worker_hostname=HOST, job_id="also-configured")
    config = make_config(es.url, DISCOVERY, jobs={"ids": [both]})
    with anyio.fail_after(10), capture_logs() as logs:
        async with running(config, "discovery") as (hb, _):
            await until(lambda: discovered(hb) == {mine, stopping, other_connector, both})
            emu.set_status(mine, "completed")
            emu.set_status(both, "error")
            await until(lambda: discovered(hb) == {stopping, other_connector})
            assert mine not in hb.scheduler
            # Still asked for by [jobs] ids: only discovery's claim was withdrawn.
            assert hb.scheduler.watchlist.claims()[both] == ("config",)
    removed = [(e["job_id"], e["reason"]) for e in logs if e["event"] == "job_removed"]
    assert removed == [(mine, "discovery")]


async def test_a_failed_listing_changes_nothing_and_is_logged_once(es: ES) -> None:
    emu = es.emu
    job = emu.create_job("c1", worker_hostname=HOST, job_id="kept")
    with anyio.fail_after(10), capture_logs() as logs:
        async with running(make_config(es.url, DISCOVERY), "discovery") as (hb, _):
            await until(lambda: discovered(hb) == {job})
            emu.always(Fault(status=503, actions=frozenset({"list"})))
            emu.set_status(job, "completed")  # invisible while listing fails
            before = len([r for r in emu.requests if r.action == "list"])
            await until(lambda: len([r for r in emu.requests if r.action == "list"]) > before + 5)
            assert discovered(hb) == {job}
            emu.always(None)
            await until(lambda: discovered(hb) == set())
    failed = [e for e in logs if e["event"] == "discovery_failed"]
    assert len(failed) == 1
    assert (failed[0]["reason"], failed[0]["status"], failed[0]["kept"]) == ("http_503", 503, 1)
    recovered = [e for e in logs if e["event"] == "discovery_recovered"]
    assert len(recovered) == 1 and recovered[0]["failures"] >= 5


async def test_every_page_is_read(es: ES) -> None:
    ids = {es.emu.create_job("c1", worker_hostname=HOST) for _ in range(250)}
    with anyio.fail_after(10):
        async with running(make_config(es.url, DISCOVERY), "discovery") as (hb, _):
            await until(lambda: discovered(hb) == ids)
    pages = [
        r for r in es.emu.requests if r.action == "list" and "status=in_progress" in r.raw_path
    ]
    assert len(pages) >= 3


async def test_reload_switches_connectors_at_once(es: ES) -> None:
    first = es.emu.create_job("c1", worker_hostname=HOST)
    second = es.emu.create_job("c9", worker_hostname=HOST)
    config = make_config(es.url, DISCOVERY, discovery={"interval": 60})
    with anyio.fail_after(10):
        async with running(config, "discovery") as (hb, sources):
            source = sources["discovery"]
            await until(lambda: discovered(hb) == {first})
            new = make_config(
                es.url, DISCOVERY, discovery={"interval": 60, "connector_ids": ["c9"]}
            )
            await source.reload(new)
            await until(lambda: discovered(hb) == {second})


async def test_list_jobs_reads_every_page_and_rereads_a_list_that_changed(es: ES) -> None:
    ids = [es.emu.create_job("c1", worker_hostname=HOST) for _ in range(15)]
    es.emu.create_job("c2")
    async with Client(ElasticsearchSettings(hosts=[es.url])) as client:
        with anyio.fail_after(5):
            documents = await client.list_jobs(connector_id="c1", page_size=4)
        assert isinstance(documents, list)
        assert [d["id"] for d in documents] == ids[::-1]  # newest first
        paths = [r.raw_path for r in es.emu.requests if r.action == "list"]
        assert len(paths) == 4
        assert "connector_id=c1" in paths[0] and "from=0&size=4" in paths[0]
        # A malformed page is a failure, not an empty list.
        es.emu.script([Fault(status=200, body=b'{"results": 3}', actions=frozenset({"list"}))])
        with anyio.fail_after(5):
            broken = await client.list_jobs(connector_id="c1")
        assert isinstance(broken, Retryable) and broken.error == "malformed"


async def test_list_jobs_gives_up_on_a_list_that_keeps_changing(es: ES) -> None:
    for _ in range(5):
        es.emu.create_job("c1")
    # Every page reports another total, as when jobs start and end during the read.
    es.emu.script(
        [
            Fault(
                status=200,
                body=f'{{"count": {count}, "results": [{{}}, {{}}]}}'.encode(),
                actions=frozenset({"list"}),
            )
            for count in range(100, 110)
        ]
    )
    async with Client(ElasticsearchSettings(hosts=[es.url])) as client:
        with anyio.fail_after(5):
            outcome = await client.list_jobs(connector_id="c1", page_size=2)
    assert isinstance(outcome, Retryable) and outcome.error == "inconsistent"


def test_discovery_interval_must_beat_idle_after(tmp_path: Any) -> None:
    from heartbeat import config as configuration

    path = tmp_path / "heartbeat.toml"
    path.write_text("[discovery]\nconnector_ids = ['c1']\ninterval = 300\n")
    with pytest.raises(ConfigError, match=r"discovery\.interval: 300 must be less than"):
        configuration.load(path)
    # With discovery off, its interval is not held against idle_after (a tester's 30 s).
    path.write_text("[schedule]\ninterval = 10\nidle_after = 30\n")
    assert configuration.load(path).schedule.idle_after == 30
    path.write_text("[discovery]\nconnector_ids = ['c1', ' ']\n")
    with pytest.raises(ConfigError, match=r"discovery\.connector_ids: entry 1: connector id"):
        configuration.load(path)
