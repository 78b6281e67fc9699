"""Start-up and sidecar memory: wall time and peak RSS of short commands, RSS of an idle daemon.

Each command runs under ``/usr/bin/time -v`` (package ``time``, which ``make bench``
installs through ``scripts/system-packages bench`` where it is missing), ``--runs``
times, interleaved; the table shows the median wall time (``time.perf_counter()``
around the whole run: ``/usr/bin/time`` prints only hundredths) and the median peak
RSS ("Maximum resident set size"), and the ratio of each to the baseline measured in
the same run, a bare ``python -c pass`` of the same interpreter:

* ``heartbeat --version``, ``heartbeat --help`` (the installed console script):
  targets 0.1 s and 20 MB;
* ``heartbeat check-in ID`` against nginx (``bench/_nginx.py``, answering as
  Elasticsearch does, so the check-in succeeds): target 0.3 s;
* ``heartbeat run`` watching 10 jobs, no queue, no metrics listener, no control API:
  started, every job checked in once, left idle for ``--idle`` seconds, stopped with
  SIGTERM. Its peak RSS is held to 40 MB; its RSS while idle (``VmRSS`` from
  ``/proc``, read just before SIGTERM) is printed beside it. A second baseline,
  ``python -c "import aiohttp, anyio, structlog"``, is what the daemon's own
  libraries cost before any of heartbeat's code.

Usage: ``python bench/startup.py [--runs 5] [--idle 3]``.
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

BIN = Path(sys.executable).parent
TIME = "/usr/bin/time"
JOBS = [f"sidecar-job-{n}" for n in range(10)]


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


def idle_daemon(config: Path, env: dict[str, str], idle: float) -> Sample:
    """``heartbeat run`` until every job has checked in, ``idle`` s more, then SIGTERM."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        process = subprocess.Popen(
            [TIME, "-v", "-o", report.name, str(BIN / "heartbeat"), "run", "--config", str(config)],
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds (default 3)")
    args = parser.parse_args()
    if not Path(TIME).exists() or shutil.which("heartbeat", path=str(BIN)) is None:
        print("needs /usr/bin/time (scripts/system-packages bench) and heartbeat installed")
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    python = sys.executable
    heartbeat = str(BIN / "heartbeat")
    results: dict[str, list[Sample]] = {}
    with running_nginx() as nginx, tempfile.TemporaryDirectory() as tmp:
        check_in_env = {**env, "HEARTBEAT_ELASTICSEARCH__HOSTS": json.dumps([nginx.url])}
        config = daemon_config(Path(tmp) / "hb.toml", nginx.url)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([python, "-c", "pass"], env),
            "python -c 'import aiohttp, anyio, structlog'": (
                [python, "-c", "import aiohttp, anyio, structlog"],
                env,
            ),
            "heartbeat --version": ([heartbeat, "--version"], env),
            "heartbeat --help": ([heartbeat, "--help"], env),
            "heartbeat check-in ID": (
                [heartbeat, "check-in", "--config", os.devnull, "job-1"],
                check_in_env,
            ),
        }
        print(f"startup: {args.runs} runs each, interleaved; {python}", flush=True)
        for run in range(args.runs):
            for name, (command, command_env) in commands.items():
                results.setdefault(name, []).append(timed(command, command_env))
            results.setdefault("heartbeat run, 10 jobs, idle", []).append(
                idle_daemon(config, env, args.idle)
            )
            print(f"  run {run + 1}/{args.runs} done", flush=True)
    base = results["python -c pass"]
    base_wall, base_rss = median(base, "wall"), median(base, "rss")
    targets = {
        "heartbeat --version": (0.1, 20.0),
        "heartbeat --help": (0.1, 20.0),
        "heartbeat check-in ID": (0.3, None),
        "heartbeat run, 10 jobs, idle": (None, 40.0),
    }
    header = f"{'command':46} {'wall s':>7} {'x base':>7} {'peak MB':>8} {'x base':>7}  target"
    print()
    print(header)
    print("-" * len(header))
    verdicts = []
    for name, samples in results.items():
        wall, rss = median(samples, "wall"), median(samples, "rss")
        target_wall, target_rss = targets.get(name, (None, None))
        wanted = []
        if target_wall is not None:
            wanted.append(f"<= {target_wall:g} s {'ok' if wall <= target_wall else 'MISSED'}")
        if target_rss is not None:
            wanted.append(f"<= {target_rss:g} MB {'ok' if rss <= target_rss else 'MISSED'}")
            verdicts.append(rss <= target_rss)
        if target_wall is not None:
            verdicts.append(wall <= target_wall)
        wall_shown = f"{wall:7.3f}" if name != "heartbeat run, 10 jobs, idle" else "      -"
        ratio_shown = f"{wall / base_wall:7.2f}" if wall_shown.strip() != "-" else "      -"
        print(
            f"{name:46} {wall_shown} {ratio_shown} {rss:8.1f} {rss / base_rss:7.2f}  "
            f"{', '.join(wanted)}"
        )
    daemon = results["heartbeat run, 10 jobs, idle"]
    print(
        f"\n(the idle daemon's RSS just before SIGTERM: {median(daemon, 'idle_rss'):.1f} MB; "
        f"peak above includes start-up)"
    )
    print(f"startup targets {'met' if all(verdicts) else 'NOT all met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
