"""``heartbeat jobs list | add | remove | show | dropped | restore``: the control API
from the command line.

Owns finding the daemon (``--socket PATH``, else ``--url URL``, else ``[control]
socket`` of the configuration file, else its ``[control] listen`` with ``token_file``,
else ``/run/heartbeat/control.sock``), the requests, and turning answers into text (or
``--json``) and exit codes: 0 done, 1 a job to show or remove is not watched (or to
restore is not a dropped job), 2 anything else (cannot connect, refused, bad id).
``add`` sends many ids in batches under the API's 64 KiB body limit and reports each
batch on stderr.

Only the ``[control]`` section of the configuration is read: the rest (the
Elasticsearch credentials above all) may be unreadable to the operator running this.
A token (for ``--url``) comes from ``--token-file`` or ``$HEARTBEAT_CONTROL_TOKEN``,
never from the command line, where other users could read it in the process list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from heartbeat.errors import ConfigError, InvalidJobId
from heartbeat.jobid import validate_job_id

EXIT_OK = 0
EXIT_NOT_WATCHED = 1
EXIT_FAILED = 2

DEFAULT_SOCKET = Path("/run/heartbeat/control.sock")
TOKEN_ENV = "HEARTBEAT_CONTROL_TOKEN"  # noqa: S105 (a variable name)
SOCKET_ENV = "HEARTBEAT_CONTROL__SOCKET"
TIMEOUT = 60.0
#: POST /jobs bodies are kept under the server's 64 KiB limit.
BATCH_BYTES = 60 * 1024

EPILOG = """\
the daemon: --socket PATH, else --url URL (with --token-file PATH or
$HEARTBEAT_CONTROL_TOKEN), else [control] socket in --config's file, else its
[control] listen (with its token_file), else /run/heartbeat/control.sock.
exit codes: 0 ok, 1 a job to show or remove is not watched, 2 any other failure.
"""


class Failure(Exception):
    """A failure to report on stderr with exit status 2."""


@dataclass(frozen=True)
class Target:
    """Where the daemon's control API is: a Unix socket, or a base URL with a token."""

    socket: Path | None
    url: str | None
    token: str | None

    def describe(self) -> str:
        return f"the control socket {self.socket}" if self.socket else f"{self.url}"


