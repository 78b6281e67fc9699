"""Start-up and sidecar memory: wall time and peak RSS of short commands, RSS of an idle daemon.

Measured where an operator runs heartbeat: a venv with heartbeat's wheel and its
runtime dependencies only (:func:`_venvs.runtime_venv`, built from the checkout once
and cached under ``bench/.cache``), and, beside it, the development venv the bench
runs in (``.venv``: its dev extras pull in ``rich``, which ``import structlog`` then
loads, so its figures are larger than any operator's). The targets are judged on the
runtime venv.

Each command runs under ``/usr/bin/time -v`` (package ``time``, which ``make bench``
installs through ``scripts/system-packages bench`` where it is missing), ``--runs``
times, interleaved (commands and venvs); the table shows the median wall time
(``time.perf_counter()`` around the whole run: ``/usr/bin/time`` prints only
hundredths) and the median peak RSS ("Maximum resident set size"), and their ratios to
the baselines measured in the same run, in the same venv:

* ``python -c pass``: the interpreter alone;
* ``python -c "import aiohttp, anyio, structlog"``: the floor, what the daemon's own
  libraries cost before any of heartbeat's code (anyio imports its event loop only
  when one runs, so a running daemon pays ~1 MB more of anyio than this);
* ``... , pydantic_settings``: the floor and the configuration's libraries.

The commands:

* ``heartbeat --version``, ``heartbeat --help`` (the installed console script):
  targets 0.1 s and 20 MB;
* ``heartbeat check-in ID`` against nginx (``bench/_nginx.py``, answering as
  Elasticsearch does, so the check-in succeeds): target 0.3 s;
* ``heartbeat run`` watching 10 jobs, no queue, no metrics listener, no control API:
  started, every job checked in once, left idle for ``--idle`` seconds, stopped with
  SIGTERM. Its RSS while idle (``VmRSS`` from ``/proc``, read just before SIGTERM) is
  held to 40 MB; its peak RSS (start-up included) is printed beside it.

Usage: ``python bench/startup.py [--runs 5] [--idle 3] [--venv both|runtime|dev]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _nginx import running_nginx
from _venvs import dev_venv, runtime_venv

TIME = "/usr/bin/time"
JOBS = [f"sidecar-job-{n}" for n in range(10)]
BARE = "python -c pass"
FLOOR = "python -c 'import aiohttp, anyio, structlog'"
CONFIG_LIBS = "  ... , pydantic_settings"
DAEMON = "heartbeat run, 10 jobs, idle"
#: command -> (wall seconds, MB); the daemon's MB is its RSS while idle.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "heartbeat --version": (0.1, 20.0),
    "heartbeat --help": (0.1, 20.0),
    "heartbeat check-in ID": (0.3, None),
    DAEMON: (None, 40.0),
}


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    rss: float  # MB, peak
    idle_rss: float | None = None  # MB, the daemon's VmRSS while idle


def parse_time(report: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) from ``/usr/bin/time -v``'s report."""
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    if wall is None or rss is None:
        raise RuntimeError(f"cannot read /usr/bin/time's report: {report[-500:]}")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024


def timed(command: list[str], env: dict[str, str]) -> Sample:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        result = subprocess.run(
            [TIME, "-v", "-o", report.name, *command],
            env=env,
            capture_output=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr[-500:]!r}")
        _, rss = parse_time(Path(report.name).read_text())
    return Sample(wall, rss)


def idle_daemon(heartbeat: str, config: Path, env: dict[str, str], idle: float) -> Sample:
    """``heartbeat run`` until every job has checked in, ``idle`` s more, then SIGTERM."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        process = subprocess.Popen(
            [TIME, "-v", "-o", report.name, heartbeat, "run", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        checked_in: set[str] = set()
        deadline = time.monotonic() + 30
        for line in process.stdout:
            event = json.loads(line)
            if event.get("event") == "checkin_succeeded":
                checked_in.add(event["job_id"])
            if checked_in == set(JOBS) or time.monotonic() > deadline:
                break
        if checked_in != set(JOBS):
            process.kill()
            raise RuntimeError(f"only {sorted(checked_in)} checked in within 30 s")
        time.sleep(idle)
        daemon = daemon_pid(process.pid)
        status = Path(f"/proc/{daemon}/status").read_text()
        idle_rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        os.kill(daemon, signal.SIGTERM)
        process.stdout.read()
        if process.wait(timeout=30) != 0:
            raise RuntimeError(f"the daemon exited {process.returncode}")
        wall, rss = parse_time(Path(report.name).read_text())
    return Sample(wall, rss, idle_rss)


def daemon_pid(time_pid: int) -> int:
    """The heartbeat process: /usr/bin/time's only child."""
    children = Path(f"/proc/{time_pid}/task/{time_pid}/children").read_text().split()
    return int(children[0])


def daemon_config(path: Path, url: str) -> Path:
    path.write_text(
        "[elasticsearch]\n"
        f"hosts = [{json.dumps(url)}]\n"
        "[jobs]\n"
        f"ids = {json.dumps(JOBS)}\n"
        "[control]\n"
        "socket = ''\n"
        "[logging]\n"
        "format = 'json'\n"
        "level = 'debug'\n"  # checkin_succeeded is a debug event
    )
    path.chmod(0o600)
    return path


def median(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(sample, field) for sample in samples)


