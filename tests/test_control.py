"""The control API over a real Unix socket and loopback TCP, its configuration, and
``heartbeat jobs`` (in this process and as a real subprocess)."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat import config as configuration
from heartbeat import control
from heartbeat.cli import main
from heartbeat.cli.control_api import Target
from heartbeat.cli.jobs import run
from heartbeat.config import Config, ControlSettings
from heartbeat.control import ControlSource
from heartbeat.errors import ConfigError
from tests.conftest import ES
from tests.helpers_control import QUIET, api_client, short_dir
from tests.support import heartbeat_cli, make_config, running

TOKEN = "control-token-0123456789abcdef"
JOB_FIELDS = {
    "id",
    "sources",
    "last_success",
    "next_due",
    "consecutive_failures",
    "last_error",
    "expires_at",
}


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


# --- the socket ---------------------------------------------------------------------


async def test_socket_is_0600_and_removed_at_exit(es: ES, sockdir: Path) -> None:
    path = sockdir / "control.sock"
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, control={"socket": path}), "file", "control"):
            st = os.lstat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert os.listdir(sockdir) == ["control.sock"]  # no temporary left behind
    assert not path.exists()
    [listening] = [e for e in logs if e["event"] == "control_listening"]
    assert listening["socket"] == str(path)
    # Without [state] dir, an acknowledgement cannot survive a restart: say so.
    assert [e for e in logs if e["event"] == "control_not_persisted"]


def connect_as(uid: int, path: Path) -> int:
    """Try to connect to ``path`` from a child process running as ``uid``: 0 when it
    connects, 13 on EACCES. Forked, not exec-ed: our interpreter lives under /root,
    which another user cannot reach."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            probe = socket.socket(socket.AF_UNIX)
            probe.connect(str(path))
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_user_cannot_connect(es: ES, sockdir: Path) -> None:
    path = sockdir / "control.sock"
    with capture_logs(), anyio.fail_after(20):
        async with running(make_config(es.url, QUIET, control={"socket": path}), "file", "control"):
            assert connect_as(65534, path) == 13  # nobody: the 0600 mode refuses it
            assert connect_as(0, path) == 0


async def test_a_stale_socket_is_replaced(es: ES, sockdir: Path) -> None:
    path = sockdir / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a daemon that died
    with capture_logs(), anyio.fail_after(10):
        async with (
            running(make_config(es.url, QUIET, control={"socket": path}), "file", "control"),
            api_client(path) as call,
        ):
            assert (await call("GET", "/status")).status == 200


async def start_error(config: Config) -> ConfigError:
    """The ConfigError that stops a Heartbeat with the control API from starting
    (raised as itself, or inside an ExceptionGroup from a task group)."""
    errors: list[BaseException] = []
    with capture_logs(), anyio.fail_after(10):
        try:
            async with running(config, "file", "control"):
                pass
        except* ConfigError as group:
            errors.extend(group.exceptions)
    while errors and isinstance(errors[0], BaseExceptionGroup):
        errors = list(errors[0].exceptions)
    assert errors, "it started"
    assert isinstance(errors[0], ConfigError)
    return errors[0]


async def test_refuses_a_socket_someone_serves_on(es: ES, sockdir: Path) -> None:
    path = sockdir / "control.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        error = await start_error(make_config(es.url, QUIET, control={"socket": path}))
    finally:
        live.close()
    assert error.key == "control.socket"
    assert str(error) == (
        f"control.socket: {path}: another process is serving on it (is heartbeat already running?)"
    )


async def test_refuses_a_path_that_is_not_a_socket(es: ES, sockdir: Path) -> None:
    path = sockdir / "control.sock"
    path.write_text("not a socket")
    error = await start_error(make_config(es.url, QUIET, control={"socket": path}))
    assert str(error) == f"control.socket: {path} exists and is not a socket"
    assert path.read_text() == "not a socket"


async def test_refuses_a_tcp_address_in_use(es: ES) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        error = await start_error(
            make_config(es.url, QUIET, control={"listen": listen, "token": TOKEN})
        )
    finally:
        taken.close()
    assert error.key == "control.listen"
    assert "cannot listen: " in str(error)


# --- the API --------------------------------------------------------------------------


