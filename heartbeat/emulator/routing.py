"""Elasticsearch's router, as the emulator models it: raw request target to action.

Owns :func:`decode_path` and :func:`route`. Routing works on the raw request target, as
Elasticsearch's own router does: the path (query string cut off) is split on ``/`` and
only the job-id segment is percent-decoded, so ``a%2Fb`` is the job ``a/b`` and
``%2E%2E`` the job ``..``. Nothing is normalised, and a literal ``.`` or ``..`` segment
never matches an endpoint. Unknown paths answer 400 ``no handler found``, a known path
with the wrong method 405. It does not own what an action does (``api``) nor the
``/_emulator`` prefix, which the request handler sends to ``control`` before routing.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from heartbeat.emulator.wire import Reject, es_error, router_error

_JOB_SUFFIXES = {"_check_in": "check_in", "_claim": "claim", "_cancel": "cancel", "_error": "error"}
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def decode_path(raw_path: str) -> list[str] | None:
    """Split a raw request target into still-encoded segments, as Elasticsearch does.

    The query string is cut off and trailing empty segments dropped (Java's split);
    None when the target is not a path or holds a literal ``.``/``..`` segment.
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    while segments and segments[-1] == "":
        segments.pop()
    if any(segment in {".", ".."} for segment in segments):
        return None
    return segments


def unquote_strict(segment: str) -> str:
    """Percent-decode one segment; ValueError (UnicodeDecodeError included) if malformed."""
    if _BAD_ESCAPE.search(segment):
        raise ValueError(f"invalid escape sequence in path segment [{segment}]")
    return unquote(segment, errors="strict")


def route(method: str, raw_path: str, segments: list[str] | None) -> tuple[str, str | None]:
    """(action, job id) for a request, or Reject with the router's answer."""
    path = raw_path.split("?", 1)[0]
    methods: dict[str, str] = {}
    raw_id: str | None = None
    if segments == []:
        methods = {"GET": "info", "HEAD": "info"}
    elif segments is not None and segments[:2] == ["_connector", "_sync_job"]:
        if len(segments) == 2:
            methods = {"GET": "list", "POST": "post"}
        elif len(segments) == 3:
            methods, raw_id = {"GET": "get", "DELETE": "delete"}, segments[2]
        elif len(segments) == 4 and segments[3] in _JOB_SUFFIXES:
            methods, raw_id = {"PUT": _JOB_SUFFIXES[segments[3]]}, segments[2]
    if not methods:
        message = f"no handler found for uri [{raw_path}] and method [{method}]"
        raise Reject(router_error(400, message))
    if method not in methods:
        allowed = ", ".join(sorted(methods))
        message = (
            f"Incorrect HTTP method for uri [{path}] and method [{method}], allowed: [{allowed}]"
        )
        response = router_error(405, message)
        response.headers["Allow"] = ",".join(sorted(methods))
        raise Reject(response)
    if raw_id is None:
        return methods[method], None
    try:
        return methods[method], unquote_strict(raw_id)
    except ValueError as exc:  # UnicodeDecodeError included
        raise Reject(es_error(400, "illegal_argument_exception", str(exc))) from None
