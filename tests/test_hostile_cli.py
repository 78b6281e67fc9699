"""Every CLI verb with hostile arguments, as an operator would type them: real
subprocesses, real files, real sockets and real signals.

Asserts what a person at a terminal notices: the exit status (2 usage, 78 a
configuration or start-up problem, 130 Ctrl-C, never an undocumented 1), exactly one
line on stderr naming the problem, and never a traceback. Config keys themselves are
covered by tests/test_hostile_config.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from tests.conftest import ES
from tests.helpers_daemon import DAEMON, run_daemon
from tests.support import HEARTBEAT, clean_env, heartbeat_cli, toml, write_config


def assert_one_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


# -- usage errors: exit 2, one line -------------------------------------------------------

USAGE = [
    ((), "required: COMMAND"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("run", "--bogus"), "unrecognized arguments: --bogus"),
    (("run", "--b\x1b[31mogus"), "\\x1b[31mogus"),  # escaped, not sent to the terminal
    (("run", "--job"), "--job: expected at least one argument"),
    (("check-in",), "required: ID"),
    (("validate", "--config"), "--config: expected one argument"),
    (("demo", "--duration", "-1"), "--duration: '-1': expected seconds"),
    (("demo", "--duration", "nan"), "--duration: 'nan': expected seconds"),
    (("demo", "--duration", "inf"), "--duration: 'inf': expected seconds"),
    (("demo", "--duration", "1e400"), "--duration: '1e400': expected seconds"),
    (("demo", "--duration", "soon"), "'soon' is not a number of seconds"),
    (("emulator", "--port", "70000"), "--port: 70000 is not a port number"),
    (("emulator", "--port", "-1"), "--port: -1 is not a port number"),
    (("emulator", "--port", "http"), "--port: 'http' is not a port number"),
    (("jobs",), "required: ACTION"),
    (("jobs", "frob"), "invalid choice: 'frob'"),
    (("jobs", "show"), "required: ID"),
    (("jobs", "add"), "required: ID"),
    (("jobs", "list", "--socket", "a", "--url", "http://b"), "not allowed with argument"),
]


@pytest.mark.parametrize(("args", "needle"), USAGE, ids=[" ".join(a) or "-" for a, _ in USAGE])
async def test_usage_errors_exit_2_with_one_line(args: Sequence[str], needle: str) -> None:
    code, out, err = await heartbeat_cli(*args, within=30)
    assert (code, out) == (2, "")
    assert_one_line(err, needle, "--help")


async def test_help_of_every_verb_exits_0_and_names_its_flags() -> None:
    flags = {
        "run": ["--config", "--job"],
        "check-in": ["--config", "ID"],
        "validate": ["--config"],
        "emulator": ["--host", "--port", "--data", "--api-key-file"],
        "demo": ["--duration"],
        "jobs": ["--socket", "--url", "--token-file", "--json", "list", "add"],
        "jobs add": ["--config", "ID"],
    }
    for verb, names in flags.items():
        code, out, err = await heartbeat_cli(*verb.split(), "--help", within=30)
        assert (code, err) == (0, "")
        for name in names:
            assert name in out, (verb, name)


# -- start-up problems: exit 78 (or 2 for a command's own failure), one line ------------


async def test_config_file_problems_exit_78_for_every_verb_that_reads_one(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[elasticsearch\n")
    cases = [
        (("validate", "--config", str(tmp_path / "missing.toml")), "missing.toml"),
        (("check-in", "--config", str(tmp_path), "job"), str(tmp_path)),
        (("run", "--config", str(broken)), "broken.toml"),
        (("jobs", "list", "--config", str(tmp_path / "missing.toml")), "missing.toml"),
    ]
    for args, needle in cases:
        code, out, err = await heartbeat_cli(*args, within=30)
        expected = 2 if args[0] == "jobs" else 78  # jobs: documented 0 / 1 / 2
        assert (code, out) == (expected, ""), args
        assert_one_line(err, needle)


def occupied_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


EMULATOR_DATA = {
    "corrupt.json": ('[{"job_id": "a"', "not JSON (line 1"),
    "object.json": ('{"jobs": []}', "expected a JSON list of jobs, got an object"),
    "numbers.json": ("[1, 2]", "job 0: expected an object, got a number"),
    "no-id.json": ('[{"connector_id": "c", "job_type": "full", "status": "pending"}]', "job_id"),
    "status.json": (
        '[{"job_id": "a", "connector_id": "c", "job_type": "full", "status": "lost"}]',
        "status: 'lost' is not one of",
    ),
    "twice.json": (
        json.dumps(
            [{"job_id": "a", "connector_id": "c", "job_type": "full", "status": "pending"}] * 2
        ),
        "job 1: job_id: 'a' appears twice",
    ),
    "latin1.json": (b"\xff\xfe[]", "not UTF-8"),
    "empty-id.json": (
        '[{"job_id": "", "connector_id": "c", "job_type": "full", "status": "pending"}]',
        "job 0: job_id: is empty",
    ),
}


async def test_emulator_start_up_problems_are_one_line_and_78(tmp_path: Path) -> None:
    holder = occupied_port()
    port = str(holder.getsockname()[1])
    cases: list[tuple[tuple[str, ...], str]] = [
        (("--port", port), f"cannot listen on 127.0.0.1:{port}: Address already in use"),
        # TEST-NET-1: on no interface of this host.
        (("--host", "192.0.2.1", "--port", "0"), "cannot listen on 192.0.2.1:0:"),
        (("--host", "no-such-host.invalid", "--port", "0"), "unknown host"),
        (("--port", "0", "--data", str(tmp_path)), "is a directory"),
        (("--port", "0", "--data", str(tmp_path / "gone" / "jobs.json")), "does not exist"),
    ]
    for name, (content, needle) in EMULATOR_DATA.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        cases.append((("--port", "0", "--data", str(path)), needle))
    try:
        for args, needle in cases:
            code, out, err = await heartbeat_cli("emulator", *args, within=30)
            assert (code, out) == (78, ""), (args, err)
            assert_one_line(err, "heartbeat emulator: ", needle)
    finally:
        holder.close()
    # A refused file is left exactly as it was: nothing is lost at exit.
    for name, (content, _) in EMULATOR_DATA.items():
        raw = content if isinstance(content, bytes) else content.encode()
        assert (tmp_path / name).read_bytes() == raw
    assert not (tmp_path / "gone").exists()


async def test_emulator_data_file_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "jobs.json"
    for _ in range(2):
        process = await anyio.open_process(
            [*HEARTBEAT, "emulator", "--port", "0", "--data", str(data)], env=clean_env()
        )
        async with process:
            assert process.stdout is not None
            with anyio.fail_after(20):
                line = (await process.stdout.receive()).decode()
            url = line.split("url=", 1)[1].strip()
            listed = await http_json("GET", f"{url}/_connector/_sync_job")
            if not data.exists():
                assert listed["count"] == 0
                created = await http_json("POST", f"{url}/_emulator/jobs", {"job_id": "kept"})
                assert created == {"id": "kept"}
            else:
                assert [job["id"] for job in listed["results"]] == ["kept"]
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                assert await process.wait() == 0
    assert [job["job_id"] for job in json.loads(data.read_text())] == ["kept"]
    assert os.listdir(tmp_path) == ["jobs.json"]  # no temporary file left behind


async def http_json(method: str, url: str, body: object = None) -> dict[str, object]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        answer: dict[str, object] = await r.json()
        return answer


# -- servers that are not Elasticsearch ------------------------------------------------------


@asynccontextmanager
async def tcp_server(handle: Callable[[SocketStream], object]) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (not Django)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield port
        tg.cancel_scope.cancel()


async def speaks_ssh(stream: SocketStream) -> None:
    async with stream:
        await stream.send(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        with anyio.move_on_after(5):
            await stream.receive()


async def never_answers(stream: SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


@pytest.mark.parametrize(
    "reply", [b"SSH-2.0-OpenSSH_9.2p1\r\n", b"-ERR unknown command\r\n", b"\x15\x03\x03\x00\x02"]
)
async def test_check_in_against_a_server_that_is_not_http_is_one_line_per_id(
    tmp_path: Path, reply: bytes
) -> None:
    async def handle(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(5):
                await stream.receive()
            await stream.send(reply)

    async with tcp_server(handle) as port:
        config = write_config(tmp_path / "hb.toml", toml(f"http://127.0.0.1:{port}", DAEMON))
        code, out, err = await heartbeat_cli(
            "check-in", "--config", str(config), "a", "b\nc", "d", within=30
        )
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith("failed     'a': ")
    assert lines[1].startswith("invalid    'b\\nc': ")
    assert lines[2].startswith("failed     'd': ")
    assert ("Traceback", err) == ("Traceback", "")


# -- the control API from the command line ---------------------------------------------------


async def test_jobs_failures_are_one_line_and_exit_2(tmp_path: Path) -> None:
    async with tcp_server(speaks_ssh) as port:
        cases = [
            (("list", "--socket", str(tmp_path / "none.sock")), "no such socket"),
            (("list", "--url", "ftp://127.0.0.1:1"), "must start with http://"),
            (("list", "--url", "http://127.0.0.1:1"), "cannot connect to http://127.0.0.1:1"),
            (("list", "--url", f"http://127.0.0.1:{port}"), f"127.0.0.1:{port}"),
            (
                ("list", "--url", "http://127.0.0.1:1", "--token-file", str(tmp_path / "no")),
                "--token-file: cannot read",
            ),
            (("show", "a\x01b", "--socket", str(tmp_path / "s")), "job id"),
            (("show", "\udcff", "--socket", str(tmp_path / "s")), "lone surrogate"),
            (("list", "--url", "http://[::1"), "--url: not a usable URL"),
            (("list", "--url", "http://127.0.0.1:99999"), "--url: not a usable URL"),
            (("list", "--url", "http://:80"), "has no host"),
            (("list", "--url", "http://127.0.0.1:1/?a=b"), "base URL only"),
            (("list", "--socket", ""), "--socket: the path is empty"),
        ]
        for args, needle in cases:
            code, out, err = await heartbeat_cli("jobs", *args, within=30)
            assert (code, out) == (2, ""), (args, err)
            assert_one_line(err, "heartbeat jobs: ", needle)
    # A password in --url is refused, and never echoed.
    code, _, err = await heartbeat_cli(
        "jobs", "list", "--url", "http://u:s3cr3t-pw@127.0.0.1:1", within=30
    )
    assert code == 2
    assert_one_line(err, "--url must not hold credentials")
    assert "s3cr3t-pw" not in err


async def test_emulator_refuses_an_empty_api_key_file(tmp_path: Path) -> None:
    # Not "no credentials": an emulator told to check a key must not accept everyone.
    empty = tmp_path / "key"
    empty.write_text("\n")
    code, out, err = await heartbeat_cli(
        "emulator", "--port", "0", "--api-key-file", str(empty), within=30
    )
    assert (code, out) == (2, "")
    assert_one_line(err, f"--api-key-file: {empty} is empty")


# -- a closed stdout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("validate", "--config", os.devnull), ("demo", "--duration", "0")],
    ids=["validate", "demo"],
)
def test_a_closed_stdout_ends_quietly_with_141(args: tuple[str, ...]) -> None:
    process = subprocess.Popen(
        [*HEARTBEAT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None
    process.stdout.close()  # before the interpreter has started: `heartbeat validate | true`
    _, err = process.communicate(timeout=30)
    assert (process.returncode, err) == (141, b"")


# -- Ctrl-C at any moment -----------------------------------------------------------------------

#: Seconds after the command's own code starts (``heartbeat.cli`` imports ``argparse``
#: first, after the entry module installed its handler): inside our imports of anyio,
#: aiohttp and pydantic, and later. Before that come the interpreter's start (a SIGINT
#: there is Python's own "Fatal Python error", outside any program's reach), the
#: package ``__init__`` and ``import signal``: a few milliseconds not tested here.
DELAYS = (0.02, 0.1, 0.25, 0.6, 2.5)


def imported_so_far(importtime: bytes) -> set[str]:
    """The modules named on the complete ``-X importtime`` lines so far."""
    complete = importtime[: importtime.rfind(b"\n") + 1].decode()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in complete.splitlines()
        if line.startswith("import time:")
    }


async def interrupted(args: Sequence[str], delay: float) -> tuple[int, str, str]:
    # -X importtime: a line on stderr as each module is imported, to time the signal.
    process = await anyio.open_process(
        [sys.executable, "-X", "importtime", *HEARTBEAT[1:], *args],
        env=clean_env(PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
    )
    async with process:
        assert process.stdout is not None and process.stderr is not None
        err = b""
        with anyio.fail_after(30):
            while not {"heartbeat", "signal", "argparse"} <= imported_so_far(err):
                err += await process.stderr.receive()
        await anyio.sleep(delay)
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            code = await process.wait()
        out = b"".join([chunk async for chunk in process.stdout]).decode()
        err += b"".join([chunk async for chunk in process.stderr])
    lines = [line for line in err.decode().splitlines() if not line.startswith("import time:")]
    return code, out, "".join(f"{line}\n" for line in lines)


async def test_ctrl_c_at_any_moment_is_130_and_at_most_one_line(es: ES, tmp_path: Path) -> None:
    async with tcp_server(never_answers) as port:
        hanging = write_config(tmp_path / "hanging.toml", toml(f"http://127.0.0.1:{port}", DAEMON))
        config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": ["job-a"]}))
        es.emu.create_job(job_id="job-a")
        # (command, the line that says it is running: from then on SIGINT is a clean stop)
        commands: list[tuple[tuple[str, ...], str | None]] = [
            (("validate", "--config", str(config)), None),
            (("check-in", "--config", str(hanging), "job"), None),
            (("jobs", "list", "--url", f"http://127.0.0.1:{port}"), None),
            (("run", "--config", str(config)), "daemon_stopping"),
            (("emulator", "--port", "0"), "emulator_listening"),
            (("demo", "--duration", "30"), "stopped early (Ctrl-C)"),
        ]
        results: dict[tuple[str, float], tuple[int, str, str]] = {}

        async def one(args: tuple[str, ...], delay: float) -> None:
            results[(args[0], delay)] = await interrupted(args, delay)

        for delay in DELAYS:
            async with anyio.create_task_group() as tg:
                for args, _ in commands:
                    tg.start_soon(one, args, delay)
    for args, running in commands:
        for delay in DELAYS:
            code, out, err = results[(args[0], delay)]
            assert "Traceback" not in err + out, (args, delay)
            assert len(err.splitlines()) <= 1, (args, delay, err)
            if args[0] == "validate" and code == 0:
                continue  # finished before the signal: nothing to interrupt
            if running is not None and running in out:
                assert code == 0, (args, delay)  # documented: SIGINT stops it cleanly
            else:
                assert (code, err) == (130, "heartbeat: interrupted\n"), (args, delay, out)


# -- the command line and the README agree ------------------------------------------------------


async def test_run_takes_several_ids_per_job_flag_and_repeated_flags(
    es: ES, tmp_path: Path
) -> None:
    ids = ["cli-a", "cli-b", "cli-c"]
    for job_id in ids:
        es.emu.create_job(job_id=job_id)
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    async with run_daemon(config, "--job", "cli-a", "cli-b", "--job", "cli-c") as daemon:
        started = await daemon.wait_for("daemon_started")
        assert started["jobs"] == 3
        # No file, queue, discovery or control configured: no source is listed.
        assert started["sources"] == []
        await daemon.wait_for("checkin_succeeded", count=3)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert {r.job_id for r in es.emu.checkins()} == set(ids)
    readme = (Path(__file__).parent.parent / "docs" / "commands.md").read_text()
    assert "`heartbeat run [--config PATH] [--job ID ...]`" in readme


async def test_daemon_started_lists_the_file_source_only_when_configured(
    es: ES, tmp_path: Path
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("")
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON))
    config.write_text(config.read_text().replace("[jobs]\n", f"[jobs]\nfile = '{ids_file}'\n"))
    async with run_daemon(config) as daemon:
        assert (await daemon.wait_for("daemon_started"))["sources"] == ["file"]
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_demo_of_no_time_summarises_what_its_log_says(tmp_path: Path) -> None:
    code, out, err = await heartbeat_cli("demo", "--duration", "0", within=60)
    assert (code, err) == (0, "")
    dropped = {
        line.split("job_id=")[1].split()[0] for line in out.splitlines() if "job_dropped" in line
    }
    summary = out.split("summary:", 1)[1].splitlines()[1:]
    assert len(summary) == 4
    for line in summary:
        job_id, state = line.split()[2:4]
        assert state == ("dropped" if job_id in dropped else "watched"), out


# -- a bug: one line, status 70, secrets scrubbed ------------------------------------------------


def test_an_internal_error_is_one_line_and_70_with_secrets_scrubbed() -> None:
    # A bug cannot be produced on demand from outside, so this one is planted: main()
    # is replaced, in a real subprocess, by one that fails inside a task group with a
    # registered secret in its message. Everything around it is the real entry point.
    script = (
        "import heartbeat.cli, heartbeat.logs\n"
        "heartbeat.logs.register_secret('s3cr3t-api-key')\n"
        "def broken(argv=None):\n"
        "    raise ExceptionGroup('tg', [ValueError('lost s3cr3t-api-key\\nsecond line')])\n"
        "heartbeat.cli.main = broken\n"
        "from heartbeat.__main__ import entry\n"
        "entry()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert (result.returncode, result.stdout) == (70, "")
    assert result.stderr == "heartbeat: internal error: ValueError: lost *** second line\n"


async def test_emulator_that_cannot_save_its_data_says_so_and_exits_78(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    data = directory / "jobs.json"
    process = await anyio.open_process(
        [*HEARTBEAT, "emulator", "--port", "0", "--data", str(data)], env=clean_env()
    )
    async with process:
        assert process.stdout is not None and process.stderr is not None
        with anyio.fail_after(20):
            assert b"emulator_listening" in await process.stdout.receive()
        directory.rmdir()  # gone while it runs: saving at exit must fail, loudly
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            code = await process.wait()
        err = b"".join([chunk async for chunk in process.stderr]).decode()
    assert code == 78
    assert_one_line(err, f"--data {data}: cannot save: No such file or directory")