async def test_watch_list_round_trip(es: ES, sockdir: Path) -> None:
    for job_id in ("job-1", "cfg"):
        es.emu.create_job(job_id=job_id)
    path = sockdir / "c.sock"
    with capture_logs() as logs, anyio.fail_after(10):
        config = make_config(es.url, QUIET, jobs={"ids": ["cfg"]}, control={"socket": path})
        async with running(config, "file", "control") as (hb, _):
            async with api_client(path) as call:
                created = await call("PUT", "/jobs/job-1")
                assert created.status == 201
                assert set(created.json) == JOB_FIELDS
                assert created.json["id"] == "job-1"
                assert created.json["sources"] == ["control"]
                assert created.headers["Content-Type"].startswith("application/json")
                again = await call("PUT", "/jobs/job-1")
                assert again.status == 200
                # A job another source watches: 200, and control's claim is added.
                claimed = await call("PUT", "/jobs/cfg")
                assert (claimed.status, claimed.json["sources"]) == (200, ["config", "control"])

                listing = await call("GET", "/jobs")
                assert listing.status == 200
                by_id = {job["id"]: job for job in listing.json["jobs"]}
                assert set(by_id) == {"cfg", "job-1"}
                assert all(set(job) == JOB_FIELDS for job in by_id.values())

                await anyio.sleep(0.3)  # the check-in of job-1 succeeds
                one = (await call("GET", "/jobs/job-1")).json
                assert one["last_success"].endswith("Z")
                assert one["next_due"] > one["last_success"]
                assert one["consecutive_failures"] == 0

                removed = await call("DELETE", "/jobs/job-1")
                assert removed.status == 200
                assert removed.json == {"id": "job-1", "removed": True, "sources": ["control"]}
                assert (await call("DELETE", "/jobs/job-1")).status == 404
                missing = await call("GET", "/jobs/job-1")
                assert missing.status == 404
                assert missing.json == {"error": "not watched: 'job-1'"}
            assert "job-1" not in hb.scheduler
    removed_events = [e for e in logs if e["event"] == "job_removed"]
    assert [(e["job_id"], e["reason"]) for e in removed_events] == [("job-1", "control")]


@pytest.mark.parametrize(
    ("raw", "job_id"),
    [
        ("a%2Fb", "a/b"),
        ("%2E%2E", ".."),
        ("%2e", "."),
        ("a%20b%3Fc%23d", "a b?c#d"),
        ("caf%C3%A9", "café"),
        ("100%25", "100%"),
        ("a+b", "a+b"),
        ("_check_in", "_check_in"),
    ],
)
async def test_ids_in_the_path_are_one_percent_encoded_segment(
    es: ES, sockdir: Path, raw: str, job_id: str
) -> None:
    es.emu.create_job(job_id=job_id)
    path = sockdir / "c.sock"
    with capture_logs(), anyio.fail_after(10):
        async with running(
            make_config(es.url, QUIET, control={"socket": path}), "file", "control"
        ) as (hb, _):
            async with api_client(path) as call:
                answer = await call("PUT", f"/jobs/{raw}")
                assert (answer.status, answer.json["id"]) == (201, job_id)
                assert (await call("GET", f"/jobs/{raw}?pretty")).json["id"] == job_id
            assert hb.scheduler.watchlist.job_ids() == [job_id]


@pytest.mark.parametrize(
    ("method", "raw_path", "status", "message"),
    [
        ("PUT", "/jobs/..", 400, "ambiguous"),
        ("PUT", "/jobs/.", 400, "ambiguous"),
        ("PUT", "/jobs/", 400, "job id is empty"),
        ("PUT", "/jobs/a%zzb", 400, "invalid percent-escape at position 1"),
        ("PUT", "/jobs/a%2", 400, "invalid percent-escape"),
        ("PUT", "/jobs/%FF", 400, "not UTF-8"),
        ("PUT", "/jobs/a%0Ab", 400, "control character"),
        ("PUT", "/jobs/" + "x" * 513, 400, "513 bytes"),
        ("PUT", "/jobs/a/b", 404, "a '/' inside an id is sent as %2F"),
        ("GET", "/nope", 404, "no such endpoint: /nope"),
        ("GET", "/", 404, "no such endpoint"),
        ("GET", "/jobs/x/_check_in", 404, "no such endpoint"),
        ("POST", "/jobs/x", 405, "allowed: DELETE, GET, PUT"),
        ("DELETE", "/jobs", 405, "allowed: GET, POST"),
        ("PUT", "/status", 405, "allowed: GET"),
    ],
)
async def test_bad_requests_get_json_errors(
    es: ES, sockdir: Path, method: str, raw_path: str, status: int, message: str
) -> None:
    path = sockdir / "c.sock"
    with capture_logs(), anyio.fail_after(10):
        async with running(
            make_config(es.url, QUIET, control={"socket": path}), "file", "control"
        ) as (hb, _):
            async with api_client(path) as call:
                answer = await call(method, raw_path)
            assert len(hb.scheduler) == 0
    assert answer.status == status
    assert message in answer.json["error"], answer
    if status == 405:
        assert answer.headers["Allow"]


