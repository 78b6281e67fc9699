"""The ``/_emulator/...`` control API, for driving an emulator in another process.

Owns the plain-JSON endpoints (no credentials, no product header, not recorded in the
request log) that create, read, delete and re-status jobs, script and clear faults, read
and forget the request log summary, and change the API key and privileges; the table is
in the package docstring and in docs/emulator.md. It does not own the state it changes
(:class:`Controlled`): the :class:`~heartbeat.emulator.Emulator` does, and calls
:func:`handle_control` for any request whose first path segment is ``_emulator``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any, Protocol, get_args

from aiohttp import web

from heartbeat.emulator.auth import Privileges
from heartbeat.emulator.faults import Fault, FaultPlan
from heartbeat.emulator.routing import unquote_strict
from heartbeat.emulator.wire import RecordedRequest


class Controlled(Protocol):
    """What the control API changes: the :class:`~heartbeat.emulator.Emulator`, whose
    handler imports this module (so this module does not import it back)."""

    api_key: str | None
    privileges: Privileges
    faults: FaultPlan
    requests: list[RecordedRequest]

    def checkins(self, job_id: str | None = None) -> list[RecordedRequest]: ...

    def create_job(
        self,
        connector_id: str = ...,
        job_type: str = ...,
        status: str = ...,
        worker_hostname: str | None = None,
        job_id: str | None = None,
        started_at: datetime | None = None,
    ) -> str: ...

    def claim(self, job_id: str, worker_hostname: str) -> None: ...

    def job(self, job_id: str) -> dict[str, Any] | None: ...

    def delete_job(self, job_id: str) -> None: ...

    def set_status(self, job_id: str, status: str) -> None: ...


async def handle_control(
    emulator: Controlled, request: web.BaseRequest, segments: list[str]
) -> web.Response:
    """Answer a control request; ``segments`` is the path after ``/_emulator``."""
    method, body = request.method, await request.read()
    try:
        data: Any = json.loads(body) if body else {}
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        ids = [unquote_strict(segment) for segment in segments[1:2]]
        return _dispatch(emulator, method, segments, ids[0] if ids else None, data)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except KeyError as exc:
        return web.json_response({"error": f"no such job {exc}"}, status=404)


def _dispatch(
    emulator: Controlled,
    method: str,
    segments: list[str],
    job_id: str | None,
    data: dict[str, Any],
) -> web.Response:
    route = (method, segments[0] if segments else "", len(segments))
    if route == ("POST", "jobs", 1):
        new_id = emulator.create_job(
            connector_id=str(data.get("connector_id", "c1")),
            job_type=str(data.get("job_type", "full")),
            status=str(data.get("status", "in_progress")),
            worker_hostname=data.get("worker_hostname"),
            job_id=data.get("job_id"),
            started_at=(
                datetime.fromisoformat(data["started_at"]) if data.get("started_at") else None
            ),
        )
        return web.json_response({"id": new_id})
    if route == ("PUT", "jobs", 3) and job_id is not None and segments[2] == "claim":
        emulator.claim(job_id, str(data.get("worker_hostname", "")))
        return web.json_response(emulator.job(job_id))
    if route[1:] == ("jobs", 2) and job_id is not None and method in {"GET", "DELETE"}:
        document = emulator.job(job_id)
        if document is None:
            raise KeyError(job_id)
        if method == "DELETE":
            emulator.delete_job(job_id)
        return web.json_response(document)
    if route == ("PUT", "jobs", 3) and job_id is not None and segments[2] == "status":
        emulator.set_status(job_id, str(data.get("status")))
        return web.json_response(emulator.job(job_id))
    if route == ("POST", "faults", 1):
        return _set_faults(emulator, data)
    if route == ("DELETE", "faults", 1):
        emulator.faults.clear()
        return web.json_response({"acknowledged": True})
    if route == ("GET", "requests", 1):
        return web.json_response(_summary(emulator))
    if route == ("DELETE", "requests", 1):
        emulator.requests.clear()
        return web.json_response({"acknowledged": True})
    if route == ("PUT", "auth", 1):
        if "api_key" in data:
            emulator.api_key = data["api_key"]
        if "privileges" in data:
            if data["privileges"] not in get_args(Privileges):
                raise ValueError(f"unknown privileges {data['privileges']!r}")
            emulator.privileges = data["privileges"]
        return web.json_response({"acknowledged": True})
    return web.json_response({"error": f"no control endpoint {method} {segments}"}, status=404)


def _set_faults(emulator: Controlled, data: dict[str, Any]) -> web.Response:
    faults = [Fault.from_json(item) for item in data.get("faults") or []]
    job_id = data.get("job_id")
    if job_id is not None and not isinstance(job_id, str):
        raise ValueError("job_id must be a string or null")
    mode = data.get("mode", "script")
    if mode == "script":
        emulator.faults.script(faults, job_id)
    elif mode == "always" and len(faults) <= 1:
        emulator.faults.always(faults[0] if faults else None, job_id)
    else:
        raise ValueError("mode must be 'script', or 'always' with at most one fault")
    return web.json_response({"acknowledged": True})


def _summary(emulator: Controlled) -> dict[str, Any]:
    by_action = Counter(record.action or "unrouted" for record in emulator.requests)
    check_ins = Counter(record.job_id for record in emulator.checkins())
    return {
        "total": len(emulator.requests),
        "by_action": dict(by_action),
        "check_ins": {str(job_id): count for job_id, count in check_ins.items()},
    }
