"""Prometheus metrics: [metrics] settings, and real scrapes of a running Heartbeat
checking jobs in against the emulator with faults."""

from __future__ import annotations

import platform
import socket
import time

import anyio
import pytest

from heartbeat import Heartbeat, __version__
from heartbeat import config as configuration
from heartbeat.emulator import Fault
from heartbeat.errors import ConfigError
from heartbeat.metrics import DROP_REASONS, OUTCOMES
from heartbeat.outcomes import Retryable, Success
from tests.conftest import ES
from tests.helpers_http import (
    LISTENER,
    get,
    one_job_at_risk,
    parse,
    sample,
    scrape,
    wait_for_sample,
)
from tests.support import free_port, make_config, running

pytestmark = pytest.mark.timeout(30)


# --- [metrics] settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9310", ("127.0.0.1", 9310)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:9310", ("localhost", 9310)),
        (" 127.0.0.2:9310 ", ("127.0.0.2", 9310)),
        ("", None),
    ],
)
def test_listen_addresses(listen: str, address: tuple[str, int] | None) -> None:
    config = configuration.build({"metrics": {"listen": listen}}, source="t.toml")
    assert config.metrics.address() == address


def test_metrics_are_off_by_default() -> None:
    assert configuration.build({}, source="t.toml").metrics.address() is None


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("9310", "'9310': must be host:port"),
        (":9310", "must be host:port"),
        ("::1:9310", "an IPv6 address goes in brackets"),
        ("127.0.0.1:http", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:70000", "the port must be a number from 0 to 65535"),
        ("0.0.0.0:9310", "'0.0.0.0:9310' is not a loopback address"),
        ("[::]:9310", "is not a loopback address"),
        ("metrics.example.com:9310", "is not a loopback address"),
    ],
)
def test_bad_listen_names_the_key(listen: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        configuration.build({"metrics": {"listen": listen}}, source="t.toml")
    message = str(caught.value)
    assert message.startswith("t.toml: metrics.listen: "), message
    assert problem in message


def test_allow_remote_accepts_any_address() -> None:
    config = configuration.build(
        {"metrics": {"listen": "0.0.0.0:9310", "allow_remote": True}}, source="t.toml"
    )
    assert config.metrics.address() == ("0.0.0.0", 9310)


def test_listen_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTBEAT_METRICS__LISTEN", "10.0.0.1:9310")
    with pytest.raises(ConfigError, match=r"metrics\.listen: '10\.0\.0\.1:9310' is not a loop"):
        configuration.build({}, source="t.toml")


# --- scrapes ----------------------------------------------------------------------------


async def test_success_and_a_not_found_drop(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    schedule = {"drop_confirm_after": 1.0}
    async with running(
        make_config(es.url, LISTENER, jobs={"ids": ["job-a", "gone"]}, schedule=schedule)
    ) as (hb, _):
        await wait_for_sample(hb, "heartbeat_jobs_pending_drop", lambda v: v == 1)
        found = await wait_for_sample(
            hb, "heartbeat_jobs_dropped_total", lambda v: v == 1, reason="not_found"
        )
        found = await wait_for_sample(
            hb, "heartbeat_checkins_total", lambda v: v == 1, outcome="success"
        )
    # The first 404 marked it, the second (1 s later) dropped it.
    assert sample(found, "heartbeat_checkins_total", outcome="not_found") == 2
    assert sample(found, "heartbeat_jobs_pending_drop") == 0
    assert sample(found, "heartbeat_jobs_dropped_total", reason="rejected") == 0
    assert sample(found, "heartbeat_watched_jobs") == 1
    assert sample(found, "heartbeat_checkin_duration_seconds_count") == 3
    assert sample(found, "heartbeat_elasticsearch_up") == 1
    assert sample(found, "heartbeat_jobs_at_risk") == 0
    assert sample(found, "heartbeat_checkins_in_flight") == 0
    assert sample(
        found, "heartbeat_build_info", version=__version__, python=platform.python_version()
    )
    # Every outcome and drop reason is there from the start, at 0 if nothing happened.
    for outcome in OUTCOMES.values():
        assert sample(found, "heartbeat_checkins_total", outcome=outcome) is not None
    for reason in DROP_REASONS:
        assert sample(found, "heartbeat_jobs_dropped_total", reason=reason) is not None
    # No job id is ever a label value.
    values = {value for _, labels in found for _, value in labels}
    assert not values & {"job-a", "gone"}


async def test_a_503_counts_as_retryable(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    es.emu.script([Fault(status=503)], job_id="job-a")
    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        found = await wait_for_sample(
            hb, "heartbeat_checkins_total", lambda v: v == 1, outcome="success"
        )
    assert sample(found, "heartbeat_checkins_total", outcome="retryable") == 1
    assert sample(found, "heartbeat_jobs_dropped_total", reason="not_found") == 0
    assert sample(found, "heartbeat_watched_jobs") == 1


async def test_elasticsearch_up_follows_the_cluster(es: ES) -> None:
    es.emu.create_job(job_id="job-a")
    es.emu.always(Fault(status=503))
    async with running(make_config(es.url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        await wait_for_sample(hb, "heartbeat_elasticsearch_up", lambda v: v == 0)
        es.emu.always(None)
        found = await wait_for_sample(hb, "heartbeat_elasticsearch_up", lambda v: v == 1)
    assert sample(found, "heartbeat_checkins_total", outcome="retryable")


async def test_connection_refused_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with running(make_config(url, LISTENER, jobs={"ids": ["job-a"]})) as (hb, _):
        found = await wait_for_sample(hb, "heartbeat_elasticsearch_up", lambda v: v == 0)
    assert sample(found, "heartbeat_checkins_total", outcome="retryable")
    assert sample(found, "heartbeat_checkins_total", outcome="success") == 0


async def test_elasticsearch_up_is_absent_before_the_first_contact() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with running(make_config(url, LISTENER)) as (hb, _):
        found = await scrape(hb)
    assert sample(found, "heartbeat_elasticsearch_up") is None
    assert sample(found, "heartbeat_watched_jobs") == 0
    assert sample(found, "heartbeat_oldest_checkin_age_seconds") == 0


async def test_a_job_without_success_for_half_idle_after_is_at_risk(es: ES) -> None:
    async with one_job_at_risk(es) as hb:
        found = await scrape(hb)
        assert sample(found, "heartbeat_jobs_at_risk") == 0
        found = await wait_for_sample(hb, "heartbeat_jobs_at_risk", lambda v: v == 1)
    assert sample(found, "heartbeat_oldest_checkin_age_seconds") >= 1.0  # type: ignore[operator]
    assert sample(found, "heartbeat_elasticsearch_up") == 1
    assert sample(found, "heartbeat_watched_jobs") == 2


async def test_openmetrics_when_asked(es: ES) -> None:
    async with running(make_config(es.url, LISTENER)) as (hb, _):
        status, content_type, text = await get(
            hb, "/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "heartbeat_checkins_total" in text


def test_each_heartbeat_has_its_own_registry() -> None:
    config = make_config("http://127.0.0.1:9", LISTENER)
    first, second = Heartbeat(config), Heartbeat(config)
    assert first.metrics.registry is not second.metrics.registry
    assert b"heartbeat_watched_jobs 0.0" in second.metrics.exposition()[0]


def test_durations_land_in_their_le_buckets() -> None:
    hb = Heartbeat(make_config("http://127.0.0.1:9", LISTENER))
    for seconds in (0.0, 0.005, 0.0051, 0.3, 30.0, 31.0):  # 0.005 and 30.0 are bounds
        for observer in hb.scheduler.outcome_observers:
            observer("job-a", Success(200), seconds)
    for observer in hb.scheduler.outcome_observers:
        observer("job-a", Retryable("timeout", "no answer"), 10.5)
    found = parse(hb.metrics.exposition()[0].decode())
    bucket = "heartbeat_checkin_duration_seconds_bucket"
    assert sample(found, bucket, le="0.005") == 2
    assert sample(found, bucket, le="0.01") == 3
    assert sample(found, bucket, le="0.25") == 3
    assert sample(found, bucket, le="0.5") == 4
    assert sample(found, bucket, le="10.0") == 4
    assert sample(found, bucket, le="30.0") == 6
    assert sample(found, bucket, le="+Inf") == 7
    assert sample(found, "heartbeat_checkin_duration_seconds_count") == 7
    assert sample(found, "heartbeat_checkin_duration_seconds_sum") == pytest.approx(71.8101)
    assert sample(found, "heartbeat_checkins_total", outcome="success") == 6
    assert sample(found, "heartbeat_checkins_total", outcome="retryable") == 1
    assert sample(found, "heartbeat_checkins_total", outcome="not_found") == 0


def test_a_scrape_stays_cheap_at_100000_jobs() -> None:
    hb = Heartbeat(make_config("http://127.0.0.1:9", LISTENER, schedule={"ramp_rate": 1e9}))
    hb.watch_many([f"job-{index:06d}" for index in range(100_000)])
    started = time.perf_counter()
    body, _ = hb.metrics.exposition()
    elapsed = time.perf_counter() - started
    assert sample(parse(body.decode()), "heartbeat_watched_jobs") == 100_000
    assert len(body) < 20_000  # nothing per job
    assert elapsed < 0.5, f"a scrape took {elapsed:.3f} s"  # ~5 ms on a laptop


async def test_a_taken_port_is_a_config_error(es: ES) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hb = Heartbeat(make_config(es.url, LISTENER, metrics={"listen": f"127.0.0.1:{port}"}))
        with anyio.fail_after(10), pytest.raises(ConfigError) as caught:
            async with hb:
                pytest.fail("the Heartbeat started without its listener")
    assert str(caught.value).startswith(f"metrics.listen: cannot listen on 127.0.0.1:{port}: ")
    assert hb.listener is None