async def test_bodies_over_64_kib_are_refused(es: ES, sockdir: Path) -> None:
    path = sockdir / "c.sock"

    async def chunked() -> object:
        for _ in range(70):
            yield b"x" * 1024

    with capture_logs(), anyio.fail_after(10):
        async with (
            running(make_config(es.url, QUIET, control={"socket": path}), "file", "control"),
            api_client(path) as call,
        ):
            big = json.dumps({"ids": ["a" * 500] * 140}).encode()
            assert len(big) > 64 * 1024
            assert (await call("POST", "/jobs", big)).status == 413
            assert (await call("PUT", "/jobs/x", b"x" * (64 * 1024 + 1))).status == 413
            streamed = await call("POST", "/jobs", chunked())
            assert (streamed.status, streamed.json["error"]) == (
                413,
                "the body is over 65536 bytes",
            )
            # The connection was closed after the 413; the next request works.
            assert (await call("GET", "/jobs")).status == 200


async def test_bulk_watch_is_all_or_nothing(es: ES, sockdir: Path) -> None:
    for job_id in ("b-1", "b-2", "b-3"):
        es.emu.create_job(job_id=job_id)
    path = sockdir / "c.sock"
    with capture_logs(), anyio.fail_after(10):
        config = make_config(es.url, QUIET, jobs={"ids": ["b-1"]}, control={"socket": path})
        async with running(config, "file", "control") as (hb, _):
            async with api_client(path) as call:
                bad = await call("POST", "/jobs", {"ids": ["b-2", "", "b-3"]})
                assert bad.status == 400
                assert bad.json["error"] == "ids[1]: job id is empty; nothing was changed"
                assert hb.scheduler.watchlist.job_ids() == ["b-1"]
                for body, message in [
                    (b"not json", "not JSON"),
                    ({"ids": "b-2"}, "expected a JSON object"),
                    ({"ids": [], "extra": 1}, "unknown fields ['extra']"),
                    ({"ids": [1]}, "job id must be a string"),
                ]:
                    answer = await call("POST", "/jobs", body)
                    assert (answer.status, message in answer.json["error"]) == (400, True)
                good = await call("POST", "/jobs", {"ids": ["b-1", "b-2", "b-3", "b-2"]})
                assert good.status == 200
                assert good.json == {"added": ["b-2", "b-3"], "already_watched": ["b-1"]}
            assert hb.scheduler.watchlist.claims() == {
                "b-1": ("config", "control"),
                "b-2": ("control",),
                "b-3": ("control",),
            }


async def test_status(es: ES, sockdir: Path) -> None:
    es.emu.create_job(job_id="s-1")
    path, state = sockdir / "c.sock", sockdir / "state"
    with capture_logs(), anyio.fail_after(10):
        config = make_config(
            es.url, QUIET, jobs={"ids": ["s-1"]}, state={"dir": state}, control={"socket": path}
        )
        async with running(config, "file", "control"), api_client(path) as call:
            await anyio.sleep(0.3)
            status = (await call("GET", "/status")).json
    assert status["jobs"] == 1
    assert status["sources"] == {"config": 1}
    assert status["elasticsearch"] == "ok"
    assert status["outage"] is None
    assert status["in_flight"] == 0
    assert status["last_success"].endswith("Z")
    assert status["state"] == {"path": str(state / "watchlist.json"), "error": None}
    assert status["version"]
    assert status["summary"].startswith("watching 1 jobs")


