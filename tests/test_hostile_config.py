"""Every config key with hostile values, at start and on SIGHUP, on real processes.

At start (``validate``, ``check-in`` and ``run``): exit 78 with exactly one stderr line,
the same line for all three, naming the key (or the variable, or the file), never a
traceback, never a secret's value. Inputs that are odd but legal are accepted by all
three alike. On SIGHUP (one long-running daemon takes every hostile file in turn):
``config_reload_failed`` naming the key, and the running configuration still in force,
proved by where the check-ins go. The start cases run through tests/hostile_driver.py,
one interpreter for all of them (see its docstring); a few run as their own
``python -m heartbeat`` processes too, to show that the driver sees what an operator sees.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from heartbeat.config import inputs
from heartbeat.emulator import Emulator, serve
from tests.conftest import ES
from tests.helpers_daemon import run_daemon
from tests.support import DELETE, Raw, heartbeat_cli, toml, until, write_config

ROOT = Path(__file__).parent.parent
#: Marks a secret's value: it must never appear in any output.
MARK = "S3CRET-MARK"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once


@dataclass
class Files:
    """Hostile and good files, in a directory other users can traverse."""

    root: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return str(self.paths.get(name, self.root / name))


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    root.chmod(0o755)
    f = Files(root)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    other = ca.issue_cert("127.0.0.2")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    other.private_key_pem.write_to_path(str(root / "other-key.pem"))
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (root / "encrypted-key.pem").write_bytes(encrypted)
    (root / "not-pem.pem").write_text("this is not a certificate\n")
    (root / "fake.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    (root / "huge").write_text("a" * 100_000)
    (root / "crlf").write_text(f"{MARK}\r\nsecond line\n")
    (root / "blank").write_text("\n   \n")
    (root / "binary").write_bytes(b"\xff\xfe" + MARK.encode())
    (root / "good-key").write_text("good-api-key-123\n")
    for name in ("cred-dir", "cred-empty", "cred-fifo"):
        (root / name).mkdir()
    (root / "cred-dir" / "api_key").mkdir()
    (root / "cred-empty" / "api_key").write_text("")
    os.mkfifo(root / "cred-fifo" / "api_key")
    # Readable by root only: another user (the driver drops to nobody) cannot read them.
    (root / "private").write_text("private-key-123\n")
    (root / "private").chmod(0o600)
    (root / "private.toml").write_text('[logging]\nformat = "json"\n')
    (root / "private.toml").chmod(0o600)
    (root / "cred-private").mkdir(mode=0o700)
    (root / "cred-private" / "api_key").write_text("credential-key-123\n")
    (root / "private-ca.pem").write_bytes((root / "ca.pem").read_bytes())
    (root / "private-ca.pem").chmod(0o600)
    yield f
    subprocess.run(["rm", "-rf", str(root)], check=False)


@dataclass
class Case:
    """A hostile input and the key its one error line must name."""

    name: str
    sections: dict[str, dict[str, Any]]
    names: str
    env: dict[str, str] = field(default_factory=dict)


def cases(f: Files) -> list[Case]:
    es = "elasticsearch"
    cert = {"client_cert": f["cert.pem"]}
    c = [
        # [elasticsearch]: TLS files (issue 9 items 1 and 2) ...
        Case("ca not PEM", {es: {"ca_certs": f["not-pem.pem"]}}, "elasticsearch.ca_certs"),
        Case("ca fake PEM", {es: {"ca_certs": f["fake.pem"]}}, "elasticsearch.ca_certs"),
        Case("ca FIFO", {es: {"ca_certs": f["fifo"]}}, "elasticsearch.ca_certs"),
        Case("ca missing", {es: {"ca_certs": f["missing"]}}, "elasticsearch.ca_certs"),
        Case("cert not PEM", {es: {"client_cert": f["not-pem.pem"]}}, "elasticsearch.client_cert"),
        Case("cert is a key", {es: {"client_cert": f["key.pem"]}}, "elasticsearch.client_cert"),
        Case("cert dir", {es: {"client_cert": f["dir"]}}, "elasticsearch.client_cert"),
        Case("cert no key", {es: cert}, "elasticsearch.client_cert"),
        Case(
            "key not PEM",
            {es: {**cert, "client_key": f["not-pem.pem"]}},
            "elasticsearch.client_key",
        ),
        Case(
            "key mismatch",
            {es: {**cert, "client_key": f["other-key.pem"]}},
            "elasticsearch.client_key",
        ),
        Case(
            "key encrypted",
            {es: {**cert, "client_key": f["encrypted-key.pem"]}},
            "elasticsearch.client_key",
        ),
        Case("key dir", {es: {**cert, "client_key": f["dir"]}}, "elasticsearch.client_key"),
        Case("key FIFO", {es: {**cert, "client_key": f["fifo"]}}, "elasticsearch.client_key"),
        Case("key alone", {es: {"client_key": f["key.pem"]}}, "elasticsearch: client_key needs"),
        Case(
            "cert and pin",
            {es: {**cert, "client_key": f["key.pem"], "ssl_assert_fingerprint": "ab" * 32}},
            "elasticsearch.client_cert",
        ),
        # ... secrets (item 10) ...
        Case("api_key empty", {es: {"api_key": ""}}, "elasticsearch.api_key"),
        Case("api_key CRLF", {es: {"api_key": f"{MARK}\r\nx"}}, "elasticsearch.api_key"),
        Case("api_key unicode", {es: {"api_key": f"{MARK}é"}}, "elasticsearch.api_key"),
        Case("api_key number", {es: {"api_key": 12345678}}, "elasticsearch.api_key"),
        Case("api_key huge", {es: {"api_key": MARK * 10_000 + "\x7f"}}, "elasticsearch.api_key"),
        Case("api_key_file CRLF", {es: {"api_key_file": f["crlf"]}}, "elasticsearch.api_key_file"),
        Case(
            "api_key_file blank", {es: {"api_key_file": f["blank"]}}, "elasticsearch.api_key_file"
        ),
        Case("api_key_file dir", {es: {"api_key_file": f["dir"]}}, "elasticsearch.api_key_file"),
        Case("api_key_file FIFO", {es: {"api_key_file": f["fifo"]}}, "elasticsearch.api_key_file"),
        Case(
            "api_key_file missing",
            {es: {"api_key_file": f["missing"]}},
            "elasticsearch.api_key_file",
        ),
        Case("api_key_file huge", {es: {"api_key_file": f["huge"]}}, "elasticsearch.api_key_file"),
        Case(
            "api_key_file binary", {es: {"api_key_file": f["binary"]}}, "elasticsearch.api_key_file"
        ),
        Case(
            "api_key_file device", {es: {"api_key_file": "/dev/zero"}}, "elasticsearch.api_key_file"
        ),
        Case(
            "api_key_file unset variable",
            {es: {"api_key_file": "${CREDENTIALS_DIRECTORY}/api_key"}},
            "api_key_file: ${CREDENTIALS_DIRECTORY}/api_key: $CREDENTIALS_DIRECTORY is not set",
        ),
        Case(
            "password_file FIFO",
            {es: {"username": "u", "password_file": f["fifo"]}},
            "elasticsearch.password_file",
        ),
        Case(
            "password tab",
            {es: {"username": "u", "password": f"{MARK}\t"}},
            "elasticsearch.password",
        ),
        Case("bearer NUL", {es: {"bearer_token": f"{MARK}\u0000"}}, "elasticsearch.bearer_token"),
        Case(
            "username colon", {es: {"username": "a:b", "password": MARK}}, "elasticsearch.username"
        ),
        # ... and the other keys.
        Case("hosts string", {es: {"hosts": "https://es1:9200"}}, "elasticsearch.hosts"),
        Case("hosts empty", {es: {"hosts": []}}, "elasticsearch.hosts"),
        Case("hosts number", {es: {"hosts": [1]}}, "elasticsearch.hosts"),
        Case("hosts no scheme", {es: {"hosts": ["es1:9200"]}}, "elasticsearch.hosts"),
        Case("verify yes", {es: {"verify_certs": "yes"}}, "elasticsearch.verify_certs"),
        Case("verify 1", {es: {"verify_certs": 1}}, "elasticsearch.verify_certs"),
        Case("timeout bool", {es: {"request_timeout": True}}, "elasticsearch.request_timeout"),
        Case("timeout idle", {es: {"request_timeout": 300}}, "elasticsearch.request_timeout"),
        Case("timeout inf", {es: {"request_timeout": math.inf}}, "elasticsearch.request_timeout"),
        Case(
            "cloud_id bad", {es: {"hosts": DELETE, "cloud_id": "x:!!!"}}, "elasticsearch.cloud_id"
        ),
        Case(
            "cloud_id bad host",
            {es: {"hosts": DELETE, "cloud_id": "x:" + base64.b64encode(b"a b:99999$u").decode()}},
            "elasticsearch.cloud_id",
        ),
        Case(
            "fingerprint number",
            {es: {"ssl_assert_fingerprint": 5}},
            "elasticsearch.ssl_assert_fingerprint",
        ),
        # [schedule] (items 7 and 12)
        Case("interval true", {"schedule": {"interval": True}}, "schedule.interval"),
        Case("interval string", {"schedule": {"interval": "30"}}, "schedule.interval"),
        Case("interval tiny", {"schedule": {"interval": 0.01}}, "schedule.interval"),
        Case("interval nan", {"schedule": {"interval": math.nan}}, "schedule.interval"),
        Case("interval huge", {"schedule": {"interval": 1e308}}, "schedule.interval"),
        Case("interval time", {"schedule": {"interval": Raw("07:32:00")}}, "schedule.interval"),
        Case("in_flight true", {"schedule": {"max_in_flight": True}}, "schedule.max_in_flight"),
        Case("in_flight float", {"schedule": {"max_in_flight": 1.5}}, "schedule.max_in_flight"),
        Case("in_flight huge", {"schedule": {"max_in_flight": 10**18}}, "schedule.max_in_flight"),
        Case("jitter false", {"schedule": {"jitter": False}}, "schedule.jitter"),
        Case(
            "shutdown inf",
            {"schedule": {"shutdown_timeout": math.inf}},
            "schedule.shutdown_timeout",
        ),
        Case("idle string", {"schedule": {"idle_after": "300"}}, "schedule.idle_after"),
        Case(
            "status -1",
            {"schedule": {"status_check_interval": -1}},
            "schedule.status_check_interval",
        ),
        Case("ramp 0", {"schedule": {"ramp_rate": 0}}, "schedule.ramp_rate"),
        Case("ramp slow", {"schedule": {"ramp_rate": 0.01}}, "schedule.ramp_rate"),
        Case(
            "status tiny",
            {"schedule": {"status_check_interval": 0.001}},
            "schedule.status_check_interval",
        ),
        Case("multiplier true", {"backoff": {"multiplier": True}}, "backoff.multiplier"),
        Case("backoff max", {"backoff": {"initial": 2, "max": 1}}, "backoff.max"),
        Case("ids string", {"jobs": {"ids": "job-1"}}, "jobs.ids"),
        Case("ids LF", {"jobs": {"ids": ["a\nb"]}}, "jobs.ids"),
        Case("ids huge", {"jobs": {"ids": ["x" * 600]}}, "jobs.ids"),
        Case("jobs file number", {"jobs": {"file": 5}}, "jobs.file"),
        Case("jobs file NUL", {"jobs": {"file": "a\u0000b"}}, "jobs.file"),
        Case("state dir bool", {"state": {"dir": True}}, "state.dir"),
        Case("ca empty", {es: {"ca_certs": ""}}, "elasticsearch.ca_certs: '': is empty"),
        Case(
            "api_key_file empty",
            {es: {"api_key_file": " "}},
            "elasticsearch.api_key_file: ' ': is empty",
        ),
        Case("jobs file empty", {"jobs": {"file": ""}}, "jobs.file: '': is empty"),
        Case("queue http", {"queue": {"url": "http://x"}}, "queue.url"),
        Case("queue option", {"queue": {"url": "redis://h/0?socket_timeout=x"}}, "queue.url"),
        Case(
            "queue password FIFO",
            {"queue": {"url": "redis://127.0.0.1:9/0", "password_file": f["fifo"]}},
            "queue.password_file",
        ),
        Case("queue password LF", {"queue": {"password": f"{MARK}\n"}}, "queue.password"),
        Case("queue shard", {"queue": {"shard": "3/2"}}, "queue.shard"),
        Case(
            "connectors string", {"discovery": {"connector_ids": "c1"}}, "discovery.connector_ids"
        ),
        Case(
            "discovery tiny",
            {"discovery": {"connector_ids": ["c1"], "interval": 0.01}},
            "discovery.interval",
        ),
        Case(
            "discovery slow",
            {"discovery": {"connector_ids": ["c1"], "interval": 300}},
            "discovery.interval",
        ),
        Case("level", {"logging": {"level": "verbose"}}, "logging.level"),
        Case("format number", {"logging": {"format": 1}}, "logging.format"),
        Case("metrics remote", {"metrics": {"listen": "0.0.0.0:9310"}}, "metrics.listen"),
        Case("metrics no port", {"metrics": {"listen": "localhost"}}, "metrics.listen"),
        Case("metrics remote yes", {"metrics": {"allow_remote": "yes"}}, "metrics.allow_remote"),
        Case("socket long", {"control": {"socket": "/" + "s" * 200}}, "control.socket"),
        Case("control no token", {"control": {"listen": "127.0.0.1:9311"}}, "control.listen"),
        Case("token short", {"control": {"token": "short"}}, "control.token"),
        Case("token LF", {"control": {"token": MARK * 2 + "\n"}}, "control.token"),
        Case("token_file FIFO", {"control": {"token_file": f["fifo"]}}, "control.token_file"),
        Case("worker dir", {"worker": {"pid_file": f["dir"]}}, "worker.pid_file"),
        Case("worker url", {"worker": {"health_url": "ftp://x/healthz"}}, "worker.health_url"),
        Case("worker interval", {"worker": {"probe_interval": True}}, "worker.probe_interval"),
        Case(
            "worker threshold", {"worker": {"failure_threshold": 1.5}}, "worker.failure_threshold"
        ),
        Case("section typo", {"schedul": {"interval": 30}}, "schedul: unknown key"),
        Case("key typo", {"schedule": {"intervall": 30}}, "schedule.intervall: unknown key"),
    ]
    return c


#: For each kind of key, a TOML value of another kind.
WRONG_TYPE = {"a list": 5, "true or false": "yes", "a whole number": True, "a number": True}


def wrong_types() -> list[Case]:
    """Every key of every section (added ones too) with a value of the wrong TOML type."""
    found = []
    for section, model in inputs._sections().items():
        for key in model.model_fields:
            value = WRONG_TYPE.get(inputs._expected(section, key), 5)  # strings get 5
            found.append(Case(f"{section}.{key} type", {section: {key: value}}, f"{section}.{key}"))
    return found


#: Odd but legal: validate, check-in (against the emulator) and run accept them alike.
def accepted(f: Files) -> list[Case]:
    return [
        Case("idle_after 30, discovery off", {"schedule": {"interval": 10, "idle_after": 30}}, ""),
        Case("interval at the floor", {"schedule": {"interval": 1}}, ""),
        Case(
            "queue off, its password file missing", {"queue": {"password_file": f["missing"]}}, ""
        ),
        Case("key file with a newline", {"elasticsearch": {"api_key_file": f["good-key"]}}, ""),
        Case(
            "good TLS files",
            {
                "elasticsearch": {
                    "ca_certs": f["ca.pem"],
                    "client_cert": f["cert.pem"],
                    "client_key": f["key.pem"],
                }
            },
            "",
        ),
        Case("ca directory", {"elasticsearch": {"ca_certs": f["dir"]}}, ""),
        Case(
            "documented variables",
            {},
            "",
            env={"HEARTBEAT_CONTROL_TOKEN": "x", "HEARTBEAT_SCHEDULE__INTERVAL": "30"},
        ),
        Case("an env list", {}, "", env={"HEARTBEAT_JOBS__IDS": '["from-env"]'}),
    ]


def env_cases() -> list[Case]:
    """Environment variables (item 8): they are strings, parsed as before."""
    return [
        Case(
            "env section typo",
            {},
            "HEARTBEAT_SCHEDUL__INTERVAL",
            {"HEARTBEAT_SCHEDUL__INTERVAL": "30"},
        ),
        Case(
            "env key typo",
            {},
            "HEARTBEAT_SCHEDULE__INTERVALL",
            {"HEARTBEAT_SCHEDULE__INTERVALL": "30"},
        ),
        Case("env section alone", {}, "HEARTBEAT_SCHEDULE", {"HEARTBEAT_SCHEDULE": "{}"}),
        Case(
            "env list not JSON",
            {},
            "HEARTBEAT_ELASTICSEARCH__HOSTS: expected a JSON list, e.g. '[\"https://es1:9200\"]'",
            {"HEARTBEAT_ELASTICSEARCH__HOSTS": "https://es1:9200"},
        ),
        Case(
            "env number",
            {},
            "(environment HEARTBEAT_SCHEDULE__INTERVAL): schedule.interval",
            {"HEARTBEAT_SCHEDULE__INTERVAL": "often"},
        ),
        Case(
            "env secret LF",
            {},
            "(environment HEARTBEAT_ELASTICSEARCH__API_KEY): elasticsearch.api_key",
            {"HEARTBEAT_ELASTICSEARCH__API_KEY": f"{MARK}\n"},
        ),
    ]


def credential_cases(f: Files) -> list[Case]:
    """systemd's $CREDENTIALS_DIRECTORY (issue 15, defect 2)."""
    return [
        Case(
            f"credential {name}",
            {},
            "systemd credential api_key",
            {"CREDENTIALS_DIRECTORY": f[f"cred-{name}"]},
        )
        for name in ("dir", "empty", "fifo")
    ]


