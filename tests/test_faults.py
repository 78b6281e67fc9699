"""Faults between heartbeat and Elasticsearch: nothing lost, bounded pressure, clean
recovery, one log line per outage, and the daemon never gives up.

Each scenario runs a real Heartbeat against the emulator over loopback, through a
fault-injecting TCP proxy (tests/faultproxy.py) or with the emulator's own scripted
faults: steady state, then the fault for FAULT_S seconds, then recovery.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import trustme
from pydantic import SecretStr
from structlog.testing import capture_logs

from heartbeat import Heartbeat
from heartbeat.config import BackoffSettings, Config
from heartbeat.emulator import Emulator, Fault, serve
from heartbeat.outcomes import Outcome, Success
from tests.conftest import ES
from tests.faultproxy import FaultProxy, fault_proxy
from tests.support import Sections, make_config

JOBS = 40
INTERVAL = 1.0
JITTER = 0.1
MAX_IN_FLIGHT = 8
BACKOFF = BackoffSettings(initial=0.2, multiplier=2.0, max=1.0)
STEADY_S = 1.2
FAULT_S = 2.5
#: The README's promise: every job checked in within one interval of the fault's end
#: (the next probe comes within 0.4 x interval, then the 0.6 x interval spread), plus
#: what a request takes on a loaded machine.
RECOVERY_S = INTERVAL + 0.5
#: The pressure bound the README states: while Elasticsearch fails, at most
#: 2 x max_in_flight + fault duration / backoff.initial requests (here 16 + 12.5),
#: against JOBS x FAULT_S / INTERVAL = 100 in steady state.
PRESSURE_BOUND = 2 * MAX_IN_FLIGHT + FAULT_S / BACKOFF.initial


#: The layer for these tests: the schedule and backoff above, short request timeouts.
FAULTS: Sections = {
    "elasticsearch": {"request_timeout": 0.5},
    "schedule": {
        "interval": INTERVAL,
        "jitter": JITTER,
        "max_in_flight": MAX_IN_FLIGHT,
        "ramp_rate": 200.0,
        "drop_confirm_after": 0.3,
    },
    "backoff": BACKOFF.model_dump(),
}


@dataclass
class Run:
    ids: list[str]
    attempts: list[tuple[float, str, Outcome]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    watched: set[str] = field(default_factory=set)
    fault_at: float = 0.0
    #: When the test starts ending the fault, and when it has ended (for a restarted
    #: emulator, once the new process listens: its start-up is part of the fault).
    clearing_at: float = 0.0
    clear_at: float = 0.0
    running_at_end: bool = False

    def between(self, start: float, end: float) -> list[tuple[float, str, Outcome]]:
        return [a for a in self.attempts if start <= a[0] < end]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e["event"] == name]

    def assert_nothing_lost(self) -> None:
        assert self.watched == set(self.ids)

    def assert_bounded_pressure(self) -> None:
        # Requests started after the first second of the fault (what was in flight
        # or already failing then is part of the 2 x max_in_flight allowance).
        during = self.between(self.fault_at, self.clearing_at)
        assert len(during) <= PRESSURE_BOUND, len(during)

    def assert_clean_recovery(self) -> None:
        for job_id in self.ids:
            ok = [
                t
                for t, j, o in self.attempts
                if j == job_id and isinstance(o, Success) and t >= self.clear_at
            ]
            assert ok, f"{job_id} was not checked in after the fault"
            assert ok[0] - self.clear_at <= RECOVERY_S, (job_id, ok[0] - self.clear_at)
        # Peak rate after recovery: at most twice the steady rate over any 1 s window.
        times = [t for t, _, _ in self.attempts if t >= self.clear_at]
        steady = JOBS / INTERVAL
        peak = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
        assert peak <= 2 * steady, peak

    def assert_one_outage(self) -> None:
        assert len(self.events("elasticsearch_unreachable")) == 1
        assert len(self.events("elasticsearch_recovered")) == 1
        assert len(self.events("checkin_failed")) <= 3


async def scenario(
    ids: list[str],
    config: Config,
    fault_on: Callable[[], Awaitable[None]],
    fault_off: Callable[[], Awaitable[None]],
    *,
    fault_s: float = FAULT_S,
    on_clear: Callable[[Heartbeat], Awaitable[None]] | None = None,
) -> Run:
    run = Run(ids=ids)
    with capture_logs() as logs, anyio.fail_after(60):
        async with Heartbeat(config) as hb:
            hb.scheduler.outcome_observers.append(
                lambda job_id, outcome, _s: run.attempts.append((time.monotonic(), job_id, outcome))
            )
            hb.watch_many(ids, "test")
            await anyio.sleep(STEADY_S)
            run.fault_at = time.monotonic()
            await fault_on()
            await anyio.sleep(fault_s)
            run.clearing_at = time.monotonic()
            await fault_off()
            run.clear_at = time.monotonic()
            if on_clear is not None:
                await on_clear(hb)
            await anyio.sleep(RECOVERY_S + 0.3)
            run.watched = {job.id for job in hb.jobs()}
            run.running_at_end = hb.scheduler.next_wakeup() is not None
    run.logs = logs
    return run


def make_jobs(emulator: Emulator) -> list[str]:
    return [emulator.create_job(job_id=f"job-{n:03}") for n in range(JOBS)]


@pytest.fixture
async def proxied(es: ES) -> AsyncIterator[tuple[ES, FaultProxy]]:
    async with fault_proxy(es.url) as proxy:
        yield es, proxy


PROXY_FAULTS = ["refuse", "reset", "blackhole", "drip", "garbage"]


@pytest.mark.parametrize("mode", PROXY_FAULTS)
async def test_transport_faults(proxied: tuple[ES, FaultProxy], mode: str) -> None:
    es, proxy = proxied
    proxy.drip_interval = 0.3

    async def on() -> None:
        await proxy.set_mode(mode)

    async def off() -> None:
        await proxy.set_mode("pass")

    run = await scenario(make_jobs(es.emu), make_config(proxy.url, FAULTS), on, off)
    run.assert_nothing_lost()
    run.assert_bounded_pressure()
    run.assert_clean_recovery()
    run.assert_one_outage()
    assert run.running_at_end


EMULATOR_FAULTS: dict[str, Fault] = {
    "5xx storm": Fault(status=503),
    "429 with Retry-After": Fault(status=429, retry_after="1"),
    "404 from a proxy": Fault(
        status=404,
        product_header=False,
        body=b"<html><body>404 Not Found</body></html>",
        content_type="text/html",
    ),
}


@pytest.mark.parametrize("name", list(EMULATOR_FAULTS))
async def test_server_faults(es: ES, name: str) -> None:
    async def on() -> None:
        es.emu.always(EMULATOR_FAULTS[name])

    async def off() -> None:
        es.emu.always(None)

    run = await scenario(make_jobs(es.emu), make_config(es.url, FAULTS), on, off)
    run.assert_nothing_lost()
    run.assert_bounded_pressure()
    run.assert_clean_recovery()
    run.assert_one_outage()
    if name == "429 with Retry-After":
        unreachable = run.events("elasticsearch_unreachable")[0]
        assert unreachable["reason"] == "http_429"
        # Once in outage mode, probes honour Retry-After: 1 s apart at least. (The
        # outage starts within the first few hundred ms of the fault, so the last two
        # attempts before it ends are probes.)
        probes = [t for t, _, _ in run.between(run.fault_at, run.clearing_at)][-2:]
        assert len(probes) == 2
        assert probes[1] - probes[0] >= 0.95


async def test_credentials_that_fail_then_work_again(es: ES) -> None:
    es.emu.api_key = "good-key-1"
    ids = make_jobs(es.emu)

    async def on() -> None:
        es.emu.api_key = "rotated-key-2"  # our key is no longer accepted: 401

    async def off() -> None:
        es.emu.api_key = "good-key-1"

    run = await scenario(
        ids,
        make_config(es.url, FAULTS, elasticsearch={"api_key": SecretStr("good-key-1")}),
        on,
        off,
    )
    run.assert_nothing_lost()
    run.assert_bounded_pressure()
    run.assert_clean_recovery()
    run.assert_one_outage()
    [unauthorized] = run.events("elasticsearch_unauthorized")
    assert unauthorized["status"] == 401
    assert "manage_connector" in unauthorized["needed"]


async def test_genuine_not_found_is_the_only_thing_that_drops(es: ES) -> None:
    ids = make_jobs(es.emu)
    doomed = ids[:3]

    async def on() -> None:
        es.emu.always(Fault(status=503))
        for job_id in doomed:
            es.emu.delete_job(job_id)

    async def off() -> None:
        es.emu.always(None)

    run = await scenario(ids, make_config(es.url, FAULTS), on, off)
    assert run.watched == set(ids) - set(doomed)
    dropped = run.events("job_dropped")
    assert sorted(e["job_id"] for e in dropped) == doomed
    assert {e["reason"] for e in dropped} == {"not_found"}


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_scenario(ca: trustme.CA, tmp_path: Path, **issue: Any) -> tuple[Run, list[str]]:
    import ssl

    cert = ca.issue_cert("127.0.0.1", **issue)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    emulator = Emulator()
    ids = make_jobs(emulator)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve(emulator, ssl_context=context) as url:

        async def nothing() -> None:
            return None

        async def trust_our_ca(hb: Heartbeat) -> None:
            await hb.apply(make_config(url, FAULTS, elasticsearch={"ca_certs": ca_file}))

        run = await scenario(
            ids, make_config(url, FAULTS), nothing, nothing, fault_s=0.5, on_clear=trust_our_ca
        )
    return run, ids


async def test_unknown_ca_is_refused_until_ca_certs_is_configured(
    ca: trustme.CA, tmp_path: Path
) -> None:
    run, _ = await tls_scenario(ca, tmp_path)
    before = [o for t, _, o in run.attempts if t < run.clear_at]
    assert before
    assert not any(isinstance(o, Success) for o in before)
    assert {getattr(o, "error", None) for o in before} == {"tls"}
    run.assert_nothing_lost()
    run.assert_clean_recovery()
    assert len(run.events("elasticsearch_unreachable")) == 1


async def test_expired_certificate_is_refused_even_with_the_right_ca(
    ca: trustme.CA, tmp_path: Path
) -> None:
    expired = datetime.now(UTC) - timedelta(days=1)
    run, _ = await tls_scenario(
        ca, tmp_path, not_before=expired - timedelta(days=30), not_after=expired
    )
    assert run.attempts
    assert not any(isinstance(o, Success) for _, _, o in run.attempts)
    last = run.attempts[-1][2]
    assert "expired" in getattr(last, "reason", "")
    assert run.events("elasticsearch_recovered") == []
    run.assert_nothing_lost()


# -- the emulator process restarted mid-run -------------------------------------------------


async def test_emulator_process_restarted_mid_run(tmp_path: Path) -> None:
    proxy_port = FaultProxy("127.0.0.1", 1).port  # just a free port
    data = tmp_path / "emulator.json"
    url = f"http://127.0.0.1:{proxy_port}"

    async def start() -> anyio.abc.Process:
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "heartbeat",
                "emulator",
                "--port",
                str(proxy_port),
                "--data",
                str(data),
            ],
        )
        assert process.stdout is not None
        with anyio.fail_after(15):
            line = await process.stdout.receive()
        assert b"emulator_listening" in line
        return process

    process = await start()
    ids = [f"job-{n:03}" for n in range(JOBS)]
    async with aiohttp.ClientSession() as session:
        for job_id in ids:
            async with session.post(f"{url}/_emulator/jobs", json={"job_id": job_id}) as r:
                assert r.status in (200, 201)

    async def stop() -> None:
        process.terminate()
        with anyio.fail_after(10):
            await process.wait()

    async def restart() -> None:
        nonlocal process
        process = await start()

    try:
        run = await scenario(ids, make_config(url, FAULTS), stop, restart)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        await process.aclose()
    run.assert_nothing_lost()
    run.assert_bounded_pressure()
    run.assert_clean_recovery()
    run.assert_one_outage()
