"""heartbeat.systemd (sd_notify) against a real datagram socket, and the unit files in
systemd/ against systemd-analyze.

How the units are verified: ``systemd-analyze verify`` refuses a unit whose ExecStart=
binary does not exist, and heartbeat is not installed at /opt/heartbeat on a developer's
or CI machine. So the tests build a throwaway root: the host's own unit directory
(sysinit.target and friends, which verify resolves dependencies against), a stand-in
executable at /opt/heartbeat/bin/heartbeat, copies of the host's other Exec binaries
(/bin/kill), a stub elastic-connectors.service for the sidecar drop-in, and our units in
/etc/systemd/system. Then ``systemd-analyze verify --root=ROOT UNIT`` must print nothing
(it exits 0 even on an unknown key, so the output is what counts) and
``systemd-analyze security --offline=yes --root=ROOT UNIT`` must score 1.5 or less.
systemd-analyze comes with Debian's ``systemd`` package; these tests fail, never skip,
without it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.systemd import MAX_STATUS_BYTES, Notifier
from tests.helpers_systemd import NotifySocket, notify_socket

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
HEARTBEAT_BIN = "/opt/heartbeat/bin/heartbeat"
MAX_EXPOSURE = 1.5


def wait_for_count(sd: NotifySocket, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sd.messages) < count:
        assert time.monotonic() < deadline, f"expected {count} messages, got {sd.messages!r}"
        time.sleep(0.005)


# --- the sd_notify protocol -------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sends_the_exact_datagrams(tmp_path: Path, abstract: bool) -> None:
    with notify_socket(tmp_path, abstract=abstract) as sd:
        assert sd.address.startswith("@") == abstract
        notifier = Notifier.from_env(sd.env(WATCHDOG_USEC="30000000"))
        assert notifier.enabled

        notifier.ready()
        notifier.ready(status="watching 3 jobs")
        notifier.status("watching 3 jobs, 1 failing")
        notifier.watchdog()
        notifier.stopping()
        notifier.notify("EXTEND_TIMEOUT_USEC=5000000", "STATUS=draining")
        wait_for_count(sd, 6)

    assert [message.raw for message in sd.messages] == [
        b"READY=1",
        b"READY=1\nSTATUS=watching 3 jobs",
        b"STATUS=watching 3 jobs, 1 failing",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"EXTEND_TIMEOUT_USEC=5000000\nSTATUS=draining",
    ]
    # The kernel vouches for the sender, as it does to systemd for NotifyAccess=main.
    assert {message.pid for message in sd.messages} == {os.getpid()}


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_reloading_carries_the_monotonic_clock(tmp_path: Path, abstract: bool) -> None:
    with notify_socket(tmp_path, abstract=abstract) as sd:
        notifier = Notifier.from_env(sd.env())
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.ready()
        wait_for_count(sd, 2)

    reloading, ready = sd.messages
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading.raw)
    assert match is not None, reloading.raw
    assert before <= int(match[1]) <= after
    assert ready.raw == b"READY=1"


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("one\ntwo\r\nthree\n", "STATUS=one two three"),
        ("  padded\n", "STATUS=padded"),
        ("nul\0inside", "STATUS=nul inside"),
        ("", "STATUS="),
    ],
)
def test_status_is_one_line(tmp_path: Path, text: str, sent: str) -> None:
    with notify_socket(tmp_path) as sd:
        Notifier.from_env(sd.env()).status(text)
        wait_for_count(sd, 1)
    assert sd.messages[0].text == sent


def test_long_status_is_cut_to_fit_a_datagram(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as sd:
        notifier = Notifier.from_env(sd.env())
        notifier.ready(status="é" * 5000)  # two UTF-8 bytes each: the cut falls mid-char
        wait_for_count(sd, 1)
    ready, status = sd.messages[0].text.split("\n")
    assert ready == "READY=1"
    value = status.removeprefix("STATUS=")
    assert value.endswith("...")
    assert value.startswith("éé")
    assert len(value.encode()) <= MAX_STATUS_BYTES


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval() == 15.0
    own = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(own).watchdog_interval() == 15.0


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_PID": str(os.getpid() + 1)},  # the watchdog is some other process's
        {"WATCHDOG_PID": "not-a-pid"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30s"},
        {"WATCHDOG_USEC": None},
        {"NOTIFY_SOCKET": None},  # nobody to send keep-alives to
    ],
    ids=["other-pid", "bad-pid", "zero", "negative", "not-a-number", "no-usec", "no-socket"],
)
def test_no_watchdog(tmp_path: Path, env: dict[str, str | None]) -> None:
    with notify_socket(tmp_path) as sd:
        full = {**sd.env(WATCHDOG_USEC="30000000"), **env}
        notifier = Notifier.from_env({k: v for k, v in full.items() if v is not None})
        assert notifier.watchdog_interval() is None
        notifier.watchdog()
        notifier.notify("X_HEARTBEAT_TEST=end")  # a marker: everything before it arrived
        if notifier.enabled:
            sd.wait_for("X_HEARTBEAT_TEST")
    assert all("WATCHDOG" not in message.fields for message in sd.messages)


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_without_notify_socket_everything_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    env = {"WATCHDOG_USEC": "30000000"} if value is None else {"NOTIFY_SOCKET": value}

    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("a disabled Notifier opened a socket")

    monkeypatch.setattr(socket, "socket", no_socket)
    with capture_logs() as logs:
        notifier = Notifier.from_env(env)
        assert not notifier.enabled
        assert notifier.watchdog_interval() is None
        notifier.ready(status="x")
        notifier.status("x")
        notifier.watchdog()
        notifier.reloading()
        notifier.stopping()
        notifier.notify("READY=1")
    assert logs == []


def test_a_missing_socket_logs_once_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    with capture_logs() as logs:
        notifier.ready(status="starting")
        for _ in range(3):
            notifier.status("still here")
            notifier.watchdog()
        notifier.reloading()
        notifier.stopping()
    assert logs == [
        {
            "event": "sd_notify_failed",
            "log_level": "warning",
            "error": "[Errno 2] No such file or directory",
            "errno": 2,
            "socket": str(path),
            "variables": ["READY", "STATUS"],
        }
    ]


def test_logs_again_only_after_a_success(tmp_path: Path) -> None:
    path = tmp_path / "flaky.sock"
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        notifier.status("a")
        notifier.status("b")
        with NotifySocket(str(path)).start() as sd:
            notifier.status("c")
            sd.wait_for("STATUS", "c")
        notifier.status("d")
        notifier.status("e")
    assert [entry["event"] for entry in logs] == ["sd_notify_failed", "sd_notify_failed"]


def test_a_full_socket_never_blocks(tmp_path: Path) -> None:
    # Nobody reads this socket: once its queue is full (net.unix.max_dgram_qlen, 512
    # by default) a blocking send would hang the event loop; ours fails with EAGAIN.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(tmp_path / "full.sock"))
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "full.sock")})
        started = time.monotonic()
        with capture_logs() as logs:
            for _ in range(5000):
                notifier.status("x" * 100)
        assert time.monotonic() - started < 30
    assert len(logs) == 1
    assert logs[0]["event"] == "sd_notify_failed"
    assert logs[0]["errno"] == 11  # EAGAIN


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify.sock"])
def test_unsupported_address_disables_with_one_log_line(value: str) -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000000"})
        notifier.ready()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert logs == [
        {
            "event": "sd_notify_failed",
            "log_level": "warning",
            "error": "unsupported NOTIFY_SOCKET address",
            "socket": value,
        }
    ]


@pytest.mark.parametrize("assignment", ["READY", "STATUS=a\nb", "STATUS=a\0b"])
def test_a_malformed_assignment_is_a_programming_error(assignment: str) -> None:
    with pytest.raises(ValueError, match="VARIABLE=value"):
        Notifier.from_env({}).notify(assignment)


def test_repr_names_the_abstract_socket_readably() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@hb"})
    assert repr(notifier) == "Notifier(address='@hb', watchdog_usec=None)"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@from-os-environ")
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier.from_env().watchdog_interval() == 2.0


async def test_helper_records_a_child_process(tmp_path: Path) -> None:
    # The shape of the end-to-end test: a child process, env from the helper.
    script = (
        "from heartbeat.systemd import Notifier\n"
        "notifier = Notifier.from_env()\n"
        "notifier.ready(status='child')\n"
        "notifier.stopping()\n"
    )
    async with notify_socket(tmp_path, abstract=True) as sd:
        with anyio.fail_after(30):
            process = await anyio.open_process(
                [sys.executable, "-c", script], env={**os.environ, **sd.env()}, cwd=REPO
            )
            async with process:
                assert await process.wait() == 0
            ready = await sd.wait_for_async("READY")
            stopping = await sd.wait_for_async("STOPPING", "1")
    assert ready.fields == {"READY": "1", "STATUS": "child"}
    assert ready.pid == stopping.pid == process.pid
    assert ready.received_at <= stopping.received_at


def test_helper_wait_for_times_out(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as sd, pytest.raises(TimeoutError, match="no READY"):
        sd.wait_for("READY", timeout=0.05)


# --- the unit files ---------------------------------------------------------------------

# What each check runs against: the unit name in the throwaway root.
VERIFIED_UNITS = [
    "heartbeat.service",
    "heartbeat@.service",
    "heartbeat@example.service",
    "heartbeat@elastic-connectors.service",  # with the sidecar drop-in
]


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install Debian's `systemd` package")
    return path


def unit_lines(path: Path, section: str) -> list[tuple[str, str]]:
    """The ``Key=value`` lines of one section, in order, comments dropped."""
    lines: list[tuple[str, str]] = []
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line
        elif current == f"[{section}]":
            key, _, value = line.partition("=")
            lines.append((key.strip(), value.strip()))
    return lines


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("systemd-root")
    host_units = Path("/usr/lib/systemd/system")
    if not (host_units / "sysinit.target").exists():
        pytest.fail(f"{host_units} has no sysinit.target: install Debian's `systemd` package")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)

    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name in ("heartbeat.service", "heartbeat@.service"):
        shutil.copy(UNITS / name, etc / name)
    dropin = etc / "heartbeat@elastic-connectors.service.d"
    dropin.mkdir()
    shutil.copy(UNITS / "heartbeat-sidecar.example.conf", dropin / "sidecar.conf")
    (etc / "elastic-connectors.service").write_text(
        "[Unit]\nDescription=stand-in for the connector\n\n"
        "[Service]\nType=simple\nExecStart=/bin/sleep infinity\n"
    )

    for name in ("heartbeat.service", "heartbeat@.service", "elastic-connectors.service"):
        for key, value in unit_lines(etc / name, "Service"):
            if not key.startswith("Exec"):
                continue
            binary = value.lstrip("-@:+!").split()[0]
            target = root / binary.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if binary == HEARTBEAT_BIN:
                target.write_text("#!/bin/sh\nexit 0\n")  # stand-in: not installed here
                target.chmod(0o755)
            else:
                shutil.copy2(binary, target)  # the real thing must exist on the host
    return root


@pytest.mark.parametrize("unit", VERIFIED_UNITS)
def test_systemd_analyze_verify_is_clean(systemd_root: Path, unit: str) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", f"--root={systemd_root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("unit", VERIFIED_UNITS)
def test_systemd_analyze_security_exposure(systemd_root: Path, unit: str) -> None:
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            f"--root={systemd_root}",
            f"--threshold={round(MAX_EXPOSURE * 10)}",
            "--no-pager",
            unit,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    exposed = [line.strip() for line in result.stdout.splitlines() if "✗" in line]
    assert float(match[1]) <= MAX_EXPOSURE, "\n".join([match[0], *exposed])
    assert result.returncode == 0, result.stderr


def test_template_is_hardened_like_the_single_unit() -> None:
    single = unit_lines(UNITS / "heartbeat.service", "Service")
    template = [
        (
            key,
            value.replace("/etc/heartbeat/%i.toml", "/etc/heartbeat/heartbeat.toml")
            .replace("/etc/heartbeat/%i.api_key", "/etc/heartbeat/api_key")
            .replace("heartbeat-%i", "heartbeat"),
        )
        for key, value in unit_lines(UNITS / "heartbeat@.service", "Service")
    ]
    assert template == single


@pytest.mark.parametrize("name", ["heartbeat.service", "heartbeat@.service"])
def test_unit_keeps_the_daemon_contract(name: str) -> None:
    service = dict(unit_lines(UNITS / name, "Service"))
    assert service["Type"] == "notify"  # the daemon sends READY=1 (heartbeat.systemd)
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "30"  # the daemon feeds it every WATCHDOG_USEC / 2
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the config
    # EX_CONFIG, and systemd's set-up failures that a restart cannot fix: no restart loop
    # (tests/systemd_container proves 78, 238 and 243 under a real systemd).
    prevented = service["RestartPreventExitStatus"].split()
    assert {"78", "203", "238", "243"} <= set(prevented)
    assert not {"204", "217", "219"} & set(prevented)  # memory, user, cgroup: may pass
    assert service["ExecStart"].startswith(f"{HEARTBEAT_BIN} run --config /etc/heartbeat/")
    assert service["LoadCredential"].startswith("api_key:")  # $CREDENTIALS_DIRECTORY/api_key


def test_sidecar_binds_to_one_connector_unit() -> None:
    unit = unit_lines(UNITS / "heartbeat-sidecar.example.conf", "Unit")
    assert unit == [
        ("BindsTo", "elastic-connectors.service"),
        ("PartOf", "elastic-connectors.service"),
        ("After", "elastic-connectors.service"),
    ]
    # [worker] pid_file reads the connector's /proc/<pid>/stat: the unit's
    # ProtectProc=invisible would hide it (proven under a real systemd by
    # tests/systemd_container/test_hardening.py).
    service = unit_lines(UNITS / "heartbeat-sidecar.example.conf", "Service")
    assert service == [("ProtectProc", "default")]


# MemoryDenyWriteExecute=yes forbids writable+executable mappings. The kernel's
# PR_SET_MDWE (Linux >= 6.3) enforces the same rule on one process: run what the daemon
# imports and does under it, so a dependency that needs W^X exceptions fails here first.
MDWE_SCRIPT = """
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77 if ctypes.get_errno() == errno.EINVAL else 1)
import asyncio, mmap, ssl
import aiohttp, aiohttp.web, anyio, pydantic, pydantic_settings, structlog
import heartbeat.systemd
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("PR_SET_MDWE is not enforced")

async def main():
    async def checkin(request):
        return aiohttp.web.json_response({})
    app = aiohttp.web.Application()
    app.router.add_put("/_connector/_sync_job/{id}/_check_in", checkin)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    ssl.create_default_context()
    async with aiohttp.ClientSession() as session:
        url = f"http://localhost:{port}/_connector/_sync_job/j1/_check_in"
        async with session.put(url) as response:
            assert response.status == 200
    await runner.cleanup()

anyio.run(main)
print("ok")
"""


def test_runs_under_memory_deny_write_execute() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MDWE_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_instances_directories_sit_beside_the_single_units() -> None:
    # With DynamicUser=yes, heartbeat.service's /var/lib/heartbeat is a symlink into
    # /var/lib/private; an instance's StateDirectory=heartbeat/NAME inside it made every
    # start of the other kind fail with status=238/STATE_DIRECTORY.
    single = dict(unit_lines(UNITS / "heartbeat.service", "Service"))
    template = dict(unit_lines(UNITS / "heartbeat@.service", "Service"))
    for key in ("StateDirectory", "RuntimeDirectory"):
        assert "/" not in single[key]
        assert "/" not in template[key]
        assert template[key] != single[key]