def drive(cases: list[dict[str, Any]], tmp: Path, *, drop_to: int | None = None) -> Any:
    """Run the cases through tests/hostile_driver.py in one subprocess."""
    spec = tmp / f"cases-{drop_to}.json"
    spec.write_text(json.dumps(cases))
    spec.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    if drop_to is not None:
        env["HOSTILE_DROP_TO"] = str(drop_to)
    result = subprocess.run(
        [sys.executable, "-m", "tests.hostile_driver", str(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def commands(path: Path, *, check_in: bool = True) -> list[list[str]]:
    argv = [["validate", "--config", str(path)]]
    if check_in:
        argv.append(["check-in", "--config", str(path), "job-x"])
    return [*argv, ["run", "--config", str(path)]]


def write_case(directory: Path, index: int, text: str) -> Path:
    """Readable by all: the driver may read it as another user."""
    return write_config(directory / f"case-{index}.toml", text, mode=0o644)


def assert_refused(case: Case, outcome: list[dict[str, Any]]) -> None:
    lines = []
    for command in outcome:
        assert command["code"] == 78, (case.name, command)
        assert "Traceback" not in command["stderr"], (case.name, command["stderr"])
        assert MARK not in command["stdout"] + command["stderr"], case.name
        assert command["stdout"] == "", case.name
        lines.append(command["stderr"].splitlines())
    first = lines[0]
    assert len(first) == 1, (case.name, first)
    assert first[0].startswith("heartbeat: configuration error: "), (case.name, first)
    assert case.names in first[0], (case.name, first[0])
    # validate, check-in and run refuse with the same line.
    assert all(other == first for other in lines), (case.name, lines)


#: What every case file has besides its hosts.
JSON_LOGS = {"logging": {"format": "json"}}


def start_cases(files: Files, url: str) -> tuple[list[Case], list[Case], list[dict[str, Any]]]:
    """The refused and the accepted cases, and the driver's specs for both."""
    directory = Path(tempfile.mkdtemp(dir=files.root))
    directory.chmod(0o755)
    refused = cases(files) + wrong_types() + env_cases() + credential_cases(files)
    specs = []
    for index, case in enumerate(refused):
        path = write_case(directory, index, toml(NOWHERE, JSON_LOGS, case.sections))
        specs.append({"commands": commands(path), "env": case.env})
    # The file itself: a directory, a FIFO, missing, not UTF-8, not TOML.
    (directory / "not-utf8.toml").write_bytes(b"[schedule]\ninterval = 5 # \xff\n")
    (directory / "not-toml.toml").write_text("[schedule\n")
    whole_file = {
        files["dir"]: "is a directory",
        files["fifo"]: "is not a regular file",
        files["missing"]: "no such file",
        str(directory / "not-utf8.toml"): "not UTF-8",
        str(directory / "not-toml.toml"): "invalid TOML",
    }
    for path_text, problem in whole_file.items():
        refused.append(Case(f"file {problem}", {}, problem))
        specs.append({"commands": commands(Path(path_text)), "env": {}})
    good = accepted(files)
    for index, case in enumerate(good):
        path = write_case(directory, 1000 + index, toml(url, JSON_LOGS, case.sections))
        specs.append({"commands": commands(path), "env": case.env})
    return refused, good, specs


async def test_hostile_values_at_start(files: Files, tmp_path: Path, es: ES) -> None:
    es.emu.create_job(job_id="job-x")
    refused, good, specs = start_cases(files, es.url)
    # In a worker thread: the emulator answers the accepted cases' check-ins meanwhile.
    results = await anyio.to_thread.run_sync(drive, specs, tmp_path)
    assert len(results) == len(refused) + len(good)
    for case, outcome in zip(refused, results, strict=False):
        assert_refused(case, outcome)
    for case, outcome in zip(good, results[len(refused) :], strict=True):
        validate, check_in, run = outcome
        assert validate["code"] == 0, (case.name, validate)
        assert json.loads(validate["stdout"])["schedule"]["interval"] > 0
        assert check_in["code"] == 0, (case.name, check_in)  # checked in on the emulator
        assert run["code"] == "skipped"  # accepted: the driver starts no daemon
    assert len(es.emu.checkins("job-x")) == len(good)


def test_unreadable_files_at_start(files: Files, tmp_path: Path) -> None:
    """Files another user cannot read: as root, the driver becomes nobody first."""
    directory = Path(tempfile.mkdtemp(dir=files.root))
    directory.chmod(0o755)
    as_root = os.geteuid() == 0
    if not as_root:  # the owner can read a 0600 file; nobody can read a 0000 one
        for name in ("private", "private.toml", "private-ca.pem"):
            Path(files[name]).chmod(0)
        Path(files["cred-private"]).chmod(0)
    refused = [
        Case(
            "api_key_file",
            {"elasticsearch": {"api_key_file": files["private"]}},
            "elasticsearch.api_key_file: cannot read",
        ),
        Case(
            "ca_certs",
            {"elasticsearch": {"ca_certs": files["private-ca.pem"]}},
            "elasticsearch.ca_certs",
        ),
        Case(
            "credentials",
            {},
            "systemd credential api_key: cannot read",
            {"CREDENTIALS_DIRECTORY": files["cred-private"]},
        ),
    ]
    specs = [
        {
            "commands": commands(
                write_case(directory, index, toml(NOWHERE, JSON_LOGS, case.sections))
            ),
            "env": case.env,
        }
        for index, case in enumerate(refused)
    ]
    refused.append(Case("the file", {}, "permission denied"))
    specs.append({"commands": commands(Path(files["private.toml"])), "env": {}})
    results = drive(specs, tmp_path, drop_to=65534 if as_root else None)
    for case, outcome in zip(refused, results, strict=True):
        assert_refused(case, outcome)
        assert "ermission denied" in outcome[0]["stderr"], outcome[0]["stderr"]


#: The config of a daemon that runs and is then sent hostile files.
RUNNING = {
    "elasticsearch": {"request_timeout": 2},
    "schedule": {"interval": 1, "jitter": 0, "shutdown_timeout": 2, "status_check_interval": 0},
    "backoff": {"initial": 0.2, "max": 1},
    "jobs": {"ids": ["job-a"]},
    "logging": {"format": "json", "level": "info"},
}


async def test_hostile_values_on_sighup(files: Files, es: ES, tmp_path: Path) -> None:
    """One daemon, every hostile file in turn: each refused, the running config kept."""
    es.emu.create_job(job_id="job-a")
    other = Emulator()
    other.create_job(job_id="job-b")
    path = tmp_path / "hb.toml"
    path.write_text(toml(es.url, RUNNING))
    async with serve(other) as other_url, run_daemon(path) as daemon:
        await daemon.wait_for("daemon_started")
        await until(lambda: len(es.emu.checkins("job-a")) >= 1, within=10)
        # Were any of these applied, check-ins would go to the other emulator.
        moved = {"elasticsearch": {"hosts": [other_url]}, "jobs": {"ids": ["job-b"]}}
        hostile = cases(files) + wrong_types()
        texts = [toml(es.url, RUNNING, moved, case.sections) for case in hostile]
        # Item 6: a file with no settings in it, as a file caught half-written looks.
        for name, text in [
            ("empty", ""),
            ("comments only", "# heartbeat\n"),
            ("tables only", "[elasticsearch]\n[jobs]\n"),
        ]:
            hostile.append(Case(name, {}, "the file is empty"))
            texts.append(text)
        hostile.append(Case("not TOML", {}, "invalid TOML"))
        texts.append(toml(es.url, RUNNING, moved) + "[schedule\n")
        for count, (case, text) in enumerate(zip(hostile, texts, strict=True), start=1):
            path.write_text(text)
            daemon.signal(signal.SIGHUP)
            failed = await daemon.wait_for("config_reload_failed", count)
            assert case.names in failed["error"], (case.name, failed)
            assert failed["kept"] == "running configuration"
            assert MARK not in failed["error"]
        # The file itself replaced by a FIFO (must not hang), a directory, nothing.
        count = len(hostile)
        for replace, problem in [
            (lambda: os.mkfifo(path), "is not a regular file"),
            (lambda: path.mkdir(), "is a directory"),
            (lambda: None, "no such file"),
        ]:
            path.unlink(missing_ok=True) if not path.is_dir() else path.rmdir()
            replace()
            daemon.signal(signal.SIGHUP)
            count += 1
            failed = await daemon.wait_for("config_reload_failed", count)
            assert problem in failed["error"], failed
        if path.is_dir():
            path.rmdir()
        # Still the running configuration: job-a on the first emulator, nothing elsewhere.
        before = len(es.emu.checkins("job-a"))
        await until(lambda: len(es.emu.checkins("job-a")) >= before + 2, within=10)
        assert other.requests == []
        assert daemon.named("config_reloaded") == []
        assert not [e for e in daemon.events if e.get("event") == "_unparsed"]
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0  # never 1: no reload ended the daemon


async def test_start_only_settings_are_held_and_reported(es: ES, tmp_path: Path) -> None:
    """Item 9: a SIGHUP that changes start-only settings reports every one of them in
    control_restart_needed, starts nothing, and applies the rest."""
    es.emu.create_job(job_id="job-a")
    es.emu.create_job(job_id="job-b")
    path = tmp_path / "hb.toml"
    state = tmp_path / "state"
    started = {"metrics": {"listen": "127.0.0.1:0"}, "state": {"dir": str(state)}}
    path.write_text(toml(es.url, RUNNING, started))
    socket = tmp_path / "control.sock"
    async with run_daemon(path) as daemon:
        await daemon.wait_for("daemon_started")
        changes = {
            "state": {"dir": str(tmp_path / "state2")},
            "metrics": {"listen": "127.0.0.1:1"},
            "control": {"socket": str(socket)},
            "queue": {"url": "redis://127.0.0.1:9/0"},
            "discovery": {"connector_ids": ["c1"]},
            "worker": {"pid_file": str(tmp_path / "worker.pid")},
            "jobs": {"ids": ["job-b"]},  # applies at once
        }
        path.write_text(toml(es.url, RUNNING, started, changes))
        expected = [
            "state.dir",
            "metrics.listen",
            "control.socket",
            "queue.url",
            "discovery.connector_ids",
            "worker.pid_file",
        ]
        for count in (1, 2):  # and again: still needed until a restart
            daemon.signal(signal.SIGHUP)
            needed = await daemon.wait_for("control_restart_needed", count)
            reloaded = await daemon.wait_for("config_reloaded", count)
            assert needed["changed"] == expected
            assert reloaded["restart_needed"] == expected
            assert set(reloaded["changed"]) == set(expected) | ({"jobs"} if count == 1 else set())
        await until(lambda: len(es.emu.checkins("job-b")) >= 1, within=10)
        await anyio.sleep(1.5)  # time for a source that wrongly started to show itself
        assert not socket.exists()
        assert not (tmp_path / "state2").exists()
        started = {e["event"] for e in daemon.events}
        assert not started & {
            "queue_connected",
            "queue_disconnected",
            "control_listening",
            "worker_down",
        }
        listings = [r for r in es.emu.requests if r.action == "list"]
        assert listings == []  # no discovery listing
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_the_driver_sees_what_an_operator_sees(files: Files, tmp_path: Path) -> None:
    """Items 1 and 2 (a ca_certs file that is not PEM) as three real processes each."""
    sections = {"elasticsearch": {"ca_certs": files["not-pem.pem"]}}
    path = write_case(tmp_path, 0, toml(NOWHERE, JSON_LOGS, sections))
    (driven,) = drive([{"commands": commands(path), "env": {}}], tmp_path)
    for argv, seen in zip(commands(path), driven, strict=True):
        code, out, err = anyio.run(partial(heartbeat_cli, *argv))
        assert (code, out, err) == (seen["code"], seen["stdout"], seen["stderr"])
        assert code == 78
        assert "elasticsearch.ca_certs" in err


async def test_what_validate_accepts_run_starts_with(files: Files, es: ES, tmp_path: Path) -> None:
    """The accepted cases, each as a real daemon: it starts, checks in, stops with 0."""
    good = accepted(files)
    # The job each daemon checks in: its own, or the one its environment names.
    jobs = [
        json.loads(case.env.get("HEARTBEAT_JOBS__IDS", "[]") or "[]")[:1] or [f"job-{index}"]
        for index, case in enumerate(good)
    ]
    for (job_id,) in jobs:
        es.emu.create_job(job_id=job_id)
    paths = []
    for index, case in enumerate(good):
        own = {"jobs": {"ids": [f"job-{index}"]}}
        paths.append(tmp_path / f"good-{index}.toml")
        paths[-1].write_text(toml(es.url, RUNNING, own, case.sections))
    codes: dict[str, int] = {}

    async def one(index: int, case: Case) -> None:
        async with run_daemon(paths[index], env=case.env) as daemon:
            await daemon.wait_for("daemon_started", within=30)
            await until(lambda: len(es.emu.checkins(jobs[index][0])) >= 1, within=30)
            daemon.signal(signal.SIGTERM)
            codes[case.name] = await daemon.wait()

    async with anyio.create_task_group() as tg:
        for index, case in enumerate(good):
            tg.start_soon(one, index, case)
    assert codes == {case.name: 0 for case in good}
