"""Elasticsearch's wire format, as the emulator speaks it.

Owns the JSON encoding, the ``X-Elastic-Product`` header, the request as it reached
the server (:class:`RecordedRequest`, the request log's entry), the two error envelopes
(Elasticsearch's standard one and its router's flat one) and :class:`Reject`, which
carries an early answer out of a check. It does not decide which answer a request gets:
the router (``routing``), the credential checks (``auth``), the endpoints (``api``) and
the faults (``faults``) do. The ``/_emulator`` control API answers plain JSON without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

PRODUCT = "X-Elastic-Product"
JSON = "application/json"


@dataclass(slots=True)
class RecordedRequest:
    """What reached the server. ``status`` is the answer given (None: reset or cut off)."""

    method: str
    raw_path: str
    job_id: str | None
    action: str | None
    headers: CIMultiDictProxy[str] = field(repr=False)  # holds credentials
    body: bytes = field(repr=False)
    at: float
    status: int | None = None


class Reject(Exception):
    """Carries an early answer out of the checks; never escapes the emulator package."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


def dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def es_json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=dumps(payload), content_type=JSON)
    response.headers[PRODUCT] = "Elasticsearch"
    response.headers.extend(headers or {})
    return response


def es_error(status: int, error_type: str, reason: str, **extra: Any) -> web.Response:
    """Elasticsearch's standard error envelope."""
    cause = {"type": error_type, "reason": reason, **extra}
    return es_json(status, {"error": {"root_cause": [cause], **cause}, "status": status})


def router_error(status: int, message: str) -> web.Response:
    """The flat envelope Elasticsearch's router uses before any handler runs."""
    return es_json(status, {"error": message, "status": status})


def invalid(message: str) -> Reject:
    reason = f"Validation Failed: 1: {message};"
    return Reject(es_error(400, "action_request_validation_exception", reason))


def not_found(job_id: str) -> Reject:
    reason = f"connector sync job [{job_id}] not found"
    return Reject(es_error(404, "resource_not_found_exception", reason))
