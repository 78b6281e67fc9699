"""The sandboxing directives that the unprivileged container mode skips, in the host-like
mode (see machine.py), where systemd applies every directive as on a host:

* ``ProtectProc=invisible`` and ``ProcSubset=pid``: the daemon's /proc is mounted with
  ``hidepid=invisible,subset=pid``;
* ``DevicePolicy=closed``: the unit's device cgroup allows only the pseudo devices
  (null, zero, full, random, urandom, tty, ptmx, pts);
* ``IPAddressDeny=`` / ``IPAddressAllow=``, docs/operations.md's "network pinning" drop-in:
  with ``IPAddressAllow=localhost``, check-ins to 127.0.0.1 go on, and those to the
  container's own non-loopback address never arrive, though the same instance reaches
  that address without the drop-in;
* the sidecar drop-in's ``ProtectProc=default``: under the rest of the sandbox, the
  ``[worker] pid_file`` probe still finds the connector's process.

Everything else is proven in the unprivileged mode by test_units.py; this module runs
only the start it needs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.systemd_container.lifecycle import (
    SIDECAR,
    active,
    assert_no_secret_logged,
    checked_in_after,
    config,
    event_logged,
    install_sidecar,
    last_seen,
    start_emulator,
    worker_found,
)
from tests.systemd_container.machine import Machine, wait_until

pytestmark = pytest.mark.timeout(300)

KEY = f"systemd-hardening-{secrets.token_hex(8)}"
PIN = "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\n"


@pytest.fixture(scope="module")
def machine(machine_for: Callable[[str], Machine]) -> Iterator[Machine]:
    m = machine_for("host")
    # A second emulator on every address (port 9202), to be reached from outside loopback.
    m.write(
        "/etc/systemd/system/heartbeat-emulator@9202.service.d/everywhere.conf",
        "[Service]\nExecStart=\nExecStart=/opt/heartbeat/bin/heartbeat emulator"
        " --host 0.0.0.0 --port 9202 --api-key-file /etc/heartbeat-emulator/9202.api_key\n",
    )
    m.systemctl("daemon-reload")
    start_emulator(m, 9200, KEY, ["job-a"])
    start_emulator(m, 9202, KEY, ["remote-1"])
    m.write("/etc/heartbeat/heartbeat.toml", config(9200, ["job-a"]))
    m.write("/etc/heartbeat/api_key", KEY, mode="0600")
    since = last_seen(m, "job-a")
    m.systemctl("start", "heartbeat")
    assert active(m, "heartbeat")
    checked_in_after(m, "job-a", since)  # LoadCredential= works in this mode too
    yield m
    assert_no_secret_logged(m, KEY)


def test_proc_shows_the_daemon_only_itself(machine: Machine) -> None:
    pid = machine.prop("heartbeat", "MainPID")
    mounts = machine.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines()
    proc = [line for line in mounts if line.split()[4] == "/proc"]
    assert len(proc) == 1, mounts
    options = proc[0].split(" - ")[1].split()[2].split(",")
    assert {"hidepid=invisible", "subset=pid"} <= set(options), proc


def test_device_cgroup_allows_only_pseudo_devices(machine: Machine) -> None:
    allowed = machine.run(
        "cat", "/sys/fs/cgroup/devices/system.slice/heartbeat.service/devices.list"
    ).stdout.split("\n")
    assert "a *:* rwm" not in allowed  # the cgroup default: every device
    for device in ("c 1:3 rwm", "c 1:8 rwm", "c 1:9 rwm"):  # null, random, urandom
        assert device in allowed
    majors = {line.split()[1].split(":")[0] for line in allowed if line}
    assert majors <= {"0", "1", "5", "136"}, allowed  # mem, tty/ptmx, pts


def test_network_pinning_drop_in(machine: Machine) -> None:
    m = machine
    address = m.run("hostname", "-I").stdout.split()[0]
    assert not address.startswith("127.")
    m.write("/etc/heartbeat/remote.toml", config(9202, ["remote-1"], address=address))
    m.write("/etc/heartbeat/remote.api_key", KEY, mode="0600")

    # Unpinned, the instance reaches the emulator on the container's own address.
    since = last_seen(m, "remote-1", 9202)
    m.systemctl("start", "heartbeat@remote")
    checked_in_after(m, "remote-1", since, 9202)
    m.systemctl("stop", "heartbeat@remote")

    # Pinned to localhost: every check-in to that address is cut, silently for the
    # network (a timeout), loudly in the log.
    m.write("/etc/systemd/system/heartbeat@remote.service.d/pin.conf", PIN)
    m.write("/etc/systemd/system/heartbeat.service.d/pin.conf", PIN)
    m.systemctl("daemon-reload")
    cursor = m.cursor()
    m.systemctl("start", "heartbeat@remote")
    m.systemctl("restart", "heartbeat")
    since = last_seen(m, "remote-1", 9202)
    failed = event_logged(m, "heartbeat@remote", "checkin_failed", cursor)
    assert failed["reason"] in {"timeout", "connection"}, failed
    assert last_seen(m, "remote-1", 9202) == since

    # ...while the single unit, pinned the same way, still checks in over loopback.
    since = last_seen(m, "job-a")
    checked_in_after(m, "job-a", since)
    assert active(m, "heartbeat")
    m.systemctl("stop", "heartbeat@remote")


def test_sidecar_sees_its_worker(machine: Machine) -> None:
    # ProtectProc=invisible hides the connector's process from the dynamic user (the
    # sidecar drop-in lifts it) and ProcSubset=pid hides /proc/stat (the probe reads the
    # boot time from CLOCK_BOOTTIME instead): the probe must still find the worker.
    m = machine
    install_sidecar(m, KEY)
    cursor = m.cursor()
    m.systemctl("start", "elastic-connectors")
    wait_until(lambda: active(m, SIDECAR), 30, "the sidecar to start with its connector")
    worker_found(m, cursor)
    m.systemctl("stop", "elastic-connectors")
