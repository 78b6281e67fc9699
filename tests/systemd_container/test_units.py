"""The operator's whole life cycle of systemd/*.service under a real systemd 252.

Runs in the unprivileged container mode (see machine.py): systemd as PID 1, the units
installed as docs/operations.md says, ``heartbeat emulator`` as two more units (ports 9200 and
9201, each requiring its own API key), a stand-in connector unit. Each test is one step
of docs/operations.md's systemd section and asserts it from what an operator sees: ``systemctl
show`` / ``status``, the journal, ``heartbeat jobs``, files on disk, and the emulator's
record (a job's ``last_seen`` moves only on a check-in the emulator accepted, so it
proves that the API key arrived through ``LoadCredential=``).

The steps share one container and run in file order; each one leaves the units as the
next one expects (heartbeat.service running with the good configuration, unless it
says otherwise).

Proven in this mode: Type=notify (READY, STATUS, RELOADING), WatchdogSec=,
Restart=/RestartPreventExitStatus=, DynamicUser=, StateDirectory=, RuntimeDirectory=,
LoadCredential=, UMask=, ExecReload=, TimeoutStopSec=, the sidecar's BindsTo=/PartOf=,
and every sandboxing directive except ProtectProc=, ProcSubset=, DevicePolicy= and
IPAddressDeny=, which systemd skips in this mode: test_hardening.py proves those in
the host-like mode.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from tests.systemd_container.lifecycle import (
    HEARTBEAT,
    SHUTDOWN_TIMEOUT,
    SIDECAR,
    SIDECAR_SOCKET,
    active,
    assert_no_secret_logged,
    checked_in_after,
    config,
    event_logged,
    exposure,
    install_sidecar,
    last_seen,
    start_emulator,
    watched,
    worker_found,
)
from tests.systemd_container.machine import Machine, wait_until

pytestmark = pytest.mark.timeout(600)

KEY = f"systemd-test-{secrets.token_hex(8)}"  # emulator 9200: heartbeat.service
SEARCH_KEY = f"systemd-search-{secrets.token_hex(8)}"  # emulator 9201: heartbeat@search
GOOD = config(9200, ["job-a", "job-b"])
BROKEN = GOOD.replace("interval = 2", 'interval = "soon"')


@pytest.fixture(scope="module")
def machine(machine_for: Callable[[str], Machine]) -> Iterator[Machine]:
    m = machine_for("unprivileged")
    start_emulator(m, 9200, KEY, ["job-a", "job-b", "job-c", "job-d", "legacy-1"])
    start_emulator(m, 9201, SEARCH_KEY, ["search-1", "search-2"])
    # What docs/operations.md's steps 2 and 3 install: a config without secrets, a root-only key.
    m.write("/etc/heartbeat/heartbeat.toml", GOOD)
    m.write("/etc/heartbeat/api_key", KEY, mode="0600")
    yield m
    assert_no_secret_logged(m, KEY, SEARCH_KEY)


def test_upgrade_moves_an_instance_from_the_old_layout(machine: Machine) -> None:
    # Before the fix, heartbeat@NAME kept state in /var/lib/heartbeat/NAME: a drop-in
    # gives an instance that layout again; then docs/operations.md's one-time move (step 9).
    m = machine
    m.write("/etc/heartbeat/legacy.toml", config(9200, []))
    m.write("/etc/heartbeat/legacy.api_key", KEY, mode="0600")
    old_layout = "/etc/systemd/system/heartbeat@legacy.service.d/old-layout.conf"
    m.write(
        old_layout,
        "[Service]\nStateDirectory=\nStateDirectory=heartbeat/legacy\n"
        "RuntimeDirectory=\nRuntimeDirectory=heartbeat/legacy\n",
    )
    m.systemctl("daemon-reload")
    m.systemctl("start", "heartbeat@legacy")
    m.run(HEARTBEAT, "jobs", "--socket", "/run/heartbeat/legacy/control.sock", "add", "legacy-1")
    m.systemctl("stop", "heartbeat@legacy")
    assert m.exists("/var/lib/private/heartbeat/legacy/watchlist.json")

    m.run("rm", old_layout)  # the new unit file, installed
    m.systemctl("daemon-reload")
    m.sh(
        "mv /var/lib/private/heartbeat/legacy /var/lib/private/heartbeat-legacy"
        " && rm /var/lib/heartbeat/legacy"
        " && rmdir /var/lib/heartbeat /var/lib/private/heartbeat"
    )
    since = last_seen(m, "legacy-1")
    m.systemctl("start", "heartbeat@legacy")
    assert watched(m, "/run/heartbeat-legacy/control.sock") == {"legacy-1": ["control"]}
    checked_in_after(m, "legacy-1", since)
    m.systemctl("stop", "heartbeat@legacy")


def test_start(machine: Machine) -> None:
    m = machine
    # The emulator really refuses a check-in without the key (the operator's shell has
    # none): so an accepted check-in below is one that carried the credential.
    refused = m.run(
        HEARTBEAT, "check-in", "--config", "/dev/null", "job-a", check=False
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    since = {job: last_seen(m, job) for job in ("job-a", "job-b")}

    m.systemctl("start", "heartbeat")

    assert active(m, "heartbeat")
    status = m.systemctl("status", "heartbeat").stdout
    assert 'Status: "watching 2 jobs' in status, status
    for job, before in since.items():
        checked_in_after(m, job, before)
    assert m.prop("heartbeat", "NRestarts") == "0"


def test_control_socket(machine: Machine) -> None:
    m = machine
    assert m.run("stat", "-c", "%a", "/run/heartbeat/control.sock").stdout.strip() == "600"
    assert watched(m) == {"job-a": ["config"], "job-b": ["config"]}
    listed = m.run(HEARTBEAT, "jobs", "list").stdout
    assert "job-a" in listed and "job-b" in listed, listed

    since = last_seen(m, "job-c")
    added = m.run(HEARTBEAT, "jobs", "add", "job-c")
    assert added.stdout.strip() == "added: job-c"
    assert watched(m)["job-c"] == ["control"]
    checked_in_after(m, "job-c", since)


def test_reload(machine: Machine) -> None:
    m = machine
    pid = m.prop("heartbeat", "MainPID")
    m.write("/etc/heartbeat/heartbeat.toml", config(9200, ["job-a", "job-b", "job-d"]))
    cursor = m.cursor()
    m.systemctl("reload", "heartbeat")
    event_logged(m, "heartbeat", "config_reloaded", cursor)
    assert m.prop("heartbeat", "MainPID") == pid
    assert set(watched(m)) == {"job-a", "job-b", "job-c", "job-d"}

    # A broken file: logged, the running configuration kept, check-ins go on.
    m.write("/etc/heartbeat/heartbeat.toml", BROKEN)
    cursor = m.cursor()
    m.systemctl("reload", "heartbeat")
    failed = event_logged(m, "heartbeat", "config_reload_failed", cursor)
    assert "schedule.interval" in str(failed["error"]), failed
    since = last_seen(m, "job-d")
    checked_in_after(m, "job-d", since)
    assert active(m, "heartbeat")
    assert m.prop("heartbeat", "MainPID") == pid


def test_broken_restart_is_not_restarted(machine: Machine) -> None:
    m = machine
    # Failures that a restart cannot fix, side by side, so one wait covers all:
    # heartbeat's own EX_CONFIG (the broken file left by test_reload, and a credentials
    # directory it cannot read), a missing credential file, and a state directory that
    # cannot be set up.
    m.write("/etc/heartbeat/nokey.toml", config(9200, []))
    m.write("/etc/heartbeat/blocked.toml", config(9200, []))
    m.write("/etc/heartbeat/blocked.api_key", KEY, mode="0600")
    m.write("/var/lib/heartbeat-blocked", "not a directory\n")
    # An unreadable $CREDENTIALS_DIRECTORY (/root: ProtectHome=yes makes it inaccessible).
    m.write("/etc/heartbeat/nocred.toml", config(9200, []))
    m.write(
        "/etc/systemd/system/heartbeat@nocred.service.d/unreadable.conf",
        "[Service]\nLoadCredential=\nEnvironment=CREDENTIALS_DIRECTORY=/root\n",
    )
    m.systemctl("daemon-reload")
    cursor = m.cursor()
    assert m.systemctl("restart", "heartbeat", check=False).returncode != 0
    for unit in ("heartbeat@nokey", "heartbeat@blocked", "heartbeat@nocred"):
        assert m.systemctl("start", unit, check=False).returncode != 0
    expected = {
        "heartbeat": "status=78/CONFIG",
        "heartbeat@nocred": "status=78/CONFIG",
        "heartbeat@nokey": "status=243/CREDENTIALS",
        "heartbeat@blocked": "status=238/STATE_DIRECTORY",
    }
    for unit, status in expected.items():
        journal = m.journal(unit, cursor)
        assert any(status in line for line in journal), journal
    # The daemon's own account: one line naming the key (or the credential), no traceback.
    for unit, names in (
        ("heartbeat", "schedule.interval"),
        ("heartbeat@nocred", "systemd credential api_key"),
    ):
        journal = m.journal(unit, cursor)
        assert len([line for line in journal if names in line]) == 1, journal
        assert not any("Traceback" in line for line in journal), journal

    time.sleep(15)  # RestartSec=5: a restart loop would have tried twice by now
    for unit in expected:
        state = m.show(unit, "ActiveState", "NRestarts")
        assert state == {"ActiveState": "failed", "NRestarts": "0"}, (unit, state)
    for unit in ("heartbeat@nokey", "heartbeat@blocked", "heartbeat@nocred"):
        m.systemctl("reset-failed", unit)

    m.write("/etc/heartbeat/heartbeat.toml", config(9200, ["job-a", "job-b", "job-d"]))
    m.systemctl("start", "heartbeat")
    assert active(m, "heartbeat")


def test_stop(machine: Machine) -> None:
    m = machine
    cursor = m.cursor()
    started = time.monotonic()
    m.systemctl("stop", "heartbeat")
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT
    assert m.show("heartbeat", "ActiveState", "Result", "ExecMainStatus") == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainStatus": "0",
    }
    event_logged(m, "heartbeat", "daemon_stopped", cursor)
    assert not m.exists("/run/heartbeat")
    saved = json.loads(m.run("cat", "/var/lib/heartbeat/watchlist.json").stdout)
    assert "job-c" in json.dumps(saved)  # the control API's job, saved for the next start

    since = last_seen(m, "job-c")
    m.systemctl("start", "heartbeat")
    assert watched(m)["job-c"] == ["control"]
    checked_in_after(m, "job-c", since)


def test_watchdog_kills_and_restarts_a_stuck_daemon(machine: Machine) -> None:
    m = machine
    dropin = "/etc/systemd/system/heartbeat.service.d/watchdog.conf"
    m.write(dropin, "[Service]\nWatchdogSec=5\n")
    m.systemctl("daemon-reload")
    m.systemctl("restart", "heartbeat")
    pid = m.prop("heartbeat", "MainPID")
    restarts = int(m.prop("heartbeat", "NRestarts"))
    cursor = m.cursor()

    m.run("kill", "-STOP", pid)

    wait_until(
        lambda: any(
            "Failed with result 'watchdog'" in line for line in m.journal("heartbeat", cursor)
        ),
        60,
        "systemd's watchdog to kill the stopped daemon",
    )
    wait_until(
        lambda: active(m, "heartbeat") and m.prop("heartbeat", "MainPID") != pid,
        60,
        "Restart=on-failure to start a new daemon",
    )
    assert int(m.prop("heartbeat", "NRestarts")) == restarts + 1
    assert set(watched(m)) == {"job-a", "job-b", "job-c", "job-d"}

    m.run("rm", dropin)
    m.systemctl("daemon-reload")
    m.systemctl("restart", "heartbeat")


def test_template_beside_the_single_unit(machine: Machine) -> None:
    m = machine
    m.write("/etc/heartbeat/search.toml", config(9201, ["search-1"]))
    m.write("/etc/heartbeat/search.api_key", SEARCH_KEY, mode="0600")
    search_socket = "/run/heartbeat-search/control.sock"

    # After heartbeat.service (its /var/lib/heartbeat is a symlink into /var/lib/private):
    m.systemctl("stop", "heartbeat")
    since = last_seen(m, "search-1", 9201)
    m.systemctl("start", "heartbeat@search")
    assert active(m, "heartbeat@search")
    # Emulator 9201 takes only SEARCH_KEY: the instance read its own credential.
    checked_in_after(m, "search-1", since, 9201)
    assert watched(m, search_socket) == {"search-1": ["config"]}
    m.run(HEARTBEAT, "jobs", "--socket", search_socket, "add", "search-2")
    assert m.exists("/var/lib/private/heartbeat-search/watchlist.json")
    m.systemctl("stop", "heartbeat@search")

    # ...and the other way round, then both together.
    m.systemctl("start", "heartbeat")
    assert active(m, "heartbeat")
    assert m.prop("heartbeat", "NRestarts") == "0"
    m.systemctl("start", "heartbeat@search")
    assert active(m, "heartbeat@search")
    assert set(watched(m, search_socket)) == {"search-1", "search-2"}  # its own state
    assert set(watched(m)) == {"job-a", "job-b", "job-c", "job-d"}
    m.systemctl("stop", "heartbeat")
    assert active(m, "heartbeat@search")
    assert m.exists(search_socket)
    m.systemctl("stop", "heartbeat@search")
    m.systemctl("start", "heartbeat")


def test_security_exposure(machine: Machine) -> None:
    assert exposure(machine, "heartbeat.service") <= 1.2
    assert exposure(machine, "heartbeat@search.service") <= 1.2


def test_sidecar_follows_its_connector_and_its_worker(machine: Machine) -> None:
    m = machine
    install_sidecar(m, KEY)
    cursor = m.cursor()
    m.systemctl("start", "elastic-connectors")
    wait_until(lambda: active(m, SIDECAR), 30, "the sidecar to start with its connector")
    first = worker_found(m, cursor)
    # The drop-in lifts ProtectProc= for the pid probe (test_hardening).
    assert exposure(m, SIDECAR) <= 1.2
    # A job the running worker claimed: vouched for.
    m.emulator(9200, "POST", "/_emulator/jobs", {"job_id": "sc-1"})
    since = last_seen(m, "sc-1")
    m.run(HEARTBEAT, "jobs", "--socket", SIDECAR_SOCKET, "add", "sc-1")
    checked_in_after(m, "sc-1", since)
    time.sleep(3)  # clock_skew = 2: the next incarnation starts clearly after sc-1's claim

    m.systemctl("stop", "elastic-connectors")
    assert m.prop(SIDECAR, "ActiveState") == "inactive"

    cursor = m.cursor()
    m.systemctl("start", "elastic-connectors")
    wait_until(lambda: active(m, SIDECAR), 30, "the sidecar to start again with its connector")
    second = worker_found(m, cursor)
    assert second["started_at"] != first["started_at"]
    # The new incarnation did not claim sc-1 (the saved watch list brought it back): its
    # worker is gone, so heartbeat stops vouching for it.
    removed = event_logged(m, SIDECAR, "job_removed", cursor)
    assert (removed["job_id"], removed["reason"]) == ("sc-1", "worker_restarted"), removed
    assert watched(m, SIDECAR_SOCKET) == {}
    since = last_seen(m, "sc-1")
    m.emulator(9200, "POST", "/_emulator/jobs", {"job_id": "sc-2"})
    m.run(HEARTBEAT, "jobs", "--socket", SIDECAR_SOCKET, "add", "sc-2")
    checked_in_after(m, "sc-2", last_seen(m, "sc-2"))
    assert last_seen(m, "sc-1") == since

    # A crash of the connector (not a stop) takes the sidecar down too: BindsTo=.
    m.systemctl("kill", "--signal=KILL", "elastic-connectors")
    wait_until(
        lambda: m.prop(SIDECAR, "ActiveState") in {"inactive", "failed"},
        30,
        "the sidecar to stop when its connector dies",
    )
