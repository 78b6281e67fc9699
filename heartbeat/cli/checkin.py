"""``heartbeat check-in ID...``: one check-in per job, one line per job, an exit code.

Exit 0 when every job checked in, 1 when any was not found (and nothing else went
wrong), 2 when anything else failed (an invalid id, a server error, no connection).
A reason that spans lines (aiohttp's parser error for a server that does not speak
HTTP draws a caret under the bad bytes) is folded into that one line.
"""

from __future__ import annotations

from heartbeat.cli.exits import ExitCode
from heartbeat.client import Client
from heartbeat.config import Config
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import printable, validate_job_id
from heartbeat.outcomes import NotFound, Success, outcome_key

#: Longest reason shown; the rest of a server's error page says nothing more.
MAX_REASON = 300


def one_line(reason: str) -> str:
    """``reason`` on one printable line, at most :data:`MAX_REASON` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


async def check_in_once(config: Config, ids: list[str]) -> ExitCode:
    not_found = failed = False
    async with Client(config.elasticsearch, max_in_flight=1) as client:
        for job_id in ids:
            shown = printable(job_id)
            try:
                validate_job_id(job_id)
            except InvalidJobId as exc:
                print(f"invalid    {shown}: {exc}")
                failed = True
                continue
            outcome = await client.check_in(job_id)
            if isinstance(outcome, Success):
                print(f"ok         {shown}")
            elif isinstance(outcome, NotFound):
                print(f"not_found  {shown}: {one_line(outcome.reason)}")
                not_found = True
            else:
                print(f"failed     {shown}: {outcome_key(outcome)}: {one_line(outcome.reason)}")
                failed = True
    if failed:
        return ExitCode.FAILED
    return ExitCode.NOT_FOUND if not_found else ExitCode.OK