async def test_status_reports_an_outage(sockdir: Path) -> None:
    path = sockdir / "c.sock"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
    with capture_logs(), anyio.fail_after(10):
        config = make_config(
            url, QUIET, jobs={"ids": ["o-1", "o-2", "o-3"]}, control={"socket": path}
        )
        async with running(config, "file", "control") as (hb, _), api_client(path) as call:
            while hb.scheduler.outage_since is None:
                await anyio.sleep(0.05)
            status = (await call("GET", "/status")).json
    closed.close()
    assert status["elasticsearch"] == "unreachable"
    assert status["outage"]["since"].endswith("Z")
    assert status["outage"]["duration_s"] >= 0


# --- TCP and tokens -------------------------------------------------------------------


async def test_tcp_needs_the_token_and_the_socket_does_not(es: ES, sockdir: Path) -> None:
    path = sockdir / "c.sock"
    config = make_config(
        es.url, QUIET, control={"socket": path, "listen": "127.0.0.1:0", "token": TOKEN}
    )
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(config, "file", "control") as (_, sources):
            source = sources["control"]
            assert isinstance(source, ControlSource) and source.url is not None
            async with api_client(url=source.url) as anonymous:
                refused = await anonymous("GET", "/jobs")
                assert refused.status == 401
                assert refused.json == {"error": "missing or wrong bearer token"}
                assert refused.headers["WWW-Authenticate"] == "Bearer"
                wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
                assert (await anonymous("GET", "/jobs", headers=wrong)).status == 401
                basic = {"Authorization": f"Basic {TOKEN}"}
                assert (await anonymous("GET", "/nope", headers=basic)).status == 401
            async with api_client(url=source.url, token=TOKEN) as call:
                assert (await call("GET", "/jobs")).status == 200
                assert (await call("GET", "/nope")).status == 404
            async with api_client(path) as local:
                assert (await local("GET", "/jobs")).status == 200
    # Refusals are logged once a minute with a count, never one line each.
    refusals = [e for e in logs if e["event"] == "control_unauthorized"]
    assert len(refusals) == 1
    assert refusals[0]["peer"] == "127.0.0.1"


async def test_a_new_token_applies_on_reload(es: ES) -> None:
    config = make_config(es.url, QUIET, control={"listen": "127.0.0.1:0", "token": TOKEN})
    rotated = make_config(es.url, QUIET, control={"listen": "127.0.0.1:0", "token": TOKEN[::-1]})
    moved = make_config(es.url, QUIET, control={"listen": "127.0.0.1:1", "token": TOKEN[::-1]})
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(config, "file", "control") as (_, sources):
            source = sources["control"]
            assert isinstance(source, ControlSource) and source.url is not None
            await source.reload(rotated)
            async with api_client(url=source.url, token=TOKEN) as old:
                assert (await old("GET", "/status")).status == 401
            async with api_client(url=source.url, token=TOKEN[::-1]) as new:
                assert (await new("GET", "/status")).status == 200
            await source.reload(moved)
    [restart] = [e for e in logs if e["event"] == "control_restart_needed"]
    assert restart["changed"] == ["control.listen"]


# --- persistence ----------------------------------------------------------------------


async def test_2xx_only_once_saved(es: ES, sockdir: Path) -> None:
    es.emu.create_job(job_id="p-1")
    path, state = sockdir / "c.sock", sockdir / "state"
    with capture_logs(), anyio.fail_after(10):
        config = make_config(es.url, QUIET, state={"dir": state}, control={"socket": path})
        async with (
            running(config, "file", "control"),
            api_client(path) as call,
        ):
            assert (await call("PUT", "/jobs/p-1")).status == 201
            saved = json.loads((state / "watchlist.json").read_bytes())
            assert saved["jobs"] == {"p-1": ["control"]}
            assert (await call("DELETE", "/jobs/p-1")).status == 200
            assert json.loads((state / "watchlist.json").read_bytes())["jobs"] == {}


