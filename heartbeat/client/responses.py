"""A complete HTTP response from a server, and what it means for a request.

Owns :class:`Response` (status, product header, raw body, ``Retry-After``; the body
parsed only when asked for) and :func:`classify`, the one mapping of an response onto
an :mod:`heartbeat.outcomes` value. It does no I/O and knows nothing of hosts or
sessions: :mod:`heartbeat.client.transport` builds a Response, :mod:`heartbeat.client`
classifies it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from heartbeat import backoff
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Outcome,
    Rejected,
    Retryable,
    Success,
    Unauthorized,
)

if TYPE_CHECKING:
    from heartbeat.hosts import Host

#: Elasticsearch's response to a check-in, byte for byte. This body is known to be JSON
#: without parsing it, which the check-in hot path relies on; any other body is parsed.
CHECKIN_UPDATED = b'{"result":"updated"}'
#: The outcome of every ordinary check-in: outcomes are immutable, so one will do.
SUCCESS_200 = Success(200)


class Response:
    """A complete HTTP response from a server (not necessarily Elasticsearch).

    The body is parsed as JSON only when asked for (:attr:`body`): a successful
    check-in's response never needs it.
    """

    __slots__ = ("_body", "_parsed", "host", "is_elasticsearch", "raw", "retry_after", "status")

    def __init__(
        self, status: int, is_elasticsearch: bool, raw: bytes, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.is_elasticsearch = is_elasticsearch
        self.raw = raw
        self.retry_after = retry_after
        self.host: Host | None = None  # which host answered (set by the Client)
        self._body: Any = None
        self._parsed = False

    def __repr__(self) -> str:
        return f"Response(status={self.status}, is_elasticsearch={self.is_elasticsearch})"

    @property
    def body(self) -> Any:
        """The parsed JSON body, or None when it is empty or not JSON."""
        if not self._parsed:
            self._parsed = True
            if self.raw:
                try:
                    self._body = json.loads(self.raw)
                except ValueError:
                    self._body = None
        return self._body

    def is_json(self) -> bool:
        """Whether the body is empty or JSON (without parsing the usual response)."""
        return not self.raw or self.raw == CHECKIN_UPDATED or self.body is not None


def _error(body: Any) -> tuple[str | None, str]:
    """``(error type, reason)`` from Elasticsearch's error envelope, if it is one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind = error.get("type")
            reason = error.get("reason")
            return (
                kind if isinstance(kind, str) else None,
                reason if isinstance(reason, str) else "",
            )
        if isinstance(error, str):
            return None, error
    return None, ""


def _snippet(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", errors="replace").strip()
    return " ".join(text.split())


def classify(response: Response, *, now_wall: float) -> Outcome:
    """Map a complete HTTP response onto an outcome (see :mod:`heartbeat.outcomes`)."""
    status = response.status
    if 200 <= status < 300:
        if not response.is_elasticsearch:
            # The official client refuses this too: a proxy's 200 is not a check-in.
            return Misrouted(status, "2xx answer without X-Elastic-Product: Elasticsearch")
        if not response.is_json():
            return Retryable("malformed", "2xx answer whose body is not JSON", status=status)
        return SUCCESS_200 if status == 200 else Success(status)
    kind, reason = _error(response.body)
    if status == 404:
        if response.is_elasticsearch and kind == "resource_not_found_exception":
            return NotFound(reason or "not found")
        why = (
            f"404 from Elasticsearch with error type {kind!r}"
            if response.is_elasticsearch
            else f"404 without X-Elastic-Product: {_snippet(response.raw) or 'empty body'}"
        )
        return Misrouted(404, why)
    if status in (401, 403):
        return Unauthorized(status, reason or _snippet(response.raw) or f"HTTP {status}")
    if status == 400:
        if reason.startswith("no handler found for uri"):
            # Elasticsearch, but not our endpoint: a wrong path prefix in hosts.
            return Misrouted(400, reason)
        if response.is_elasticsearch:
            return Rejected(400, reason or _snippet(response.raw) or "bad request")
        return Misrouted(400, f"400 without X-Elastic-Product: {_snippet(response.raw)}")
    if status in (408, 409, 429) or 500 <= status < 600:
        return Retryable(
            "http",
            reason or _snippet(response.raw) or f"HTTP {status}",
            status=status,
            retry_after=backoff.parse_retry_after(response.retry_after, now_wall=now_wall),
            job_specific=status == 409,
        )
    return Misrouted(status, f"unexpected HTTP {status}: {reason or _snippet(response.raw)}")