def add_jobs_parser(commands: Any) -> None:
    """Add ``jobs`` and its sub-commands to ``heartbeat``'s sub-command parsers."""

    def options(parser: argparse.ArgumentParser, default: Any) -> None:
        # On ``jobs`` and on each sub-command, so they go before or after it; the
        # sub-commands' SUPPRESS defaults do not overwrite values given before.
        parser.add_argument(
            "--config",
            metavar="PATH",
            default=default,
            help="read [control] socket (or listen and token_file) from here",
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--socket", metavar="PATH", default=default, help="control socket")
        where.add_argument(
            "--url",
            metavar="URL",
            default=default,
            help="control API over TCP, e.g. http://127.0.0.1:9311",
        )
        parser.add_argument(
            "--token-file",
            metavar="PATH",
            default=default,
            help=f"file holding the bearer token for --url (or set ${TOKEN_ENV})",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS if default is argparse.SUPPRESS else False,
            help="print the API's JSON answer",
        )

    jobs = commands.add_parser(
        "jobs",
        help="list, add, remove or show watched jobs through the running daemon",
        description="Talk to a running daemon's control API ([control] in the config).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options(jobs, None)
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    for name, help_text, nargs in (
        ("list", "every watched job, with its sources and timing", None),
        ("add", "watch these ids (source 'control'); saved before the answer", "+"),
        ("remove", "stop watching these ids (exit 1 if one was not watched)", "+"),
        ("show", "one job (exit 1 if it is not watched)", None),
        ("dropped", "the dropped jobs that can be restored (last 1,000 or 24 h)", None),
        ("restore", "watch dropped jobs again, with their former sources", "+"),
    ):
        action = actions.add_parser(
            name,
            help=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        options(action, argparse.SUPPRESS)
        if name == "show":
            action.add_argument("id", metavar="ID", help="sync job id")
        elif nargs:
            action.add_argument("ids", metavar="ID", nargs=nargs, help="sync job ids")
        if name == "add":
            action.add_argument(
                "--ttl",
                metavar="SECONDS",
                type=_ttl_arg,
                default=None,
                help="the claims end unless renewed (added again) within SECONDS (at least 1)",
            )


def _ttl_arg(text: str) -> float:
    from heartbeat.leases import check_ttl  # only when --ttl is given: start-up stays fast

    try:
        return check_ttl(text, "--ttl")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_jobs(args: argparse.Namespace) -> int:
    import anyio

    try:
        target = resolve_target(args)
        ids = [args.id] if args.jobs_command == "show" else list(getattr(args, "ids", []))
        for job_id in ids:
            validate_job_id(job_id)
        ttl = getattr(args, "ttl", None)
        return anyio.run(run, target, args.jobs_command, ids, bool(args.json), ttl)
    except (Failure, InvalidJobId, ConfigError) as exc:
        print(f"heartbeat jobs: {exc}", file=sys.stderr)
        return EXIT_FAILED


def resolve_target(args: argparse.Namespace) -> Target:
    token = _token(args.token_file)
    if args.url is not None:
        return Target(socket=None, url=_checked_url(str(args.url)), token=token)
    if args.socket is not None:
        if not args.socket:
            raise Failure("--socket: the path is empty")
        return Target(socket=Path(args.socket), url=None, token=token)
    return configured_target(args.config, token)


def _checked_url(url: str) -> str:
    """``--url`` as the base of every request, or Failure naming what is wrong with it
    (never echoing a password it holds)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        raise Failure(f"--url: not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Failure(f"--url {_shown(url)} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise Failure("--url must not hold credentials: give the token with --token-file")
    if not parts.hostname:
        raise Failure(f"--url {_shown(url)} has no host")
    if parts.query or parts.fragment:
        raise Failure(f"--url {_shown(url)}: give the base URL only, no ? or #")
    return url.rstrip("/")


def _token(path: str | None) -> str | None:
    if path:
        return _read_token(path, "--token-file")
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _read_token(path: str | Path, what: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise Failure(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Failure(f"{what}: {path} is not UTF-8 text") from None
    if not token:
        raise Failure(f"{what}: {path} is empty")
    return token


def configured_socket(explicit: str | None) -> Path:
    """``[control] socket`` from the configuration file, else the default path."""
    target = configured_target(explicit, None)
    return target.socket or DEFAULT_SOCKET


def configured_target(explicit: str | None, token: str | None) -> Target:
    """Where the configuration file says the daemon listens: ``[control] socket``; else,
    when only ``[control] listen`` is set, that address, with ``token_file`` (or
    ``token``) unless a token was given; else the default socket path.

    A missing file is only an error when it was asked for (``--config`` or
    ``$HEARTBEAT_CONFIG``)."""
    from pydantic import ValidationError

    from heartbeat import config as configuration

    if os.environ.get(SOCKET_ENV):
        return Target(socket=Path(os.environ[SOCKET_ENV]), url=None, token=token)
    path = configuration.config_path(explicit, os.environ)
    asked = bool(explicit or os.environ.get(configuration.ENV_PATH))
    try:
        data = configuration.read_file(path)
    except ConfigError:
        if asked:
            raise
        return Target(socket=DEFAULT_SOCKET, url=None, token=token)
    section = data.get("control") or {}
    if not isinstance(section, dict):
        raise ConfigError("expected a table", key="control", source=str(path))
    try:
        control = configuration.ControlSettings.model_validate(section)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(["control", *(str(part) for part in error["loc"])])
        raise ConfigError(str(error["msg"]), key=key, source=str(path)) from None
    address = control.address()
    if control.socket is not None or address is None:
        return Target(socket=control.socket or DEFAULT_SOCKET, url=None, token=token)
    host, port = address
    if port == 0:
        raise Failure(
            f"{path}: control.listen has port 0 (any free port): give --url with the "
            "address the daemon logged in control_listening"
        )
    # A wildcard address is reached over loopback.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if token is None and control.token_file is not None:
        token = _read_token(control.token_file, f"{path}: control.token_file")
    elif token is None and control.token is not None:
        token = control.token.get_secret_value()
    return Target(socket=None, url=url, token=token)


async def run(
    target: Target, command: str, ids: list[str], as_json: bool, ttl: float | None = None
) -> int:
    import aiohttp

    connector = aiohttp.UnixConnector(path=str(target.socket)) if target.socket else None
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        client = _Client(session, target)
        if command == "list":
            return await _list(client, as_json)
        if command == "show":
            return await _show(client, ids[0], as_json)
        if command == "add":
            return await _add(client, ids, as_json, ttl)
        if command == "dropped":
            return await _dropped(client, as_json)
        if command == "restore":
            return await _restore(client, ids, as_json)
        return await _remove(client, ids, as_json)


class _Client:
    def __init__(self, session: Any, target: Target) -> None:
        self.session = session
        self.target = target
        self.base = target.url or "http://localhost"

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON) of one request; Failure for anything but an answer."""
        import aiohttp
        from yarl import URL

        # encoded=True: yarl must not resolve a "%2E%2E" or "%2F" in an id.
        url = URL(self.base + path, encoded=True)
        try:
            async with self.session.request(method, url, json=body) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise Failure(_cannot_connect(self.target, exc.os_error)) from None
        except aiohttp.ClientError as exc:
            raise Failure(f"{self.target.describe()}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise Failure(f"{self.target.describe()}: no answer within {TIMEOUT:g} s") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise Failure(f"{self.target.describe()}: HTTP {status}, not a JSON answer") from None
        if status == 401:
            raise Failure(
                f"{self.target.describe()}: 401, missing or wrong token "
                f"(--token-file PATH or ${TOKEN_ENV})"
            )
        if status >= 400 and status != 404:
            error = payload.get("error") if isinstance(payload, dict) else None
            raise Failure(f"{self.target.describe()}: HTTP {status}: {error or payload}")
        return status, payload


def _cannot_connect(target: Target, error: OSError) -> str:
    reason = error.strerror or str(error)
    if target.socket is None:
        return f"cannot connect to {target.url}: {reason}"
    hint = {
        "ENOENT": "no such socket: is heartbeat running, with [control] socket set?",
        "ECONNREFUSED": "nothing is listening: is heartbeat running?",
        "EACCES": "permission denied: run this as the daemon's user or root",
    }
    import errno

    name = errno.errorcode.get(error.errno or 0, "")
    return f"cannot connect to the control socket {target.socket}: {hint.get(name, reason)}"


def _path(job_id: str) -> str:
    encoded = quote(job_id, safe="")
    return "/jobs/" + ("%2E" * len(encoded) if encoded in {".", ".."} else encoded)


def _shown(job_id: str) -> str:
    return job_id if job_id.isprintable() else repr(job_id)


def _ago(iso: str | None, now: float, *, future: bool = False) -> str:
    if iso is None:
        return "never" if not future else "-"
    seconds = datetime.fromisoformat(iso).timestamp() - now
    if future:
        return f"in {max(seconds, 0):.0f} s"
    return f"{max(-seconds, 0):.0f} s ago"


async def _list(client: _Client, as_json: bool) -> int:
    _, payload = await client.request("GET", "/jobs")
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return EXIT_OK
    jobs = payload.get("jobs", [])
    if not jobs:
        print("no jobs watched")
        return EXIT_OK
    now = time.time()
    rows = [("ID", "SOURCES", "LAST SUCCESS", "NEXT DUE", "FAILURES", "EXPIRES", "LAST ERROR")]
    for job in sorted(jobs, key=lambda j: j["id"]):
        rows.append(
            (
                _shown(job["id"]),
                ",".join(job["sources"]),
                _ago(job["last_success"], now),
                _ago(job["next_due"], now, future=True),
                str(job["consecutive_failures"]),
                _ago(job.get("expires_at"), now, future=True),
                job["last_error"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[6]]).rstrip())
    return EXIT_OK


async def _show(client: _Client, job_id: str, as_json: bool) -> int:
    status, payload = await client.request("GET", _path(job_id))
    if status == 404:
        print(f"not watched: {_shown(job_id)}", file=sys.stderr)
        return EXIT_NOT_WATCHED
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return EXIT_OK
    now = time.time()
    last, due = payload["last_success"], payload["next_due"]
    lines = [
        ("id", _shown(payload["id"])),
        ("sources", ", ".join(payload["sources"])),
        ("last success", f"{last or '-'} ({_ago(last, now)})"),
        ("next due", f"{due or '-'} ({_ago(due, now, future=True)})"),
        ("consecutive failures", str(payload["consecutive_failures"])),
        ("expires", payload.get("expires_at") or "never (a permanent claim)"),
        ("last error", payload["last_error"] or "-"),
    ]
    for name, value in lines:
        print(f"{name + ':':22}{value}")
    return EXIT_OK


def _batches(ids: list[str]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    size = 0
    for job_id in ids:
        # As aiohttp's json= encodes it: ASCII escapes, ", " between items.
        cost = len(json.dumps(job_id)) + 2
        if batches[-1] and size + cost > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(job_id)
        size += cost
    return batches


async def _add(client: _Client, ids: list[str], as_json: bool, ttl: float | None = None) -> int:
    added: list[str] = []
    already: list[str] = []
    reports: list[dict[str, int]] = []
    batches = _batches(list(dict.fromkeys(ids)))
    failure: Failure | None = None
    for number, batch in enumerate(batches, 1):
        body: dict[str, Any] = {"ids": batch}
        if ttl is not None:
            body["ttl"] = ttl
        try:
            _, payload = await client.request("POST", "/jobs", body)
        except Failure as exc:
            left = sum(len(rest) for rest in batches[number - 1 :])
            failure = Failure(
                f"batch {number}/{len(batches)} ({len(batch)} ids) failed, so {left} ids "
                f"were not added: {exc}"
            )
            break
        added += payload["added"]
        already += payload["already_watched"]
        report = {"ids": len(batch), "added": len(payload["added"])}
        report["already_watched"] = len(payload["already_watched"])
        reports.append(report)
        if len(batches) > 1:
            print(
                f"batch {number}/{len(batches)}: {report['ids']} ids, {report['added']} "
                f"added, {report['already_watched']} already watched",
                file=sys.stderr,
                flush=True,
            )
    if as_json:
        answer: dict[str, Any] = {"added": added, "already_watched": already}
        if len(batches) > 1:
            answer["batches"] = reports
        print(json.dumps(answer, ensure_ascii=False))
    else:
        for job_id in added:
            print(f"added: {_shown(job_id)}")
        for job_id in already:
            print(f"already watched: {_shown(job_id)}")
    if failure is not None:
        raise failure
    return EXIT_OK


async def _remove(client: _Client, ids: list[str], as_json: bool) -> int:
    removed: list[dict[str, Any]] = []
    missing: list[str] = []
    for job_id in dict.fromkeys(ids):
        status, payload = await client.request("DELETE", _path(job_id))
        if status == 404:
            missing.append(job_id)
        else:
            removed.append(payload)
    if as_json:
        print(json.dumps({"removed": removed, "not_watched": missing}, ensure_ascii=False))
    else:
        for item in removed:
            others = [source for source in item["sources"] if source != "control"]
            note = (
                f" (also listed in {', '.join(others)}: back when that is re-read)"
                if others
                else ""
            )
            print(f"removed: {_shown(item['id'])}{note}")
        for job_id in missing:
            print(f"not watched: {_shown(job_id)}", file=sys.stderr)
    return EXIT_NOT_WATCHED if missing else EXIT_OK


async def _dropped(client: _Client, as_json: bool) -> int:
    _, payload = await client.request("GET", "/dropped")
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return EXIT_OK
    dropped = payload.get("dropped", [])
    if not dropped:
        print("no dropped jobs")
        return EXIT_OK
    now = time.time()
    rows = [("ID", "REASON", "STATUS", "DROPPED", "SOURCES", "SERVER REASON")]
    for item in dropped:
        rows.append(
            (
                _shown(item["id"]),
                item["reason"],
                "" if item["status"] is None else str(item["status"]),
                _ago(item["dropped_at"], now),
                ",".join(item["sources"]),
                item["server_reason"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[5]]).rstrip())
    return EXIT_OK


async def _restore(client: _Client, ids: list[str], as_json: bool) -> int:
    restored: list[dict[str, Any]] = []
    missing: list[str] = []
    for job_id in dict.fromkeys(ids):
        segment = _path(job_id).removeprefix("/jobs/")
        status, payload = await client.request("POST", f"/dropped/{segment}/restore")
        if status == 404:
            missing.append(job_id)
        else:
            restored.append(payload)
    if as_json:
        print(json.dumps({"restored": restored, "not_dropped": missing}, ensure_ascii=False))
    else:
        for item in restored:
            sources = ", ".join(item["job"]["sources"])
            print(f"restored: {_shown(item['id'])} (sources: {sources})")
        for job_id in missing:
            print(f"not dropped: {_shown(job_id)}", file=sys.stderr)
    return EXIT_NOT_WATCHED if missing else EXIT_OK
