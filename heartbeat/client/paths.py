"""The sync-job API's paths, each job id encoded as exactly one path segment.

Pure string building over :func:`heartbeat.jobid.checked_segment` (an id that cannot
be checked in raises InvalidJobId here, before any request); the requests themselves
are :class:`heartbeat.client.Client`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

from heartbeat.jobid import checked_segment


def checkin_path(job_id: str) -> str:
    """The encoded path of the check-in endpoint of ``job_id``."""
    return f"/_connector/_sync_job/{checked_segment(job_id)}/_check_in"


def job_path(job_id: str) -> str:
    return f"/_connector/_sync_job/{checked_segment(job_id)}"


def list_path(offset: int, size: int, filters: dict[str, str], fields: Sequence[str]) -> str:
    """The encoded path (with query) of one page of the sync-job list."""
    params = {**filters, "from": str(offset), "size": str(size)}
    if fields:
        # Real Elasticsearch then sends only these fields (the emulator ignores it).
        params["filter_path"] = ",".join(["count", *(f"results.{name}" for name in fields)])
    return "/_connector/_sync_job?" + urlencode(params, quote_via=quote, safe="")
