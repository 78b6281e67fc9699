"""`heartbeat run` under a stand-in for systemd: a real subprocess talking to a real
datagram socket (tests/helpers_systemd.py), checking jobs in on the emulator.

What systemd relies on (systemd/heartbeat.service: Type=notify, WatchdogSec=,
ExecReload=kill -HUP, RestartPreventExitStatus=78): READY=1 once the config is loaded
and the listener is up, WATCHDOG=1 every WatchdogSec/2 from the scheduler loop (and
none while that loop is stuck), RELOADING=1 with MONOTONIC_USEC then READY=1 around
SIGHUP, STOPPING=1 then exit 0 on SIGTERM, and exit 78 without READY=1 on a bad config.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import aiohttp
import anyio
import pytest

from heartbeat import Config
from heartbeat.cli.exits import ExitCode
from heartbeat.runtime import serve
from tests.conftest import ES
from tests.helpers_http import Samples, parse
from tests.helpers_systemd import NotifyMessage, NotifySocket, notify_socket
from tests.support import Sections, toml, write_config

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
#: Variables of the test's own environment that would change what the child does.
ISOLATED = ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_PID")


def child_env(sd: NotifySocket, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ISOLATED and not name.startswith(("HEARTBEAT_", "WATCHDOG_"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **sd.env(**extra)}


#: The daemon under the stand-in systemd: JSON logs, the metrics listener on port 0.
NOTIFIED: Sections = {
    "elasticsearch": {"request_timeout": 2},
    "metrics": {"listen": "127.0.0.1:0"},
    "logging": {"format": "json"},
}


async def next_message(
    sd: NotifySocket, name: str, value: str | None = None, *, after: int = 0
) -> tuple[int, NotifyMessage]:
    """The first message at index ``after`` or later that assigns ``name`` (``=value``)."""
    while True:
        messages = sd.messages
        for index in range(after, len(messages)):
            fields = messages[index].fields
            if name in fields and (value is None or fields[name] == value):
                return index, messages[index]
        await anyio.sleep(0.01)


def logged(path: Path, event: str) -> dict[str, object]:
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["event"] == event:
            return dict(entry)
    raise AssertionError(f"no {event} in {path.read_text()!r}")


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return parse(await response.text())


async def test_run_speaks_sd_notify(tmp_path: Path, es: ES) -> None:
    for job_id in ("job-a", "job-b", "job-c"):
        es.emu.create_job(job_id=job_id)
    config = write_config(
        tmp_path / "heartbeat.toml", toml(es.url, NOTIFIED, jobs={"ids": ["job-a", "job-b"]})
    )
    out = tmp_path / "stdout.jsonl"
    with notify_socket(tmp_path) as sd, out.open("wb") as stdout, anyio.fail_after(45):
        process = await anyio.open_process(
            [sys.executable, "-m", "heartbeat", "run", "--config", str(config)],
            env=child_env(sd, WATCHDOG_USEC="1000000"),
            cwd=REPO,
            stdin=None,
            stdout=stdout,
            stderr=None,
        )
        async with process:
            try:
                # READY=1 from the main process, once the configuration is in force.
                _, ready = await next_message(sd, "READY", "1")
                assert ready.pid == process.pid
                assert ready.fields["STATUS"].startswith("watching 2 jobs")
                # The listener was up before READY=1.
                listening = logged(out, "metrics_listening")
                samples = await scrape(str(listening["url"]))
                assert samples[("heartbeat_watched_jobs", frozenset())] == 2

                # WATCHDOG=1 about every WATCHDOG_USEC / 2 = 0.5 s.
                await anyio.sleep(2.3)
                pings = [
                    m.received_at
                    for m in sd.messages
                    if m.fields.get("WATCHDOG") == "1" and m.received_at > ready.received_at
                ]
                gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
                assert len(pings) >= 3, pings
                assert 0.3 <= statistics.median(gaps) <= 0.8, gaps
                assert max(gaps) < 1.0, gaps  # systemd would have killed it
                assert all(m.pid == process.pid for m in sd.messages)
                assert es.emu.checkins("job-a")

                # SIGHUP: RELOADING=1 (with the time), then READY=1 with the new config.
                write_config(
                    config, toml(es.url, NOTIFIED, jobs={"ids": ["job-a", "job-b", "job-c"]})
                )
                mark = len(sd.messages)
                process.send_signal(signal.SIGHUP)
                index, reloading = await next_message(sd, "RELOADING", "1", after=mark)
                usec = int(reloading.fields["MONOTONIC_USEC"])
                now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                assert 0 <= now_usec - usec < 10_000_000
                _, reloaded = await next_message(sd, "READY", "1", after=index + 1)
                assert reloaded.fields["STATUS"].startswith("watching 3 jobs")

                # SIGTERM: STOPPING=1, then a clean exit.
                mark = len(sd.messages)
                process.send_signal(signal.SIGTERM)
                await next_message(sd, "STOPPING", "1", after=mark)
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
    assert logged(out, "daemon_stopped")["reason"] == "SIGTERM"


async def test_a_config_error_exits_78_without_ready(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "heartbeat.toml",
        toml("http://127.0.0.1:9", NOTIFIED, jobs={"ids": []}, metrics={"listen": "0.0.0.0:9310"}),
    )
    with notify_socket(tmp_path) as sd, anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "heartbeat", "run", "--config", str(config)],
            env=child_env(sd, WATCHDOG_USEC="1000000"),
            cwd=REPO,
            check=False,
        )
        await anyio.sleep(0.2)  # anything sent before the exit has arrived by now
        assert result.returncode == ExitCode.CONFIG
        assert result.stderr.decode().strip() == (
            f"heartbeat: configuration error: {config}: metrics.listen: '0.0.0.0:9310' is not "
            "a loopback address, and /metrics, /livez and /readyz have no authentication; "
            "set metrics.allow_remote = true to listen on it"
        )
        assert sd.messages == []


async def test_a_blocked_loop_stops_the_watchdog(
    tmp_path: Path, es: ES, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real serve() in this process, so the test can block its event loop. The
    # watchdog is fed from the scheduler's loop: a blocking call anywhere in the loop
    # starves it, and systemd kills the process, which is the point of WatchdogSec=.
    es.emu.create_job(job_id="job-a")
    config = Config(elasticsearch={"hosts": [es.url]}, jobs={"ids": ["job-a"]})
    watchdog_usec = 400_000  # a ping every 0.2 s
    with notify_socket(tmp_path) as sd:
        monkeypatch.setenv("NOTIFY_SOCKET", sd.address)
        monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(serve, config, path=None))
                await next_message(sd, "READY", "1")
                index, _ = await next_message(sd, "WATCHDOG", "1")
                await next_message(sd, "WATCHDOG", "1", after=index + 1)
                blocked_from = time.monotonic()
                time.sleep(1.0)  # noqa: ASYNC251 -- a stuck loop is what is tested
                blocked_until = time.monotonic()
                await anyio.sleep(0.6)
                tg.cancel_scope.cancel()
    pings = [m.received_at for m in sd.messages if m.fields.get("WATCHDOG") == "1"]
    before = [t for t in pings if t < blocked_from]
    during = [t for t in pings if blocked_from + 0.05 < t < blocked_until]
    after = [t for t in pings if t >= blocked_until]
    assert len(before) >= 2
    assert during == []
    assert after, "the pings did not resume"
    assert after[0] - before[-1] > watchdog_usec / 1_000_000  # systemd's deadline passed
