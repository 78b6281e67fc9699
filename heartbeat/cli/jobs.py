"""``heartbeat jobs list | add | remove | show | dropped | restore``: the control API
from the command line.

Owns the verbs: what each asks the daemon (through :mod:`heartbeat.cli.control_api`,
which finds it), and turning answers into text (or ``--json``) and exit codes: 0
done, 1 a job to show or remove is not watched (or to restore is not a dropped job),
2 anything else (cannot connect, refused, bad id). ``add`` sends many ids in batches
under the API's 64 KiB body limit and reports each batch on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from heartbeat.cli.control_api import (
    TOKEN_ENV,
    ControlClient,
    Failure,
    Target,
    connected,
    resolve_target,
    shown,
)
from heartbeat.cli.exits import ExitCode
from heartbeat.errors import ConfigError, InvalidJobId
from heartbeat.jobid import validate_job_id

#: POST /jobs bodies are kept under the server's 64 KiB limit.
BATCH_BYTES = 60 * 1024

EPILOG = """\
the daemon: --socket PATH, else --url URL (with --token-file PATH or
$HEARTBEAT_CONTROL_TOKEN), else [control] socket in --config's file, else its
[control] listen (with its token_file), else /run/heartbeat/control.sock.
exit codes: 0 ok, 1 a job to show or remove is not watched, 2 any other failure.
"""


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
        return ExitCode.FAILED


async def run(
    target: Target, command: str, ids: list[str], as_json: bool, ttl: float | None = None
) -> int:
    async with connected(target) as client:
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


def _path(job_id: str) -> str:
    encoded = quote(job_id, safe="")
    return "/jobs/" + ("%2E" * len(encoded) if encoded in {".", ".."} else encoded)


def _ago(iso: str | None, now: float, *, future: bool = False) -> str:
    if iso is None:
        return "never" if not future else "-"
    seconds = datetime.fromisoformat(iso).timestamp() - now
    if future:
        return f"in {max(seconds, 0):.0f} s"
    return f"{max(-seconds, 0):.0f} s ago"


async def _list(client: ControlClient, as_json: bool) -> int:
    header = ("ID", "SOURCES", "LAST SUCCESS", "NEXT DUE", "FAILURES", "EXPIRES", "LAST ERROR")

    def row(job: dict[str, Any], now: float) -> tuple[str, ...]:
        return (
            shown(job["id"]),
            ",".join(job["sources"]),
            _ago(job["last_success"], now),
            _ago(job["next_due"], now, future=True),
            str(job["consecutive_failures"]),
            _ago(job.get("expires_at"), now, future=True),
            job["last_error"] or "",
        )

    def by_id(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(jobs, key=lambda job: job["id"])

    return await _table(client, "/jobs", as_json, "no jobs watched", header, row, by_id)


async def _dropped(client: ControlClient, as_json: bool) -> int:
    header = ("ID", "REASON", "STATUS", "DROPPED", "SOURCES", "SERVER REASON")

    def row(item: dict[str, Any], now: float) -> tuple[str, ...]:
        return (
            shown(item["id"]),
            item["reason"],
            "" if item["status"] is None else str(item["status"]),
            _ago(item["dropped_at"], now),
            ",".join(item["sources"]),
            item["server_reason"] or "",
        )

    return await _table(client, "/dropped", as_json, "no dropped jobs", header, row)


async def _table(
    client: ControlClient,
    path: str,
    as_json: bool,
    empty: str,
    header: tuple[str, ...],
    row: Callable[[dict[str, Any], float], tuple[str, ...]],
    order: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] = list,
) -> int:
    """``GET path`` (``/jobs`` or ``/dropped``, a list under that name) as the API's
    JSON, or as a table: one row per item, every column padded to its widest cell but
    the last (free text, often long)."""
    _, payload = await client.request("GET", path)
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return ExitCode.OK
    items = payload.get(path.removeprefix("/"), [])
    if not items:
        print(empty)
        return ExitCode.OK
    now = time.time()
    rows = [header, *(row(item, now) for item in order(items))]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(header) - 1)]
    for cells in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        print("  ".join([*padded, cells[-1]]).rstrip())
    return ExitCode.OK


async def _show(client: ControlClient, job_id: str, as_json: bool) -> int:
    status, payload = await client.request("GET", _path(job_id))
    if status == 404:
        print(f"not watched: {shown(job_id)}", file=sys.stderr)
        return ExitCode.NOT_FOUND
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return ExitCode.OK
    now = time.time()
    last, due = payload["last_success"], payload["next_due"]
    lines = [
        ("id", shown(payload["id"])),
        ("sources", ", ".join(payload["sources"])),
        ("last success", f"{last or '-'} ({_ago(last, now)})"),
        ("next due", f"{due or '-'} ({_ago(due, now, future=True)})"),
        ("consecutive failures", str(payload["consecutive_failures"])),
        ("expires", payload.get("expires_at") or "never (a permanent claim)"),
        ("last error", payload["last_error"] or "-"),
    ]
    for name, value in lines:
        print(f"{name + ':':22}{value}")
    return ExitCode.OK


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


async def _add(
    client: ControlClient, ids: list[str], as_json: bool, ttl: float | None = None
) -> int:
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
            print(f"added: {shown(job_id)}")
        for job_id in already:
            print(f"already watched: {shown(job_id)}")
    if failure is not None:
        raise failure
    return ExitCode.OK


async def _per_id(
    client: ControlClient, ids: list[str], method: str, path: Callable[[str], str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One request per distinct id: the answers, and the ids answered with a 404."""
    answers: list[dict[str, Any]] = []
    missing: list[str] = []
    for job_id in dict.fromkeys(ids):
        status, payload = await client.request(method, path(job_id))
        if status == 404:
            missing.append(job_id)
        else:
            answers.append(payload)
    return answers, missing


async def _remove(client: ControlClient, ids: list[str], as_json: bool) -> int:
    removed, missing = await _per_id(client, ids, "DELETE", _path)
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
            print(f"removed: {shown(item['id'])}{note}")
        for job_id in missing:
            print(f"not watched: {shown(job_id)}", file=sys.stderr)
    return ExitCode.NOT_FOUND if missing else ExitCode.OK


async def _restore(client: ControlClient, ids: list[str], as_json: bool) -> int:
    def path(job_id: str) -> str:
        return f"/dropped/{_path(job_id).removeprefix('/jobs/')}/restore"

    restored, missing = await _per_id(client, ids, "POST", path)
    if as_json:
        print(json.dumps({"restored": restored, "not_dropped": missing}, ensure_ascii=False))
    else:
        for item in restored:
            sources = ", ".join(item["job"]["sources"])
            print(f"restored: {shown(item['id'])} (sources: {sources})")
        for job_id in missing:
            print(f"not dropped: {shown(job_id)}", file=sys.stderr)
    return ExitCode.NOT_FOUND if missing else ExitCode.OK
