"""The parser, :func:`main`, and the verbs too small for a module of their own.

Owns argument parsing, dispatching to a verb and turning a :class:`ConfigError` into
one line and status 78. ``run``, ``validate`` and ``emulator`` are a few lines each
here; ``check-in``, ``demo`` and ``jobs`` have their own modules. Each verb imports
what it needs when it runs (``--version`` and ``--help`` import none of aiohttp,
pydantic or prometheus_client); :mod:`heartbeat.cli.guard` is the edge around it,
for Ctrl-C (130) and anything unexpected (70).

Exit codes (:class:`~heartbeat.cli.exits.ExitCode`): 0 success / clean stop; 1
``check-in``: a job was not found; 2 usage error, or ``check-in``: any other failure;
78 configuration error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from heartbeat._version import __version__
from heartbeat.cli.exits import ExitCode
from heartbeat.cli.jobs import add_jobs_parser, cmd_jobs
from heartbeat.errors import ConfigError, InvalidJobId

if TYPE_CHECKING:
    from heartbeat import config as configuration

DESCRIPTION = """\
Keeps Elasticsearch connector sync jobs alive: checks each watched job in
(PUT _connector/_sync_job/<id>/_check_in) well before the 300 s idle rule fails it.
"""

EPILOG = """\
configuration: --config PATH, else $HEARTBEAT_CONFIG, else /etc/heartbeat/heartbeat.toml;
every key can be overridden as HEARTBEAT_<SECTION>__<KEY> (HEARTBEAT_ELASTICSEARCH__API_KEY).
exit codes: 0 ok, 1 check-in: job not found, 2 failure or usage error, 78 config error,
70 internal error, 130 interrupted (Ctrl-C), 141 stdout closed.
"""

#: The demo's longest run: a day (anyio's timers take any finite float, a person does not).
MAX_DEMO_SECONDS = 86400.0


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit 2), control characters
    in the offending argument escaped."""

    def error(self, message: str) -> NoReturn:
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(ExitCode.FAILED, f"{self.prog}: {shown} (see '{self.prog} --help')\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def _duration(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DEMO_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seconds from 0 to {MAX_DEMO_SECONDS:g}"
        )
    return seconds


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration file (default: $HEARTBEAT_CONFIG or "
        "/etc/heartbeat/heartbeat.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="heartbeat",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"heartbeat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the daemon until SIGTERM (SIGHUP reloads)")
    _config_arg(run)
    run.add_argument(
        "--job",
        metavar="ID",
        nargs="+",
        action="extend",
        default=[],
        help="also watch these sync job ids (--job a b, or --job a --job b)",
    )

    check_in = commands.add_parser(
        "check-in", help="check the given jobs in once and report (exit 0 / 1 / 2)"
    )
    _config_arg(check_in)
    check_in.add_argument("ids", metavar="ID", nargs="+", help="sync job ids")

    validate = commands.add_parser(
        "validate", help="check the configuration and print it, secrets redacted"
    )
    _config_arg(validate)

    emulator = commands.add_parser(
        "emulator", help="serve the built-in Elasticsearch sync-job emulator"
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    emulator.add_argument(
        "--port", type=_port, default=9200, help="port (default 9200; 0 picks a free one)"
    )
    emulator.add_argument(
        "--data",
        metavar="PATH",
        type=Path,
        help="load jobs from this JSON file at start (checked before listening) and "
        "save them at exit",
    )
    emulator.add_argument(
        "--cluster-uuid",
        default="emulator",
        help="the cluster_uuid that GET / answers (default 'emulator')",
    )
    emulator.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="require 'Authorization: ApiKey <contents of PATH>' "
        "(or set $HEARTBEAT_EMULATOR_API_KEY)",
    )

    demo = commands.add_parser(
        "demo", help="watch a few jobs on the built-in emulator for about 20 s"
    )
    demo.add_argument(
        "--duration",
        type=_duration,
        default=20.0,
        metavar="SECONDS",
        help=f"seconds to run, 0 to {MAX_DEMO_SECONDS:g} (default 20)",
    )
    add_jobs_parser(commands)
    return parser


def _load(path: str | None) -> tuple[configuration.Config, Path]:
    from heartbeat import config as configuration

    resolved = configuration.config_path(path, os.environ)
    return configuration.load(resolved), resolved


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from heartbeat import logs
    from heartbeat.jobid import validate_job_id
    from heartbeat.runtime import serve

    config, path = _load(args.config)
    for job_id in args.job:
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            print(f"heartbeat: --job: {exc}", file=sys.stderr)
            return ExitCode.FAILED
    logs.configure(format=config.logging.format, level=config.logging.level)
    return anyio.run(lambda: serve(config, path=path, extra_ids=args.job))


def cmd_check_in(args: argparse.Namespace) -> int:
    # asyncio.run, not anyio.run (which runs the same asyncio.Runner): a check-in uses
    # no anyio API, and anyio with its asyncio backend is a 20-50 ms, ~1.5 MB import.
    import asyncio

    from heartbeat import logs
    from heartbeat.cli.checkin import check_in_once

    config, _ = _load(args.config)
    logs.configure(format=config.logging.format, level="warning", stream=sys.stderr)
    return asyncio.run(check_in_once(config, list(args.ids)))


def cmd_validate(args: argparse.Namespace) -> int:
    """stdout: exactly the JSON (for ``jq``); stderr: the verdict and any warnings."""
    import json

    from heartbeat import config as configuration
    from heartbeat.config.warnings import startup_warnings

    config, path = _load(args.config)
    print(json.dumps(configuration.redacted(config), indent=2))
    for warning in startup_warnings(config, path):
        print(f"heartbeat: warning: {warning.line()}", file=sys.stderr)
    print(f"heartbeat: {path}: valid", file=sys.stderr)
    return ExitCode.OK


def cmd_emulator(args: argparse.Namespace) -> int:
    import anyio

    from heartbeat import logs
    from heartbeat.emulator import DataFileError, ListenError, run_emulator

    api_key = os.environ.get("HEARTBEAT_EMULATOR_API_KEY") or None
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            print(f"heartbeat emulator: --api-key-file: {reason}", file=sys.stderr)
            return ExitCode.FAILED
        if not api_key:
            # Not "no credentials": an emulator asked to check a key must not accept all.
            print(
                f"heartbeat emulator: --api-key-file: {args.api_key_file} is empty", file=sys.stderr
            )
            return ExitCode.FAILED
    logs.configure(format="auto", level="info")
    try:
        anyio.run(run_emulator, args.host, args.port, api_key, args.data, args.cluster_uuid)
    except (ListenError, DataFileError) as exc:
        print(f"heartbeat emulator: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace) -> int:
    import anyio

    from heartbeat.cli.demo import run_demo

    return anyio.run(run_demo, args.duration)


COMMANDS = {
    "run": cmd_run,
    "check-in": cmd_check_in,
    "validate": cmd_validate,
    "emulator": cmd_emulator,
    "demo": cmd_demo,
    "jobs": cmd_jobs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"heartbeat: configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except BaseExceptionGroup as group:
        # A listener that cannot start (control socket taken) raises inside the daemon's
        # task groups: the same one line and status 78 as any configuration error.
        config_errors, rest = group.split(ConfigError)
        if config_errors is None or rest is not None:
            raise
        error: BaseException = config_errors
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        print(f"heartbeat: configuration error: {error}", file=sys.stderr)
        return ExitCode.CONFIG