async def test_503_when_the_watch_list_cannot_be_saved(
    es: ES, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "PERSIST_TIMEOUT", 0.5)
    es.emu.create_job(job_id="u-1")
    path, state = sockdir / "c.sock", sockdir / "state"
    state.write_text("a file where the state directory should be")
    with capture_logs() as logs, anyio.fail_after(10):
        config = make_config(es.url, QUIET, state={"dir": state}, control={"socket": path})
        async with running(config, "file", "control") as (hb, _):
            async with api_client(path) as call:
                answer = await call("PUT", "/jobs/u-1")
            assert "u-1" in hb.scheduler  # applied, only not acknowledged
    assert answer.status == 503
    assert answer.json["error"].startswith(f"applied but not saved to {state}/watchlist.json")
    assert answer.json["error"].endswith("; repeat the request")
    assert len([e for e in logs if e["event"] == "state_save_failed"]) >= 1


# --- configuration --------------------------------------------------------------------


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hb.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        configuration.load(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[control]\nlisten = '127.0.0.1:9311'\n", "control.listen: '127.0.0.1:9311': the API"),
        (
            f"[control]\nlisten = '10.1.2.3:9311'\ntoken = '{TOKEN}'\n",
            "control.listen: '10.1.2.3:9311' is not a loopback address",
        ),
        (
            f"[control]\nlisten = '0.0.0.0:9311'\ntoken = '{TOKEN}'\n",
            "control.allow_remote = true",
        ),
        ("[control]\nlisten = '9311'\n", "control.listen: '9311': must be host:port"),
        ("[control]\ntoken = 'short'\n", "control.token: must be at least 16 printable ASCII"),
        ("[control]\ntoken = 'has a space in it, sadly'\n", "control.token: must be"),
        (
            "[control]\nsocket = '/" + "s" * 120 + "'\n",
            "is 121 bytes; a Unix socket path has at most 107",
        ),
        ("[control]\nsockets = '/x'\n", "control.sockets: unknown key"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    message = config_error(tmp_path, text)
    assert expected in message
    assert "short" not in message  # a secret's value is never echoed


def test_config_both_token_forms_and_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    both = f"[control]\ntoken = '{TOKEN}'\ntoken_file = '{token_file}'\n"
    assert "set token or token_file, not both" in config_error(tmp_path, both)
    path = tmp_path / "ok.toml"
    path.write_text(
        f"[control]\nlisten = '[::1]:9311'\ntoken_file = '{token_file}'\n"
        "[jobs]\nfile = '/var/lib/heartbeat/jobs.txt'\n"
    )
    loaded = configuration.load(path)
    assert loaded.control.token is not None
    assert loaded.control.token.get_secret_value() == TOKEN
    assert loaded.control.address() == ("::1", 9311)
    assert loaded.jobs.file == Path("/var/lib/heartbeat/jobs.txt")
    shown = json.dumps(configuration.redacted(loaded))
    assert TOKEN not in shown
    assert '"token": "***"' in shown
    assert configuration.holds_secret({"control": {"token": TOKEN}})
    remote = tmp_path / "remote.toml"
    remote.write_text(
        f"[control]\nlisten = '0.0.0.0:9311'\ntoken = '{TOKEN}'\nallow_remote = true\n"
    )
    assert configuration.load(remote).control.allow_remote


def test_socket_defaults_to_the_runtime_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/heartbeat:/run/other")
    assert ControlSettings().socket == Path("/run/heartbeat/control.sock")
    assert ControlSettings(socket="").socket is None  # type: ignore[arg-type]
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert ControlSettings().socket is None


# --- heartbeat jobs -------------------------------------------------------------------


async def test_cli_in_process(es: ES, sockdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for job_id in ("c-1", "c 2", "a/b"):
        es.emu.create_job(job_id=job_id)
    path = sockdir / "c.sock"
    target = Target(socket=path, url=None, token=None)
    with capture_logs(), anyio.fail_after(15):
        config = make_config(es.url, QUIET, jobs={"ids": ["c-1"]}, control={"socket": path})
        async with running(config, "file", "control"):
            capsys.readouterr()
            assert await run(target, "add", ["c-1", "c 2", "a/b"], False) == 0
            assert capsys.readouterr().out.splitlines() == [
                "added: c 2",
                "added: a/b",
                "already watched: c-1",
            ]
            assert await run(target, "list", [], False) == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].split() == [
                "ID", "SOURCES", "LAST", "SUCCESS", "NEXT", "DUE", "FAILURES", "EXPIRES",
                "LAST", "ERROR",
            ]  # fmt: skip
            assert [line.split("  ")[0] for line in lines[1:]] == ["a/b", "c 2", "c-1"]
            assert await run(target, "list", [], True) == 0
            listed = json.loads(capsys.readouterr().out)
            assert {job["id"] for job in listed["jobs"]} == {"c-1", "c 2", "a/b"}

            assert await run(target, "show", ["a/b"], False) == 0
            shown = capsys.readouterr().out
            assert "id:                   a/b\n" in shown
            assert "sources:              control\n" in shown
            assert await run(target, "show", ["a/b"], True) == 0
            assert json.loads(capsys.readouterr().out)["id"] == "a/b"
            assert await run(target, "show", ["nope"], False) == 1
            assert capsys.readouterr().err == "not watched: nope\n"

            assert await run(target, "remove", ["c-1", "nope", "a/b"], False) == 1
            out, err = capsys.readouterr()
            assert out.splitlines() == [
                "removed: c-1 (also listed in config: back when that is re-read)",
                "removed: a/b",
            ]
            assert err == "not watched: nope\n"
            assert await run(target, "remove", ["c 2"], True) == 0
            removed = json.loads(capsys.readouterr().out)
            assert removed["not_watched"] == []
            assert removed["removed"][0]["id"] == "c 2"


def test_cli_cannot_connect_names_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "none.sock"
    assert main(["jobs", "list", "--socket", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"heartbeat jobs: cannot connect to the control socket {missing}: "
        "no such socket: is heartbeat running, with [control] socket set?\n"
    )
    config = tmp_path / "hb.toml"
    config.write_text(f"[control]\nsocket = '{missing}'\n[elasticsearch]\napi_key_file = '/x'\n")
    # Only [control] is read: an unreadable api_key_file does not matter here.
    # main() runs an event loop of its own: this test is sync, the subprocess's loop too.
    jobs = partial(heartbeat_cli, "jobs", "show", "x", "--config", str(config), within=30)
    code, _, err = anyio.run(jobs)
    assert (code, str(missing) in err) == (2, True)
    monkeypatch.setenv("HEARTBEAT_CONFIG", str(tmp_path / "nope.toml"))
    assert main(["jobs", "list"]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err
    monkeypatch.delenv("HEARTBEAT_CONFIG")
    assert main(["jobs", "add", "ok", "bad\x01", "--socket", str(missing)]) == 2
    assert "control character" in capsys.readouterr().err  # refused before connecting


async def test_cli_subprocess_over_socket_and_tcp(es: ES, sockdir: Path, tmp_path: Path) -> None:
    es.emu.create_job(job_id="sub-1")
    path = sockdir / "c.sock"
    config_file = tmp_path / "hb.toml"
    config_file.write_text(f"[control]\nsocket = '{path}'\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = make_config(
        es.url, QUIET, control={"socket": path, "listen": "127.0.0.1:0", "token": TOKEN}
    )
    with capture_logs(), anyio.fail_after(30):
        async with running(config, "file", "control") as (hb, sources):
            source = sources["control"]
            assert isinstance(source, ControlSource) and source.url is not None
            cli = [sys.executable, "-m", "heartbeat", "jobs"]
            added = await anyio.run_process(
                [*cli, "--config", str(config_file), "add", "sub-1"], check=False
            )
            assert (added.returncode, added.stdout) == (0, b"added: sub-1\n")
            assert hb.scheduler.watchlist.claims() == {"sub-1": ("control",)}
            by_file = await anyio.run_process(
                [
                    *cli,
                    "show",
                    "sub-1",
                    "--json",
                    "--url",
                    source.url,
                    "--token-file",
                    str(token_file),
                ],
                check=False,
            )
            assert json.loads(by_file.stdout)["id"] == "sub-1"
            environment = {**os.environ, "HEARTBEAT_CONTROL_TOKEN": TOKEN}
            by_env = await anyio.run_process(
                [*cli, "remove", "sub-1", "--url", source.url], env=environment, check=False
            )
            assert (by_env.returncode, by_env.stdout) == (0, b"removed: sub-1\n")
            no_token = await anyio.run_process(
                [*cli, "list", "--url", source.url],
                env={k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")},
                check=False,
            )
            assert no_token.returncode == 2
            assert b"401, missing or wrong token" in no_token.stderr
