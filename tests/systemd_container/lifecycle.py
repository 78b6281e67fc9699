"""What the systemd tests do with heartbeat inside a booted machine.

Owns the emulator units (``heartbeat-emulator@PORT``, each requiring its own API key),
the configuration files the tests write, and the operator's view of the daemon: the
emulator's record of accepted check-ins, ``heartbeat jobs list``, the daemon's events in
the journal, ``systemctl show``. machine.py owns the container itself.
"""

from __future__ import annotations

import json
from datetime import datetime

from tests.systemd_container.machine import Machine, wait_until

HEARTBEAT = "/opt/heartbeat/bin/heartbeat"
SHUTDOWN_TIMEOUT = 10


def config(port: int, ids: list[str], extra: str = "", address: str = "127.0.0.1") -> str:
    return (
        f'[elasticsearch]\nhosts = ["http://{address}:{port}"]\nrequest_timeout = 2\n'
        f"[schedule]\ninterval = 2\nshutdown_timeout = {SHUTDOWN_TIMEOUT}\n"
        f"[jobs]\nids = {json.dumps(ids)}\n{extra}"
    )


def start_emulator(m: Machine, port: int, key: str, jobs: list[str]) -> None:
    """``heartbeat-emulator@PORT``, requiring ``key``, holding ``jobs`` (in progress)."""
    m.write(f"/etc/heartbeat-emulator/{port}.api_key", key, mode="0600")
    m.systemctl("start", f"heartbeat-emulator@{port}")
    wait_until(lambda: _emulator_up(m, port), 30, f"the emulator on port {port}")
    for job in jobs:
        m.emulator(port, "POST", "/_emulator/jobs", {"job_id": job})


def _emulator_up(m: Machine, port: int) -> bool:
    probe = (
        "import urllib.request\n"
        f"urllib.request.urlopen('http://127.0.0.1:{port}/_emulator/requests', timeout=5)\n"
    )
    return m.run("/opt/heartbeat/bin/python", "-c", probe, check=False).returncode == 0


def last_seen(m: Machine, job: str, port: int = 9200) -> datetime:
    """The job's ``last_seen``: it moves only on a check-in the emulator accepted."""
    document = m.emulator(port, "GET", f"/_emulator/jobs/{job}")
    return datetime.fromisoformat(document["last_seen"])


def checked_in_after(m: Machine, job: str, since: datetime, port: int = 9200) -> None:
    """Wait for a check-in of ``job`` that the emulator accepted after ``since``."""
    wait_until(lambda: last_seen(m, job, port) > since, 30, f"an accepted check-in of {job}")


def watched(m: Machine, *socket: str) -> dict[str, list[str]]:
    """``heartbeat jobs list --json``: id -> sources."""
    argv = [HEARTBEAT, "jobs", *(["--socket", socket[0]] if socket else []), "list", "--json"]
    jobs = json.loads(m.run(*argv).stdout)["jobs"]
    return {job["id"]: job["sources"] for job in jobs}


def event_logged(m: Machine, unit: str, event: str, after: str) -> dict[str, object]:
    """Wait for the daemon's ``event`` in the unit's journal after the cursor ``after``."""

    def find() -> dict[str, object] | None:
        return next((e for e in m.events(unit, after) if e.get("event") == event), None)

    return wait_until(find, 30, f"{event} in the journal of {unit}")


def active(m: Machine, unit: str) -> bool:
    state = m.show(unit, "ActiveState", "SubState")
    return state == {"ActiveState": "active", "SubState": "running"}


def assert_no_secret_logged(m: Machine, *secrets: str) -> None:
    """No secret in any journal line of the machine: the daemon's, systemd's, the emulator's."""
    journal = m.run("journalctl", "--no-pager", "--output=cat").stdout
    for secret in secrets:
        assert secret not in journal


SIDECAR = "heartbeat@elastic-connectors.service"
SIDECAR_SOCKET = "/run/heartbeat-elastic-connectors/control.sock"
WORKER_PID_FILE = "/run/elastic-connectors/worker.pid"


def install_sidecar(m: Machine, key: str) -> None:
    """docs/operations.md's step 10, word for word (the example file ships in the image), for an
    instance whose worker probe reads the stand-in connector's pid file."""
    m.write(
        "/etc/heartbeat/elastic-connectors.toml",
        config(9200, [], f'[worker]\npid_file = "{WORKER_PID_FILE}"\nclock_skew = 2\n'),
    )
    m.write("/etc/heartbeat/elastic-connectors.api_key", key, mode="0600")
    m.sh(
        "install -D -m 0644 /usr/share/heartbeat/heartbeat-sidecar.example.conf"
        " /etc/systemd/system/heartbeat@elastic-connectors.service.d/sidecar.conf"
        " && systemctl daemon-reload"
        " && systemctl add-wants elastic-connectors.service heartbeat@elastic-connectors.service"
    )


def worker_found(m: Machine, after: str) -> dict[str, object]:
    """The sidecar's ``worker_found`` after ``after``, once it names the connector's pid."""
    found = event_logged(m, SIDECAR, "worker_found", after)
    assert str(found["pid"]) == m.prop("elastic-connectors", "MainPID"), found
    return found


def exposure(m: Machine, unit: str) -> float:
    """``systemd-analyze security UNIT``'s overall exposure level, inside the machine."""
    out = m.run("systemd-analyze", "security", "--no-pager", unit).stdout
    return float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
