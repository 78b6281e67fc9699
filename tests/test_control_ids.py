"""Any valid job id survives the control API verbatim: hypothesis against a real
``heartbeat run`` subprocess, through its real Unix socket, with the emulator (also a
subprocess) as Elasticsearch."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings

from tests.helpers_control import QUIET_DAEMON, short_dir
from tests.strategies import job_ids
from tests.support import toml, write_config


class UnixConnection(http.client.HTTPConnection):
    """http.client over a Unix socket; the request target is sent exactly as given."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.socket_path))
        self.sock = sock


def call(path: Path, method: str, target: str) -> tuple[int, Any]:
    connection = UnixConnection(path)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def segment(job_id: str) -> str:
    encoded = quote(job_id, safe="")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def wait_until(predicate: Any, what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def emulator_url(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        if line.startswith("emulator_listening url="):
            return line.partition("=")[2]
    return None


def accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Path, str]]:
    """(control socket, emulator URL) of a ``heartbeat run`` subprocess."""
    with short_dir() as tmp:
        log = tmp / "emulator.log"
        with log.open("w") as out:
            emulator = subprocess.Popen(
                [sys.executable, "-m", "heartbeat", "emulator", "--port", "0"], stdout=out
            )
        daemon = None
        try:
            url = wait_until(lambda: emulator_url(log), "the emulator")
            sock = tmp / "c.sock"
            config = write_config(
                tmp / "hb.toml", toml(url, QUIET_DAEMON, control={"socket": sock})
            )
            daemon = subprocess.Popen(
                [sys.executable, "-m", "heartbeat", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
            )
            wait_until(lambda: accepts(sock) or daemon.poll() is not None, "the daemon")
            assert daemon.poll() is None, "the daemon exited"
            yield sock, url
        finally:
            for process in (daemon, emulator):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=15)


@settings(max_examples=75, deadline=None)
@given(job_id=job_ids)
def test_any_valid_id_round_trips(daemon: tuple[Path, str], job_id: str) -> None:
    sock, url = daemon
    request = urllib.request.Request(  # noqa: S310 (the emulator, on loopback)
        f"{url}/_emulator/jobs",
        data=json.dumps({"job_id": job_id}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # A 400 is an id hypothesis tried before: the emulator has it already.
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
    target = "/jobs/" + segment(job_id)
    status, body = call(sock, "PUT", target)
    assert (status, body["id"]) in {(201, job_id), (200, job_id)}
    status, got = call(sock, "GET", target)
    assert (status, got["id"]) == (200, job_id)
    status, listing = call(sock, "GET", "/jobs")
    assert job_id in {job["id"] for job in listing["jobs"]}
    status, removed = call(sock, "DELETE", target)
    assert (status, removed["id"], removed["removed"]) == (200, job_id, True)
    assert call(sock, "GET", target)[0] == 404
