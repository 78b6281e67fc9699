"""A real systemd (PID 1) in a podman container, for the systemd test.

Owns building the test image (scripts/base-image, then tests/systemd_container/
Containerfile with the heartbeat wheel built from this checkout), booting it in one of
two modes, and the few things the test does inside: run a command, write a file, ask
``systemctl show``, read the journal, talk to the emulator's control API. It asserts
nothing about heartbeat; test_units.py and test_hardening.py do.

Modes (found by trying on this machine kind, podman 4.3 with runc, Debian 12):

* ``unprivileged``: ``podman run --systemd=always IMAGE /sbin/init``. Boots in about
  half a second. systemd silently skips ``ProtectProc=``, ``ProcSubset=``,
  ``DevicePolicy=`` and ``IPAddressDeny=`` there, for container reasons that do not
  occur on a host; everything else in the units applies.
* ``host``: ``--privileged --cgroupns=private``, with ``mount --make-rshared /`` before
  ``exec /sbin/init`` (``--privileged`` alone leaves the root mount private, and
  ``LoadCredential=`` then fails). Every directive applies, as on a host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = REPO / "ci" / "containers.conf"
#: Bump the number when the package list changes: scripts/base-image keeps an existing tag.
BASE_IMAGE = "localhost/heartbeat-base-systemd:1"
BASE_PACKAGES = ("systemd", "systemd-sysv", "procps")
IMAGE = "localhost/heartbeat-systemd-test:latest"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MODES = ("unprivileged", "host")

T = TypeVar("T")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def _run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=podman_env(), text=True, timeout=timeout, check=False, **kwargs)


def build_image(workdir: Path) -> str:
    """The test image, from this checkout's wheel; podman's layer cache keeps rebuilds short."""
    base = _run([str(REPO / "scripts" / "base-image"), BASE_IMAGE, *BASE_PACKAGES], timeout=600)
    assert base.returncode == 0, "scripts/base-image failed (its output is above)"

    context = workdir / "context"
    (context / "units").mkdir(parents=True)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (context / "requirements.txt").write_text("\n".join(project["dependencies"]) + "\n")
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
         str(context / "wheels"), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    for unit in [*(REPO / "systemd").glob("*.service"), *(HERE / "files").iterdir()]:
        shutil.copy(unit, context / "units" / unit.name)
    shutil.copy(REPO / "systemd" / "heartbeat-sidecar.example.conf", context)

    build = _run(
        [
            "podman", "build", "--quiet", "--build-arg", f"BASE={BASE_IMAGE}",
            # pip in the build trusts what the host trusts (a proxy's CA, say): the
            # bundle is mounted into the build steps only, never into the image.
            "--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
            "--file", str(HERE / "Containerfile"), "--tag", IMAGE, str(context),
        ],
        capture_output=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    return IMAGE


@dataclass
class Machine:
    """One booted container; every method runs something inside it."""

    name: str
    mode: str

    @classmethod
    def boot(cls, image: str, mode: str, name: str) -> Machine:
        flags = ["--systemd=always"]
        command = ["/sbin/init"]
        if mode == "host":
            flags += ["--privileged", "--cgroupns=private"]
            command = ["/bin/sh", "-c", "mount --make-rshared / && exec /sbin/init"]
        _run(["podman", "rm", "--force", "--time", "0", name], timeout=60, capture_output=True)
        started = _run(
            ["podman", "run", "--detach", "--name", name, *flags, image, *command],
            timeout=120,
            capture_output=True,
        )
        assert started.returncode == 0, started.stderr
        machine = cls(name, mode)

        def booted() -> str | None:
            # Until PID 1 has its bus up, systemctl fails to connect: ask again.
            state = machine.run("systemctl", "is-system-running", "--wait", check=False)
            return state.stdout.strip() if state.stdout.strip() != "offline" else None

        state = wait_until(booted, 120, f"systemd to boot in {name}")
        assert state in {"running", "degraded"}, machine.run("systemctl", "--failed").stdout
        return machine

    def remove(self) -> None:
        _run(["podman", "rm", "--force", "--time", "0", self.name], timeout=60, capture_output=True)

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = _run(
            ["podman", "exec", *(["--interactive"] if stdin is not None else []), self.name, *argv],
            timeout=timeout,
            capture_output=True,
            input=stdin,
        )
        if check:
            assert result.returncode == 0, (
                f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run(
            "/bin/sh", "-c", f"mkdir -p \"$(dirname '{path}')\" && umask 077 && "
            f"cat > '{path}' && chmod {mode} '{path}'",
            stdin=text,
        )  # fmt: skip

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=120)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name)[name]

    def cursor(self) -> str:
        out = self.run("journalctl", "--show-cursor", "--lines=0", "--quiet").stdout
        return out.strip().removeprefix("-- cursor: ")

    def journal(self, unit: str, after: str | None = None) -> list[str]:
        """The unit's journal messages (the daemon's and systemd's about it), in order."""
        argv = ["journalctl", "--no-pager", "--output=json", f"--unit={unit}"]
        if after:
            argv.append(f"--after-cursor={after}")
        messages = []
        for line in self.run(*argv).stdout.splitlines():
            message = json.loads(line).get("MESSAGE", "")
            if isinstance(message, list):  # journald sends non-UTF-8 text as bytes
                message = bytes(message).decode("utf-8", "replace")
            messages.append(message)
        return messages

    def events(self, unit: str, after: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines in the unit's journal."""
        events = []
        for message in self.journal(unit, after):
            if message.startswith("{"):
                events.append(json.loads(message))
        return events

    def emulator(self, port: int, method: str, path: str, body: Any = None) -> Any:
        """The emulator's control API (``/_emulator/...``), from inside the container."""
        script = (
            "import json, sys, urllib.request\n"
            "method, url, body = sys.argv[1:]\n"
            "data = None if body == 'null' else body.encode()\n"
            "request = urllib.request.Request(url, data=data, method=method,"
            " headers={'content-type': 'application/json'})\n"
            "print(urllib.request.urlopen(request, timeout=10).read().decode())\n"
        )
        url = f"http://127.0.0.1:{port}{path}"
        out = self.run("/opt/heartbeat/bin/python", "-c", script, method, url, json.dumps(body))
        return json.loads(out.stdout)


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.25)
