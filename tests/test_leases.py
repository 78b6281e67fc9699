"""Claims that expire: the pure rule, the keeper on a manual clock, and the control API,
the library, the CLI and the state file against the emulator (which check-ins reach
it, and when)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.clock import ManualClock
from heartbeat.config import BackoffSettings, ScheduleSettings
from heartbeat.daemon import Heartbeat
from heartbeat.leases import LeaseKeeper, Leases, check_ttl
from heartbeat.outcomes import Success
from heartbeat.scheduler import Scheduler
from tests.conftest import ES
from tests.helpers_control import api_client, short_dir
from tests.helpers_http import sample, scrape
from tests.support import Sections, make_config, running, until

# -- the pure rule ------------------------------------------------------------------------


def test_a_lease_ends_at_its_expiry_unless_renewed() -> None:
    book = Leases()
    book.grant("a", "control", 120.0)
    book.grant("b", "queue", 100.0)
    assert book.next_expiry() == 100.0
    assert book.expire(99.9) == []
    assert book.expire(100.0) == [("b", "queue")]
    book.grant("a", "control", 180.0)  # renewed before 120
    assert book.expire(150.0) == []
    assert book.next_expiry() == 180.0
    assert book.expire(180.0) == [("a", "control")]
    assert len(book) == 0 and book.next_expiry() is None


def test_a_renewal_without_ttl_is_permanent_and_leases_are_per_claim() -> None:
    book = Leases()
    book.grant("a", "control", 10.0)
    book.grant("a", "queue", 20.0)
    book.grant("a", "control", None)  # renewed without a TTL: permanent
    assert book.leased("a") == {"queue": 20.0}
    assert book.expire(1e9) == [("a", "queue")]
    book.grant("b", "control", 10.0)
    book.forget("b")
    assert book.expire(1e9) == []


def test_a_shorter_renewal_moves_the_expiry_earlier() -> None:
    book = Leases()
    book.grant("a", "control", 100.0)
    book.grant("a", "control", 50.0)
    assert book.next_expiry() == 50.0
    assert book.expire(60.0) == [("a", "control")]
    assert book.expire(200.0) == []


def test_100000_leases_one_heap_entry_each_and_nothing_to_do_before_the_first() -> None:
    book = Leases()
    for index in range(100_000):
        book.grant(f"job-{index}", "queue", 1000.0 + index)
    for index in range(100_000):  # every lease renewed: no new entries
        book.grant(f"job-{index}", "queue", 2000.0 + index)
    assert len(book._heap) == 100_000
    assert book.expire(999.0) == []
    # The first entries surface early and are queued again at their new expiry.
    assert book.next_expiry() == 2000.0
    assert book.expire(2000.5) == [("job-0", "queue")]


@pytest.mark.parametrize("bad", [0, 0.5, -1, "x", True, None, float("inf"), float("nan"), [1]])
def test_ttls_under_a_second_or_not_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="ttl must be"):
        check_ttl(bad)


def test_ttls_as_numbers_or_strings() -> None:
    assert check_ttl(1) == 1.0 and check_ttl("120") == 120.0 and check_ttl(2.5) == 2.5


# -- the keeper, on a manual clock --------------------------------------------------------


async def test_the_last_claim_expiring_unwatches_and_an_earlier_one_only_goes() -> None:
    clock = ManualClock()

    async def check_in(_job_id: str) -> Success:
        return Success(200)

    scheduler = Scheduler(
        check_in,
        schedule=ScheduleSettings(),
        backoff_settings=BackoffSettings(),
        clock=clock,
    )
    keeper = LeaseKeeper(scheduler)
    with capture_logs() as logs:
        scheduler.watchlist.watch_many(["a", "b"], "control")
        keeper.grant(["a", "b"], "control", 120.0)
        scheduler.watchlist.watch("b", "queue")
        await clock.advance(119.0)
        assert "a" in scheduler and "b" in scheduler
        await clock.advance(1.0)
        assert "a" not in scheduler
        assert scheduler.watchlist.claims()["b"] == ("queue",)  # only the expired claim went
    removed = [e for e in logs if e["event"] == "job_removed"]
    assert removed == [
        {
            "event": "job_removed",
            "job_id": "a",
            "reason": "expired",
            "source": "control",
            "log_level": "info",
        }
    ]
    assert keeper.expired == {"control": 2}
    keeper.close()


# -- end to end ---------------------------------------------------------------------------


def checkin_times(es: ES, job_id: str) -> list[float]:
    return [record.at for record in es.emu.checkins(job_id)]


#: The layer for these tests: a check-in every 0.2 s, no state, no control API.
LEASES: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "schedule": {"interval": 0.2, "jitter": 0.0, "status_check_interval": 0},
    "state": {"dir": None},
    "control": {"socket": None},
}


async def test_control_api_leases_expire_renew_and_show_expires_at(es: ES) -> None:
    for job_id in ("put-body", "put-query", "posted", "kept", "permanent"):
        es.emu.create_job(job_id=job_id)
    with short_dir() as directory, capture_logs() as logs:
        socket = directory / "c.sock"
        config = make_config(
            es.url, LEASES, control={"socket": str(socket)}, metrics={"listen": "127.0.0.1:0"}
        )
        async with running(config, "file", "control") as (hb, _), api_client(socket) as call:
            created = await call("PUT", "/jobs/put-body", {"ttl": 1})
            assert created.status == 201 and created.json["expires_at"] is not None
            assert (await call("PUT", "/jobs/put-query?ttl=1")).status == 201
            posted = await call("POST", "/jobs", {"ids": ["posted", "kept"], "ttl": 1})
            assert posted.json == {"added": ["posted", "kept"], "already_watched": []}
            assert (await call("PUT", "/jobs/permanent")).json["expires_at"] is None
            for bad, problem in ((0.5, "at least 1"), ("soon", "number"), (True, "number")):
                answer = await call("PUT", "/jobs/other", {"ttl": bad})
                assert answer.status == 400 and problem in answer.json["error"]
                assert "other" not in hb.scheduler
            bad_post = await call("POST", "/jobs", {"ids": ["other"], "ttl": 0})
            assert bad_post.status == 400 and "other" not in hb.scheduler
            await until(
                lambda: all(checkin_times(es, j) for j in ("put-body", "posted")), within=10
            )
            # Renew "kept" for 3 s, twice before its lease ends: 200, a later expiry.
            first = (await call("GET", "/jobs/kept")).json["expires_at"]
            renewed = await call("PUT", "/jobs/kept", {"ttl": 3})
            assert renewed.status == 200 and renewed.json["expires_at"] > first
            await until(lambda: "put-body" not in hb.scheduler, within=5)
            expired_at = time.monotonic()
            await until(
                lambda: "posted" not in hb.scheduler and "put-query" not in hb.scheduler, within=10
            )
            assert "kept" in hb.scheduler and "permanent" in hb.scheduler
            samples = await scrape(hb)
            assert sample(samples, "heartbeat_claims_expired_total", source="control") == 3
            await anyio.sleep(0.5)
            listed = {job["id"]: job for job in (await call("GET", "/jobs")).json["jobs"]}
            assert set(listed) == {"kept", "permanent"}
    # No check-in of an expired job after its expiry was logged (plus one in flight).
    late = [t for t in checkin_times(es, "put-body") if t > expired_at + 0.05]
    assert late == []
    removed = {
        (e["job_id"], e["reason"], e.get("source")) for e in logs if e["event"] == "job_removed"
    }
    assert removed == {
        ("put-body", "expired", "control"),
        ("put-query", "expired", "control"),
        ("posted", "expired", "control"),
    }


async def test_default_ttl_applies_and_a_ttl_of_another_source_does_not_end_a_claim(
    es: ES,
) -> None:
    es.emu.create_job(job_id="shared")
    with short_dir() as directory:
        socket = directory / "c.sock"
        config = make_config(
            es.url,
            LEASES,
            control={"socket": str(socket), "default_ttl": 1},
            jobs={"ids": ["shared"]},
        )
        async with running(config, "file", "control") as (hb, _), api_client(socket) as call:
            # The config's claim is permanent, so the job has no expiry...
            assert (await call("PUT", "/jobs/shared")).json["expires_at"] is None
            # ...and when the control claim (default_ttl) ends, only that claim goes.
            await until(lambda: hb.scheduler.watchlist.claims()["shared"] == ("config",), within=5)
            assert "shared" in hb.scheduler


async def test_the_library_watch_with_ttl(es: ES) -> None:
    es.emu.create_job(job_id="lib")
    with capture_logs() as logs:
        async with Heartbeat(make_config(es.url, LEASES)) as hb:
            with pytest.raises(ValueError, match="ttl must be at least 1"):
                hb.watch("lib", ttl=0.2)
            assert "lib" not in hb.scheduler
            assert hb.watch("lib", ttl=1)
            await until(lambda: "lib" not in hb.scheduler, within=5)
    assert [(e["reason"], e["source"]) for e in logs if e["event"] == "job_removed"] == [
        ("expired", "api")
    ]


async def test_a_lease_survives_a_restart_with_its_remaining_time(es: ES, tmp_path: Path) -> None:
    for job_id in ("long", "short"):
        es.emu.create_job(job_id=job_id)
    config = make_config(es.url, LEASES, state={"dir": str(tmp_path)})
    async with Heartbeat(config) as hb:
        hb.watch("long", ttl=30)
        hb.watch("short", ttl=1)
        before = hb.leases.expires_at("long", ("api",))
    saved = json.loads((tmp_path / "watchlist.json").read_text())
    assert set(saved["leases"]) == {"long", "short"}
    await anyio.sleep(1.2)  # "short" ends while heartbeat is down
    es.emu.requests.clear()
    with capture_logs() as logs:
        async with Heartbeat(config) as hb:
            assert "short" not in hb.scheduler  # not watched again
            after = hb.leases.expires_at("long", ("api",))
            assert before is not None and after is not None
            assert abs(after - before) < 0.01  # a restart is not a renewal
            await until(lambda: checkin_times(es, "long"), within=10)
    assert checkin_times(es, "short") == []
    assert [(e["job_id"], e["reason"]) for e in logs if e["event"] == "job_removed"] == [
        ("short", "expired")
    ]


async def test_jobs_add_ttl_and_jobs_list_expires(es: ES) -> None:
    es.emu.create_job(job_id="cli-job")
    with short_dir() as directory:
        socket = directory / "c.sock"
        config = make_config(es.url, LEASES, control={"socket": str(socket)})
        async with running(config, "file", "control") as (hb, _):
            base = [sys.executable, "-m", "heartbeat", "jobs", "--socket", str(socket)]

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, *args], capture_output=True, text=True, timeout=30)

            refused = await anyio.to_thread.run_sync(cli, "add", "--ttl", "0.5", "cli-job")
            assert refused.returncode == 2 and "--ttl must be at least 1" in refused.stderr
            added = await anyio.to_thread.run_sync(cli, "add", "--ttl", "60", "cli-job")
            assert added.returncode == 0 and "added: cli-job" in added.stdout
            listed = await anyio.to_thread.run_sync(cli, "list")
            header, row = listed.stdout.splitlines()
            assert "EXPIRES" in header
            assert "in 60 s" in row or "in 59 s" in row
            shown = await anyio.to_thread.run_sync(cli, "show", "cli-job")
            assert "expires:" in shown.stdout and "Z" in shown.stdout
            assert hb.leases.expires_at("cli-job", ("control",)) is not None
