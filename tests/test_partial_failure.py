"""Partial failures against real servers: one sick job, one dead host.

A Heartbeat runs against the emulator over loopback; "a host that accepts and never
answers" is tests/faultproxy.py in ``blackhole`` mode (a TCP listener that accepts,
reads and never writes). The assertions are the check-ins that reach each emulator,
with their times.
"""

from __future__ import annotations

import itertools
import time

import anyio
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from heartbeat import Heartbeat
from heartbeat.emulator import Emulator, Fault, serve
from tests.conftest import ES
from tests.faultproxy import fault_proxy
from tests.support import Sections, make_config

pytestmark = pytest.mark.timeout(60)

INTERVAL = 1.0
TIMEOUT = 0.5
SECRET = "partial-failure-api-key-8c1f"


#: The layer for these tests: a check-in every INTERVAL, requests time out after
#: TIMEOUT, eight in flight.
PARTIAL: Sections = {
    "elasticsearch": {"request_timeout": TIMEOUT},
    "schedule": {"interval": INTERVAL, "jitter": 0.0, "max_in_flight": 8},
    "backoff": {"initial": 0.2, "multiplier": 2.0, "max": 1.0},
}


def ok_times(emulator: Emulator, job_id: str, since: float) -> list[float]:
    """When ``job_id``'s successful check-ins reached ``emulator``, from ``since``."""
    return [r.at - since for r in emulator.checkins(job_id) if r.status == 200]


def largest_gap(times: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(times))


async def test_one_sick_job_backs_off_alone_and_never_declares_an_outage(es: ES) -> None:
    # Three jobs: the old rule (3 consecutive failures, from any job) made this an outage.
    healthy = [es.emu.create_job(job_id=f"job-{n}") for n in range(2)]
    sick = es.emu.create_job(job_id="sick")
    es.emu.always(Fault(status=503), job_id=sick)  # that id alone
    outage_seen = False
    with capture_logs() as logs, anyio.fail_after(30):
        async with Heartbeat(make_config(es.url, PARTIAL)) as hb:

            def watch_outage(*_: object) -> None:
                nonlocal outage_seen
                outage_seen = outage_seen or hb.scheduler.in_outage

            hb.scheduler.outcome_observers.append(watch_outage)
            start = time.monotonic()
            hb.watch_many([sick, *healthy], "test")
            await anyio.sleep(4.3)
            assert hb.health.readiness().reason is None
    assert not outage_seen
    assert not [e for e in logs if e["event"] == "elasticsearch_unreachable"]
    for job_id in healthy:
        times = ok_times(es.emu, job_id, start)
        # Checked in at once, then every interval: the sick job stopped nobody.
        assert times[0] < 0.3, times
        assert len(times) == 5, times
        assert largest_gap(times) < INTERVAL + 0.3, times
    attempts = [r.at - start for r in es.emu.checkins(sick)]
    assert all(r.status == 503 for r in es.emu.checkins(sick))
    # It backs off on its own (0.2 s doubling up to 1 s, full jitter): it is retried,
    # never more often than its backoff allows, and never faster than at first.
    assert 5 <= len(attempts) <= 4.3 / 0.02, attempts
    failed = [e for e in logs if e["event"] == "checkin_failed"]
    assert failed and {e.get("job_id") for e in failed if "job_id" in e} == {sick}


async def test_a_host_that_never_answers_costs_one_timeout_not_one_per_request() -> None:
    emu_a, emu_b = Emulator(api_key=SECRET), Emulator(api_key=SECRET)
    ids = [f"job-{n}" for n in range(5)]
    for emulator in (emu_a, emu_b):
        for job_id in ids:
            emulator.create_job(job_id=job_id)
    async with serve(emu_a) as url_a, serve(emu_b) as url_b, fault_proxy(url_a) as proxy:
        await proxy.set_mode("blackhole")  # A accepts and never answers
        config = make_config(
            [proxy.url, url_b], PARTIAL, elasticsearch={"api_key": SecretStr(SECRET)}
        )
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(config) as hb:
                start = time.monotonic()
                hb.watch_many(ids, "test")
                await anyio.sleep(4.2)
                blackholed = proxy.connections
                healed = time.monotonic() - start
                await proxy.set_mode("pass")  # A is back
                await anyio.sleep(2.3)
                watched = {job.id for job in hb.jobs()}
    assert watched == set(ids)
    for job_id in ids:
        times = ok_times(emu_b, job_id, start)
        # The first attempt timed out on A and went on to B at once...
        assert TIMEOUT <= times[0] < TIMEOUT + 0.3, times
        # ...and then B was used straight away: no timeout per request.
        b_before_heal = [t for t in times if t < healed]
        assert len(b_before_heal) >= 4, times
        every = sorted(times + ok_times(emu_a, job_id, start))
        assert largest_gap(every) < INTERVAL + TIMEOUT + 0.3, every
    # Requests that reached A while it was dead: the first batch (one per job, all
    # under way when A was found dead) and one trial per dead time (1 s, then 2 s).
    assert blackholed <= len(ids) + 2, blackholed
    # Once A answers again, its next trial finds it, and it gets check-ins again.
    assert [r for r in emu_a.checkins() if r.at - start > healed and r.status == 200]
    down = [e for e in logs if e["event"] == "elasticsearch_host_down"]
    up = [e for e in logs if e["event"] == "elasticsearch_host_up"]
    assert [(e["host"], e["error"]) for e in down] == [(proxy.url, "timeout")]
    assert [e["host"] for e in up] == [proxy.url]
    assert not [e for e in logs if e["event"] in ("elasticsearch_unreachable", "job_dropped")]
    assert SECRET not in repr(logs)


async def test_a_refusing_host_is_skipped_until_it_listens_again(es: ES) -> None:
    ids = [es.emu.create_job(job_id=f"job-{n}") for n in range(3)]
    async with fault_proxy(es.url) as proxy:
        await proxy.set_mode("refuse")
        with capture_logs() as logs, anyio.fail_after(30):
            async with Heartbeat(make_config([proxy.url, es.url], PARTIAL)) as hb:
                start = time.monotonic()
                hb.watch_many(ids, "test")
                await anyio.sleep(2.2)
                refused_until = time.monotonic() - start
                await proxy.set_mode("pass")
                await anyio.sleep(2.5)
    proxy_host = proxy.url.removeprefix("http://")
    via_a = [r.at - start for r in es.emu.checkins() if r.headers.get("Host") == proxy_host]
    for job_id in ids:
        times = ok_times(es.emu, job_id, start)
        assert times[0] < 0.3, times  # refused at once: straight on to the next host
        assert largest_gap(times) < INTERVAL + 0.3, times
    # Nothing went through A while it refused; its trial finds it once it listens.
    assert via_a and min(via_a) > refused_until, (via_a, refused_until)
    down = [e for e in logs if e["event"] == "elasticsearch_host_down"]
    up = [e for e in logs if e["event"] == "elasticsearch_host_up"]
    assert [(e["host"], e["error"]) for e in down] == [(proxy.url, "connection")]
    assert [e["host"] for e in up] == [proxy.url]
    assert refused_until > 2.0
