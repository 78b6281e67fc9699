"""``heartbeat demo``: the daemon against the built-in emulator, narrated, for ~20 s.

Starts the emulator in-process on a free loopback port, creates four running sync
jobs, and watches them with a 2 s interval. A fifth of the way in, the emulator
answers one job with two 503s (backoff shows); two fifths in, one job is deleted, so
its next check-in gets Elasticsearch's 404, the check-in 1 s later
(``drop_confirm_after``) a second one, and the job is dropped. Ends by itself (or on
Ctrl-C) with a summary of what reached the server.
"""

from __future__ import annotations

import signal
from typing import Any

import anyio

from heartbeat import logs
from heartbeat.cli.exits import ExitCode
from heartbeat.config import BackoffSettings, Config, ElasticsearchSettings, ScheduleSettings
from heartbeat.daemon import Heartbeat
from heartbeat.emulator import Emulator, Fault, serve
from heartbeat.outcomes import Outcome, Success, outcome_key


def say(text: str) -> None:
    print(f"demo | {text}", flush=True)


async def run_demo(duration: float = 20.0) -> ExitCode:
    logs.configure(format="console", level="info")
    emulator = Emulator()
    names = ["sync-jobs-full", "sync-jobs-incremental", "sync-access-control", "sync-to-delete"]
    ids = [
        emulator.create_job(connector_id=f"connector-{n}", job_id=name, worker_hostname="demo")
        for n, name in enumerate(names)
    ]
    flaky, doomed = ids[1], ids[3]
    async with serve(emulator, "127.0.0.1", 0) as url:
        say(f"emulator listening on {url} with {len(ids)} running sync jobs")
        # A short demo checks in faster, so that the deleted job's two 404s (the drop
        # is confirmed by a second one) still fall inside the run: the deletion comes at
        # 2/5 of it, and 3/5 is left for the next check-in plus the confirmation.
        interval, confirm = demo_timing(duration)
        config = Config(
            elasticsearch=ElasticsearchSettings(hosts=[url]),
            schedule=ScheduleSettings(
                interval=interval, jitter=0.1, idle_after=300.0, drop_confirm_after=confirm
            ),
            backoff=BackoffSettings(initial=0.5, multiplier=2.0, max=4.0),
        )
        say(
            f"heartbeat checks each job in every {interval:g} s (+/- 10 % jitter); "
            "Ctrl-C ends early"
        )

        def narrate(job_id: str, outcome: Outcome, seconds: float) -> None:
            if isinstance(outcome, Success):
                last_seen = (emulator.job(job_id) or {}).get("last_seen")
                say(f"checked in {job_id:<24} {seconds * 1000:5.1f} ms  last_seen={last_seen}")
            else:
                say(f"check-in of {job_id} failed: {outcome_key(outcome)}")

        interrupted = False
        async with Heartbeat(config) as hb:
            hb.scheduler.outcome_observers.append(narrate)
            hb.watch_many(ids, "demo")
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:

                    async def stop_on_signal() -> None:
                        nonlocal interrupted
                        async for _ in signals:
                            interrupted = True
                            tg.cancel_scope.cancel()
                            return

                    tg.start_soon(stop_on_signal)
                    await anyio.sleep(duration / 5)
                    say(f"the emulator now answers {flaky} with 503 twice: watch the backoff")
                    emulator.script([Fault(status=503), Fault(status=503)], job_id=flaky)
                    await anyio.sleep(duration / 5)
                    say(
                        f"deleting {doomed} in Elasticsearch: its next check-in will 404, "
                        f"and a second 404 {confirm:g} s later drops it"
                    )
                    emulator.delete_job(doomed)
                    await anyio.sleep(duration * 3 / 5)
                    tg.cancel_scope.cancel()
        # After the Heartbeat has stopped: a check-in still in flight at the end (the
        # 404 of a deleted job) has had its answer, and its drop is in the log above.
        watched = [job.id for job in hb.jobs()]
    summary(emulator, ids, watched, interrupted)
    return ExitCode.OK


def demo_timing(duration: float) -> tuple[float, float]:
    """The check-in interval and drop confirmation for a demo of ``duration`` seconds:
    2 s and 1 s, shorter for a run under 10 s (the config's 1 s interval floor is for
    operators' files; the demo builds its Config in code)."""
    interval = max(0.25, min(2.0, duration / 5))
    return interval, interval / 2


def summary(emulator: Emulator, ids: list[str], watched: list[str], interrupted: bool) -> None:
    say("stopped early (Ctrl-C)" if interrupted else "done")
    say("summary: check-ins that reached the emulator, by answer")
    for job_id in ids:
        answers: dict[Any, int] = {}
        for record in emulator.checkins(job_id):
            answers[record.status] = answers.get(record.status, 0) + 1
        state = "watched" if job_id in watched else "dropped"
        counts = ", ".join(f"{count} x {status}" for status, count in sorted(answers.items()))
        if emulator.job(job_id) is None and job_id in watched:
            # Deleted, but the demo ended before a check-in could hear the 404.
            counts = f"{counts}; deleted, not checked in since".lstrip("; ")
        say(f"  {job_id:<24} {state:<8} {counts or 'no check-ins'}")