def commands(
    bin_dir: Path, env: dict[str, str], check_in_env: dict[str, str]
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The short commands, run with ``bin_dir``'s python and heartbeat."""
    python, heartbeat = str(bin_dir / "python"), str(bin_dir / "heartbeat")
    return {
        BARE: ([python, "-c", "pass"], env),
        FLOOR: ([python, "-c", "import aiohttp, anyio, structlog"], env),
        CONFIG_LIBS: ([python, "-c", "import aiohttp, anyio, structlog, pydantic_settings"], env),
        "heartbeat --version": ([heartbeat, "--version"], env),
        "heartbeat --help": ([heartbeat, "--help"], env),
        "heartbeat check-in ID": (
            [heartbeat, "check-in", "--config", os.devnull, "job-1"],
            check_in_env,
        ),
    }


@dataclass(frozen=True)
class Figures:
    """The medians of one command in one venv."""

    wall: float | None  # None for the daemon (it runs as long as it is let)
    mb: float  # peak RSS; for the daemon, its RSS while idle
    peak: float


def figures(results: dict[str, list[Sample]]) -> dict[str, Figures]:
    out = {}
    for name, samples in results.items():
        if name == DAEMON:
            out[name] = Figures(None, median(samples, "idle_rss"), median(samples, "rss"))
        else:
            rss = median(samples, "rss")
            out[name] = Figures(median(samples, "wall"), rss, rss)
    return out


def verdict(name: str, shown: Figures) -> tuple[str, bool]:
    target_wall, target_mb = TARGETS.get(name, (None, None))
    wanted, met = [], True
    if target_wall is not None and shown.wall is not None:
        ok = shown.wall <= target_wall
        wanted.append(f"<= {target_wall:g} s {'ok' if ok else 'MISSED'}")
        met = met and ok
    if target_mb is not None:
        ok = shown.mb <= target_mb
        wanted.append(f"<= {target_mb:g} MB {'ok' if ok else 'MISSED'}")
        met = met and ok
    return ", ".join(wanted), met


def report(by_venv: dict[str, dict[str, Figures]]) -> bool:
    """Print the table (the first venv judged, the others beside it); whether all met."""
    judged, *others = by_venv
    table = by_venv[judged]
    base, floor = table[BARE], table[FLOOR]
    header = (
        f"{judged + ' venv: command':46} {'wall s':>7} {'x pass':>7} {'x floor':>7} "
        f"{'MB':>6} {'x pass':>7} {'x floor':>7}"
        + "".join(f" {other + ' s':>9} {other + ' MB':>9}" for other in others)
        + "  target"
    )
    print()
    print(header)
    print("-" * len(header))
    verdicts = []
    for name, shown in table.items():
        if shown.wall is None:
            wall = "      -       -       -"
        else:
            wall = f"{shown.wall:7.3f} {shown.wall / base.wall:7.2f} {shown.wall / floor.wall:7.2f}"  # type: ignore[operator]
        beside = ""
        for other in others:
            theirs = by_venv[other].get(name)
            if theirs is None:
                beside += f" {'-':>9} {'-':>9}"
            else:
                beside += (
                    f" {'-' if theirs.wall is None else f'{theirs.wall:.3f}':>9} {theirs.mb:9.1f}"
                )
        wanted, met = verdict(name, shown)
        if name in TARGETS:
            verdicts.append(met)
        print(
            f"{name:46} {wall} {shown.mb:6.1f} {shown.mb / base.mb:7.2f} "
            f"{shown.mb / floor.mb:7.2f}{beside}  {wanted}"
        )
    daemon = ", ".join(f"{venv} {by_venv[venv][DAEMON].peak:.1f} MB" for venv in by_venv)
    print(f"\n(MB: peak RSS; for the idle daemon, VmRSS just before SIGTERM; its peak: {daemon})")
    return all(verdicts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds (default 3)")
    parser.add_argument(
        "--venv",
        choices=["both", "runtime", "dev"],
        default="both",
        help="the runtime-only venv (bench/.cache, judged), this dev venv, or both (default)",
    )
    args = parser.parse_args()
    if not Path(TIME).exists():
        print("needs /usr/bin/time (scripts/system-packages bench)")
        return 1
    venvs: dict[str, Path] = {}
    if args.venv in ("both", "runtime"):
        venvs["runtime"] = runtime_venv()
    if args.venv in ("both", "dev"):
        venvs["dev"] = dev_venv()
        if shutil.which("heartbeat", path=str(venvs["dev"])) is None:
            print(f"no heartbeat in {venvs['dev']}: run from the development venv (make bench)")
            return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    results: dict[str, dict[str, list[Sample]]] = {venv: {} for venv in venvs}
    with running_nginx() as nginx, tempfile.TemporaryDirectory() as tmp:
        check_in_env = {**env, "HEARTBEAT_ELASTICSEARCH__HOSTS": json.dumps([nginx.url])}
        config = daemon_config(Path(tmp) / "hb.toml", nginx.url)
        runs = {venv: commands(bin_dir, env, check_in_env) for venv, bin_dir in venvs.items()}
        print(f"startup: {args.runs} runs each, interleaved; venvs: {venvs}", flush=True)
        for run in range(args.runs):
            for name in runs[next(iter(venvs))]:
                for venv, venv_commands in runs.items():
                    command, command_env = venv_commands[name]
                    results[venv].setdefault(name, []).append(timed(command, command_env))
            for venv, bin_dir in venvs.items():
                sample = idle_daemon(str(bin_dir / "heartbeat"), config, env, args.idle)
                results[venv].setdefault(DAEMON, []).append(sample)
            print(f"  run {run + 1}/{args.runs} done", flush=True)
    met = report({venv: figures(samples) for venv, samples in results.items()})
    judged = next(iter(venvs))
    print(f"startup targets {'met' if met else 'NOT all met'} (judged on the {judged} venv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
