"""Scripted faults: what the emulator answers in place of (or before) the real answer.

Owns :class:`Fault` (one scripted answer, and its control-API JSON form),
:class:`FaultPlan` (which fault a request gets: scripted ones used once each, in order,
those for the request's job id before those for any job; persistent ones until
cleared) and the Elasticsearch-style answer a fault turns into. It does not decide when
faults apply or carry out delays and resets: the request handler (``handler``) does,
before the credential check, as a proxy or a struggling cluster would answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from heartbeat.emulator.wire import JSON, PRODUCT, es_error, es_json

_FAULT_TYPES = {
    400: ("illegal_argument_exception", "emulated bad request"),
    401: ("security_exception", "unable to authenticate with provided credentials"),
    403: ("security_exception", "action is unauthorized (emulated)"),
    404: ("resource_not_found_exception", "resource not found (emulated)"),
    409: ("version_conflict_engine_exception", "version conflict, document was updated"),
    429: ("es_rejected_execution_exception", "rejected execution of coordinating operation"),
    500: ("exception", "emulated internal error"),
    503: ("unavailable_shards_exception", "primary shard is not active"),
    504: ("timeout_exception", "timed out waiting for the operation"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted answer in place of (or before) the real one.

    ``reset`` aborts the TCP connection without a response. Otherwise, after ``delay``
    seconds: with ``status`` or ``body`` set, that answer (``body`` verbatim, else an
    Elasticsearch error envelope for ``error_type``/``reason`` or defaults chosen from the
    status); with neither, the real answer. ``product_header=False`` drops
    ``X-Elastic-Product``, as a proxy or load balancer would answer.
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    reset: bool = False
    product_header: bool = True
    body: bytes | None = None
    content_type: str = JSON
    error_type: str | None = None
    reason: str | None = None
    actions: frozenset[str] = frozenset({"check_in"})

    def matches(self, action: str) -> bool:
        return "*" in self.actions or action in self.actions

    def to_json(self) -> dict[str, Any]:
        """The control-API form; ``body`` must then be UTF-8 text."""
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "reset": self.reset,
            "product_header": self.product_header,
            "body": None if self.body is None else self.body.decode("utf-8"),
            "content_type": self.content_type,
            "error_type": self.error_type,
            "reason": self.reason,
            "actions": sorted(self.actions),
        }

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """Inverse of :meth:`to_json`; missing keys take the defaults. Raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        values = dict(data)
        if values.get("body") is not None:
            values["body"] = str(values["body"]).encode("utf-8")
        if "actions" in values:
            actions = values["actions"]
            if isinstance(actions, str):
                actions = [actions]  # one action, not its letters
            values["actions"] = frozenset(str(a) for a in actions)
        if isinstance(values.get("retry_after"), int | float):
            values["retry_after"] = str(values["retry_after"])
        try:
            fault = cls(**values)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        if fault.status is not None and not isinstance(fault.status, int):
            raise ValueError("status must be an integer or null")
        if not isinstance(fault.delay, int | float) or fault.delay < 0:
            raise ValueError("delay must be a non-negative number")
        return fault


class FaultPlan:
    """Scripted (used once, in order) and persistent faults, per job id or for any job."""

    def __init__(self) -> None:
        self._scripted: dict[str | None, deque[Fault]] = {}
        self._always: dict[str | None, Fault] = {}

    def script(self, faults: Iterable[Fault], job_id: str | None = None) -> None:
        """Queue ``faults`` after any already queued for ``job_id`` (None: any job)."""
        self._scripted.setdefault(job_id, deque()).extend(faults)

    def always(self, fault: Fault | None, job_id: str | None = None) -> None:
        """Answer with ``fault`` until replaced; None clears it."""
        if fault is None:
            self._always.pop(job_id, None)
        else:
            self._always[job_id] = fault

    def clear(self) -> None:
        self._scripted.clear()
        self._always.clear()

    def pending(self, job_id: str | None = None) -> int:
        """How many scripted faults for ``job_id`` (None: any job) are still unused."""
        return len(self._scripted.get(job_id, ()))

    def take(self, action: str, job_id: str | None) -> Fault | None:
        """The fault for this request, consuming it if scripted; None: answer normally."""
        keys: tuple[str | None, ...] = (None,) if job_id is None else (job_id, None)
        for key in keys:
            queue = self._scripted.get(key)
            for index, fault in enumerate(queue or ()):
                if fault.matches(action):
                    del cast(deque[Fault], queue)[index]
                    return fault
        for key in keys:
            persistent = self._always.get(key)
            if persistent is not None and persistent.matches(action):
                return persistent
        return None


def fault_response(fault: Fault, job_id: str | None) -> web.Response:
    """The answer a fault with ``status`` or ``body`` set gives instead of the real one."""
    if fault.body is not None:
        response = web.Response(status=fault.status or 200, body=fault.body)
        response.headers["Content-Type"] = fault.content_type
        response.headers[PRODUCT] = "Elasticsearch"
        return response
    status = cast(int, fault.status)
    if status < 400:
        return es_json(status, {})
    default_type, default_reason = _FAULT_TYPES.get(status, ("exception", "emulated error"))
    if status == 404 and job_id is not None:
        default_reason = f"connector sync job [{job_id}] not found"
    return es_error(status, fault.error_type or default_type, fault.reason or default_reason)
