"""Statuses that end vouching: ``suspended`` is finished, and ``canceling`` is checked in
for at most ``[schedule] canceling_grace`` after heartbeat first sees it, by status reads
and by discovery. Against the emulator: which check-ins reach it, and when."""

from __future__ import annotations

import time
from typing import Any

import anyio
from structlog.testing import capture_logs

from heartbeat.daemon import Heartbeat
from tests.conftest import ES
from tests.support import Sections, make_config, running, until

GRACE = 0.6
HOST = "host-c"


#: The layer for these tests: check-ins and status reads every 0.1 s, no state.
CANCELING: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "schedule": {
        "interval": 0.1,
        "jitter": 0.0,
        "status_check_interval": 0.1,
        "canceling_grace": GRACE,
    },
    "state": {"dir": None},
}


def times(es: ES, job_id: str) -> list[float]:
    return [record.at for record in es.emu.checkins(job_id)]


def dropped(logs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["job_id"]: e["job_status"] for e in logs if e["event"] == "job_dropped"}


async def test_suspended_is_finished_and_canceling_ends_after_the_grace(es: ES) -> None:
    suspended = es.emu.create_job(status="suspended", job_id="suspended")
    canceling = es.emu.create_job(job_id="canceling")
    quick = es.emu.create_job(job_id="quick")
    running = es.emu.create_job(job_id="running")
    ids = [suspended, canceling, quick, running]
    with anyio.fail_after(20), capture_logs() as logs:
        async with Heartbeat(make_config(es.url, CANCELING, jobs={"ids": ids})) as hb:
            await until(lambda: suspended not in hb.scheduler, within=10)
            es.emu.set_status(canceling, "canceling")
            es.emu.set_status(quick, "canceling")
            await until(lambda: [e for e in logs if e["event"] == "job_canceling"][1:], within=10)
            seen_at = time.monotonic()
            # A live worker finishes its cancel within the grace: dropped as canceled.
            es.emu.set_status(quick, "canceled")
            await until(lambda: canceling not in hb.scheduler, within=10)
            dropped_at = time.monotonic()
            await anyio.sleep(0.5)
            assert running in hb.scheduler
    assert dropped(logs) == {suspended: "suspended", quick: "canceled", canceling: "canceling"}
    # Checked in while within the grace, never after it ended.
    assert GRACE - 0.15 <= dropped_at - seen_at <= GRACE + 0.3
    assert [t for t in times(es, canceling) if seen_at < t < dropped_at - 0.2]
    assert [t for t in times(es, canceling) if t > dropped_at + 0.05] == []
    drop = next(e for e in logs if e["event"] == "job_dropped" and e["job_id"] == canceling)
    assert drop["reason"] == "finished"


async def test_discovery_stops_watching_a_canceling_job_after_the_grace(es: ES) -> None:
    job = es.emu.create_job("c1", status="canceling", worker_hostname=HOST, job_id="stuck")
    config = make_config(
        es.url,
        CANCELING,
        discovery={"connector_ids": ["c1"], "worker_hostname": HOST, "interval": 0.05},
        schedule={"status_check_interval": 0},
    )
    with anyio.fail_after(20), capture_logs() as logs:
        async with running(config, "discovery") as (hb, _):
            await until(lambda: job in hb.scheduler, within=10)
            await until(lambda: job not in hb.scheduler, within=10)
            gone_at = time.monotonic()
            lists = len([r for r in es.emu.requests if r.action == "list"])
            await until(
                lambda: len([r for r in es.emu.requests if r.action == "list"]) > lists + 8,
                within=10,
            )
            assert job not in hb.scheduler
    assert [e["job_id"] for e in logs if e["event"] == "job_added"] == [job]
    assert dropped(logs) == {job: "canceling"}
    assert times(es, job)  # checked in during the grace
    assert [t for t in times(es, job) if t > gone_at + 0.05] == []
