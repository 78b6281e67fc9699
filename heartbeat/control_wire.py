"""The control API's wire format: routes, ids in paths, bodies, JSON answers.

Owns turning a raw request into what it asks (:func:`route`, :func:`decode_id`,
:func:`ids_and_ttl`, :func:`put_body`, :func:`read_body`) and what the API answers into
JSON (:func:`json_response`, :func:`job_json`, :func:`tombstone_json`); every problem is an
:class:`Refused` naming it. Pure but for reading the body: it does not watch
anything, check access or listen (heartbeat.control does).

Ids travel in the path as one percent-encoded segment: ``/jobs/a%2Fb`` is the id
``a/b``, ``/jobs/%2E%2E`` the id ``..``. Routing works on the raw request target (no
normalisation by aiohttp's router), decoding is strict, and a literal ``.``/``..``
segment is refused rather than guessed at. Bodies over :data:`MAX_BODY` get 413.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from heartbeat.errors import InvalidJobId
from heartbeat.jobid import validate_job_id
from heartbeat.leases import check_ttl
from heartbeat.liveness import iso
from heartbeat.memory import Tombstone
from heartbeat.watchlist import JobView

__all__ = [
    "MAX_BODY",
    "METHODS",
    "Refused",
    "decode_id",
    "ids_and_ttl",
    "ids_of",
    "iso",
    "job_json",
    "json_response",
    "put_body",
    "read_body",
    "route",
    "tombstone_json",
    "ttl_of",
]

MAX_BODY = 64 * 1024
#: The methods each endpoint answers.
METHODS = {
    "jobs": ("GET", "POST"),
    "job": ("DELETE", "GET", "PUT"),
    "status": ("GET",),
    "dropped": ("GET",),
    "restore": ("POST",),
}


class Refused(Exception):
    """A request refused with an error response, raised out of the checks to end it;
    never escapes the control API (heartbeat.control answers with its response)."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        self.response = json_response(status, {"error": message})
        self.response.headers.update(headers)


def json_response(status: int, payload: object) -> web.Response:
    """``payload`` as the JSON body of a response with ``status``."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(status=status, body=body, content_type="application/json")


def job_json(view: JobView, expires_at: float | None = None) -> dict[str, Any]:
    return {
        "id": view.id,
        "sources": list(view.sources),
        "last_success": iso(view.last_success),
        "next_due": iso(view.next_due),
        "consecutive_failures": view.consecutive_failures,
        "last_error": view.last_error,
        "expires_at": iso(expires_at),
    }


def ttl_of(value: object, default: float) -> float | None:
    """A request's ``ttl`` (None: not given, then ``default``; 0 default: permanent)."""
    if value is None:
        return default or None
    try:
        return check_ttl(value)
    except ValueError as exc:
        raise Refused(400, f"{exc}; nothing was changed") from None


def put_body(body: bytes, query: Any) -> object:
    """The ``ttl`` of a PUT /jobs/ID: ``{"ttl": N}`` in the body or ``?ttl=N``."""
    given: object = query.get("ttl")
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, 'the body is not JSON; expected {"ttl": SECONDS} or none') from None
        if not isinstance(data, dict) or set(data) - {"ttl"}:
            raise Refused(400, 'expected a JSON object {"ttl": SECONDS}')
        if "ttl" in data:
            if given is not None:
                raise Refused(400, "ttl given twice (body and query)")
            given = data["ttl"]
    return given


def tombstone_json(tombstone: Tombstone) -> dict[str, Any]:
    return {**tombstone.to_json(), "dropped_at": iso(tombstone.dropped_at)}


def route(raw_path: str) -> tuple[str, str | None]:
    """``(endpoint, still-encoded id segment)`` for a raw request target; 404 otherwise."""
    path = raw_path.split("?", 1)[0]
    segments = path[1:].split("/") if path.startswith("/") else []
    if segments in (["jobs"], ["status"], ["dropped"]):
        return segments[0], None
    if len(segments) == 2 and segments[0] == "jobs":
        return "job", segments[1]
    if len(segments) == 3 and segments[0] == "dropped" and segments[2] == "restore":
        return "restore", segments[1]
    hint = "; a '/' inside an id is sent as %2F" if segments[:1] == ["jobs"] else ""
    raise Refused(404, f"no such endpoint: {path or raw_path}{hint}")


def decode_id(segment: str) -> str:
    """The job id a path segment spells, validated; 400 otherwise."""
    if segment in {".", ".."}:
        raise Refused(400, f"a literal {segment!r} segment is ambiguous; spell the id %2E")
    for position, char in enumerate(segment):
        if char == "%" and not _is_hex(segment[position + 1 : position + 3]):
            raise Refused(400, f"invalid percent-escape at position {position} of the id")
    try:
        return validate_job_id(unquote(segment, errors="strict"))
    except UnicodeDecodeError:
        raise Refused(400, "the percent-encoded id is not UTF-8") from None
    except InvalidJobId as exc:
        raise Refused(400, str(exc)) from None


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(char in "0123456789abcdefABCDEF" for char in text)


def ids_of(body: bytes) -> list[str]:
    """The ``ids`` of a POST /jobs body, all validated; 400 naming the first problem."""
    return ids_and_ttl(body)[0]


def ids_and_ttl(body: bytes) -> tuple[list[str], object]:
    """The ``ids`` (validated) and the ``ttl`` (unchecked, None if absent) of a POST."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, 'the body is not JSON; expected {"ids": ["...", ...]}') from None
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise Refused(400, 'expected a JSON object {"ids": ["...", ...]}')
    unknown = sorted(set(data) - {"ids", "ttl"})
    if unknown:
        raise Refused(400, f"unknown fields {unknown}")
    ids: list[str] = data["ids"]
    for index, job_id in enumerate(ids):
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            raise Refused(400, f"ids[{index}]: {exc}; nothing was changed") from None
    return list(dict.fromkeys(ids)), data.get("ttl")


async def read_body(request: web.BaseRequest) -> bytes:
    """The request body, at most MAX_BODY bytes (413 beyond, chunked bodies included)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, f"the body is over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1):
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
