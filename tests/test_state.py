"""The watch list on disk ([state] dir): the file format, a corrupt or unusable state,
the one-process lock, restoring at start, and the guarantee that an id acknowledged by
the control API survives ``kill -9`` at any moment (real daemon subprocesses, their
real control socket, the emulator over loopback)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.daemon import Heartbeat
from heartbeat.errors import ConfigError
from heartbeat.state import FILENAME, StateStore
from heartbeat.statefile import decode, encode
from tests.conftest import ES
from tests.helpers_control import QUIET, QUIET_DAEMON, api_client, short_dir
from tests.helpers_daemon import run_daemon
from tests.support import make_config, running, toml, write_config


def contents(path: Path) -> bytes:
    return path.read_bytes()


def is_dir(path: Path) -> bool:
    return path.is_dir()


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == name]


# --- the file format ------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    jobs = {"a/b": ("file", "control"), "é 💥": ("config",), "..": ("control",)}
    assert decode(encode(jobs)) == jobs
    assert json.loads(encode(jobs))["version"] == 1


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "Expecting value"),
        (b'{"version": 2, "jobs": {}}', "version 1"),
        (b'{"version": 1, "jobs": []}', "'jobs' is not an object"),
        (b'{"version": 1, "jobs": {"a": "file"}}', "sources of 'a'"),
        (b"\xff\xfe", "codec"),
    ],
)
def test_decode_refuses_what_is_not_a_watch_list(raw: bytes, problem: str) -> None:
    with pytest.raises((ValueError, UnicodeDecodeError), match=problem):
        decode(raw)


async def test_persisted_returns_once_the_change_is_on_disk(tmp_path: Path) -> None:
    watched: dict[str, tuple[str, ...]] = {}
    store = StateStore(tmp_path / "state", lambda: dict(watched))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run)
            for n in range(200):  # a burst: coalesced, and all of it saved
                watched[f"job-{n}"] = ("control",)
                store.changed()
            await store.persisted()
            saved = decode((tmp_path / "state" / FILENAME).read_bytes())
            assert len(saved) == 200
            await store.persisted()  # nothing new: returns at once
            tg.cancel_scope.cancel()
    assert oct((tmp_path / "state" / FILENAME).stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"


# --- corrupt and unusable state -------------------------------------------------------


async def test_a_corrupt_state_file_is_kept_aside_and_the_daemon_starts(
    es: ES, tmp_path: Path
) -> None:
    es.emu.create_job(job_id="cfg")
    state = tmp_path / "state"
    state.mkdir()
    (state / FILENAME).write_bytes(b'{"version": 1, "jobs": {"trunc')
    with capture_logs() as logs, anyio.fail_after(10):
        config = make_config(es.url, QUIET, jobs={"ids": ["cfg"]}, state={"dir": state})
        async with running(config, "file", "control") as (hb, _):
            assert hb.scheduler.watchlist.job_ids() == ["cfg"]
            await hb.persisted()
    [corrupt] = events(logs, "state_corrupt")
    aside = Path(str(corrupt["kept_as"]))
    assert aside.parent == state
    assert aside.name.startswith(f"{FILENAME}.corrupt-")
    assert contents(aside) == b'{"version": 1, "jobs": {"trunc'  # kept for a human
    assert decode((state / FILENAME).read_bytes()) == {"cfg": ("config",)}


async def test_a_corrupt_state_file_does_not_stop_heartbeat_run(es: ES, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILENAME).write_bytes(b"\x00garbage")
    config = write_config(tmp_path / "hb.toml", toml(es.url, QUIET_DAEMON, state={"dir": state}))
    async with run_daemon(config) as daemon:
        corrupt = await daemon.wait_for("state_corrupt")
        await daemon.wait_for("daemon_started")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert corrupt["level"] == "error"
    assert contents(Path(corrupt["kept_as"])) == b"\x00garbage"


async def test_an_unusable_state_dir_is_logged_and_heartbeat_runs_in_memory(
    es: ES, tmp_path: Path
) -> None:
    es.emu.create_job(job_id="mem-1")
    state = tmp_path / "state"
    state.write_text("a file where the directory should be")
    with capture_logs() as logs, anyio.fail_after(10):
        config = make_config(es.url, QUIET, jobs={"ids": ["mem-1"]}, state={"dir": state})
        async with running(config, "file", "control") as (hb, _):
            for n in range(3):
                hb.watch(f"more-{n}")
                await anyio.sleep(0.1)
            assert "mem-1" in hb.scheduler
    assert events(logs, "state_unreadable")
    # Logged when saving first fails, not on every retry or change; and at exit.
    assert 1 <= len(events(logs, "state_save_failed")) <= 2
    assert state.read_text() == "a file where the directory should be"


async def test_an_unreadable_state_file_is_set_aside_not_overwritten(
    es: ES, tmp_path: Path
) -> None:
    es.emu.create_job(job_id="after")
    state = tmp_path / "state"
    (state / FILENAME).mkdir(parents=True)  # EISDIR: unreadable (root reads any file)
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, state={"dir": state}), "file", "control") as (
            hb,
            _,
        ):
            hb.watch("after", "control")
            await hb.persisted()
    [unreadable] = events(logs, "state_unreadable")
    assert is_dir(Path(str(unreadable["kept_as"])))
    assert decode((state / FILENAME).read_bytes()) == {"after": ("control",)}


async def test_one_heartbeat_per_state_dir(es: ES, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with capture_logs(), anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, state={"dir": state}), "file", "control"):
            second = Heartbeat(make_config(es.url, QUIET, state={"dir": state}))
            with pytest.raises(ConfigError) as caught:
                await second.__aenter__()
            assert caught.value.key == "state.dir"
            assert f"{state} is in use by another heartbeat (pid {os.getpid()})" in str(
                caught.value
            )
        async with running(
            make_config(es.url, QUIET, state={"dir": state}), "file", "control"
        ):  # released at exit
            pass


# --- restoring ----------------------------------------------------------------------


async def test_restore_keeps_each_sources_claims(es: ES, tmp_path: Path) -> None:
    for job_id in ("cfg-old", "cfg-kept", "ctl"):
        es.emu.create_job(job_id=job_id)
    state = tmp_path / "state"
    with capture_logs(), anyio.fail_after(10):
        config = make_config(
            es.url, QUIET, jobs={"ids": ["cfg-old", "cfg-kept"]}, state={"dir": state}
        )
        async with running(config, "file", "control") as (hb, _):
            hb.watch("ctl", "control")
            hb.watch("cfg-kept", "control")
    with capture_logs() as logs, anyio.fail_after(10):
        config = make_config(es.url, QUIET, jobs={"ids": ["cfg-kept"]}, state={"dir": state})
        async with running(config, "file", "control") as (hb, _):
            # The config is the truth for its own ids; control's claims are kept.
            assert hb.scheduler.watchlist.claims() == {
                "cfg-kept": ("config", "control"),
                "ctl": ("control",),
            }
    assert events(logs, "state_loaded")[0]["jobs"] == 2


async def test_job_ids_are_released_when_no_longer_given(es: ES, tmp_path: Path) -> None:
    for job_id in ("from-cli", "other"):
        es.emu.create_job(job_id=job_id)
    state = tmp_path / "state"
    config = write_config(tmp_path / "hb.toml", toml(es.url, QUIET_DAEMON, state={"dir": state}))
    async with run_daemon(config, "--job", "from-cli", "--job", "other") as daemon:
        await daemon.wait_for("daemon_started")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert decode((state / FILENAME).read_bytes()) == {"from-cli": ("cli",), "other": ("cli",)}
    async with run_daemon(config, "--job", "other") as daemon:
        started = await daemon.wait_for("daemon_started")
        removed = daemon.named("job_removed")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert started["jobs"] == 1
    assert [(e["job_id"], e["reason"]) for e in removed] == [("from-cli", "source")]


# --- the guarantee ------------------------------------------------------------------


async def put_until_acknowledged(call: Any, ids: list[str], spacing: float) -> set[str]:
    """PUT ``ids`` concurrently; return as soon as one is acknowledged (the others
    still in flight), with every id acknowledged by then."""
    acknowledged: set[str] = set()
    first = anyio.Event()

    async def put(job_id: str) -> None:
        try:
            answer = await call("PUT", f"/jobs/{job_id}")
        except (aiohttp.ClientError, OSError):
            return  # the daemon died before answering: no promise was made
        if answer.status in (200, 201):
            acknowledged.add(job_id)
            first.set()

    async with anyio.create_task_group() as tg:
        for job_id in ids:
            tg.start_soon(put, job_id)
            await anyio.sleep(spacing)
        await first.wait()
        tg.cancel_scope.cancel()
    return acknowledged


async def test_an_acknowledged_change_survives_kill_9_at_any_moment(es: ES) -> None:
    """Each round starts ``heartbeat run``, sends PUTs (or a DELETE) through its control
    socket and SIGKILLs it the moment a 2xx arrives, other requests still in flight.
    Every acknowledged PUT is watched after the restarts; the acknowledged DELETE stays
    deleted."""
    acknowledged: set[str] = set()
    deleted = ""
    with short_dir() as tmp:
        sock, state = tmp / "c.sock", tmp / "state"
        config = write_config(
            tmp / "hb.toml",
            toml(es.url, QUIET_DAEMON, state={"dir": state}, control={"socket": sock}),
        )
        for round_ in range(3):
            ids = [f"r{round_}-{n}" for n in range(1 + round_ * 4)]
            for job_id in ids:
                es.emu.create_job(job_id=job_id)
            async with run_daemon(config) as daemon:
                await daemon.wait_for("daemon_started")
                async with api_client(sock) as call:
                    if round_ < 2:
                        acknowledged |= await put_until_acknowledged(call, ids, 0.02 * round_)
                    else:
                        deleted = sorted(acknowledged)[0]
                        assert (await call("DELETE", f"/jobs/{deleted}")).status == 200
                        acknowledged |= await put_until_acknowledged(call, ids, 0.01)
                    daemon.process.kill()  # SIGKILL: no shutdown, no final save
                assert await daemon.wait() == -signal.SIGKILL
        async with run_daemon(config) as daemon:
            await daemon.wait_for("daemon_started")
            async with api_client(sock) as call:
                listing = await call("GET", "/jobs")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    watched = {job["id"] for job in listing.json["jobs"]}
    assert acknowledged - {deleted} <= watched
    assert deleted not in watched
    assert not daemon.named("state_corrupt")


async def test_a_second_daemon_on_the_same_state_or_socket_exits_78(es: ES) -> None:
    with short_dir() as tmp:
        sock = tmp / "c.sock"
        first = write_config(
            tmp / "one.toml",
            toml(es.url, QUIET_DAEMON, state={"dir": tmp / "state"}, control={"socket": sock}),
        )
        same_state = write_config(
            tmp / "two.toml", toml(es.url, QUIET_DAEMON, state={"dir": tmp / "state"})
        )
        same_socket = write_config(
            tmp / "three.toml",
            toml(es.url, QUIET_DAEMON, state={"dir": tmp / "s3"}, control={"socket": sock}),
        )
        async with run_daemon(first) as daemon:
            await daemon.wait_for("daemon_started")
            results = []
            for config in (same_state, same_socket):
                command = [sys.executable, "-m", "heartbeat", "run", "--config", str(config)]
                results.append(await anyio.run_process(command, check=False))
            assert sock.exists()  # the first daemon's socket is untouched
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert [result.returncode for result in results] == [78, 78]
    assert results[0].stderr.decode() == (
        f"heartbeat: configuration error: state.dir: {tmp}/state is in use by another "
        f"heartbeat (pid {daemon.process.pid})\n"
    )
    assert (
        results[1]
        .stderr.decode()
        .endswith(
            f"control.socket: {sock}: another process is serving on it "
            "(is heartbeat already running?)\n"
        )
    )
