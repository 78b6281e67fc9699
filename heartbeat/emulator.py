"""The built-in Elasticsearch stand-in: the connector sync-job API on a loopback socket.

Owns an in-memory store of sync-job documents, the HTTP surface that serves them with
Elasticsearch's status codes, error envelopes and ``X-Elastic-Product`` header, a log of
every request that reached it, and scripted faults. It does not own anything the daemon
runs in production: only tests, the benchmark and ``heartbeat emulator`` import it.

Elasticsearch API (``X-Elastic-Product: Elasticsearch`` and JSON on every answer)::

    GET    /                                     cluster info (version, tagline)
    POST   /_connector/_sync_job                 {"id": connector, "job_type"?} -> 201 {"id"}
    GET    /_connector/_sync_job?status=&connector_id=&job_type=&from=0&size=100
    GET    /_connector/_sync_job/<id>            the document, or 404
    DELETE /_connector/_sync_job/<id>            {"acknowledged": true}
    PUT    /_connector/_sync_job/<id>/_check_in  no body; sets last_seen, whatever the status
    PUT    /_connector/_sync_job/<id>/_claim     {"worker_hostname"}: in_progress
    PUT    /_connector/_sync_job/<id>/_cancel    pending/suspended -> canceled,
                                                 in_progress -> canceling, else 400
    PUT    /_connector/_sync_job/<id>/_error     {"error"}: status error

Routing works on the raw request target, as Elasticsearch's own router does: the path
(query string cut off) is split on ``/`` and only the job-id segment is percent-decoded,
so ``a%2Fb`` is the job ``a/b`` and ``%2E%2E`` the job ``..``. Nothing is normalised, and
a literal ``.`` or ``..`` segment never matches an endpoint (stricter than Elasticsearch,
which would take it as an id, because any proxy in between would resolve it). Unknown
paths answer 400 ``no handler found``, a known path with the wrong method 405.

Not modelled: connectors (any connector id is accepted), a missing sync-jobs index,
``_stats``, ``filter_path``. A raw non-ASCII byte in the request line is refused by
aiohttp's parser (plain-text 400, no product header) before it reaches this module.

Credentials (optional): ``Emulator(api_key=..., basic=(user, password), bearer=...)``;
when any is set, each request needs ``Authorization`` matching one of them exactly
(scheme case-insensitive), else 401 ``security_exception`` with ``WWW-Authenticate``.
``emu.privileges`` is ``"manage"`` (everything), ``"monitor"`` (only reads) or
``"none"``; a refused action answers 403 ``security_exception``.

Faults (``emu.faults``, or ``emu.script`` / ``emu.always``) apply to Elasticsearch API
requests whose action is in ``Fault.actions`` (default: check-ins only; ``"*"`` for
every routed request). They come before the credential check, as a proxy or a struggling
cluster would answer. Scripted faults are used once each, in order, those for the
request's job id before those for any job; a persistent fault answers until cleared.

Control API for an emulator in another process (no credentials, not logged, plain JSON)::

    POST   /_emulator/jobs               {"connector_id", "status", "worker_hostname",
                                          "job_type", "job_id"} -> {"id"}
    GET    /_emulator/jobs/<id>          the document, or 404
    DELETE /_emulator/jobs/<id>
    PUT    /_emulator/jobs/<id>/status   {"status": "completed"}
    POST   /_emulator/faults             {"mode": "script"|"always", "job_id": null,
                                          "faults": [Fault.to_json(), ...]}
    DELETE /_emulator/faults             clears every fault
    GET    /_emulator/requests           {"total", "by_action", "check_ins": {id: n}}
    DELETE /_emulator/requests           forgets the request log
    PUT    /_emulator/auth               {"api_key"?, "privileges"?}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import signal
import ssl
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import unquote

import anyio
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "JOB_TYPES",
    "STATUSES",
    "Emulator",
    "Fault",
    "FaultPlan",
    "Privileges",
    "RecordedRequest",
    "decode_path",
    "run_emulator",
    "serve",
]

STATUSES = ("pending", "in_progress", "canceling", "canceled", "suspended", "completed", "error")
JOB_TYPES = ("full", "incremental", "access_control")
Privileges = Literal["manage", "monitor", "none"]

_PRODUCT = "X-Elastic-Product"
_JSON = "application/json"
_GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace", "filter_path"})
_LIST_PARAMS = frozenset({"from", "size", "status", "connector_id", "job_type"})
_READ_ACTIONS = frozenset({"info", "get", "list"})
_JOB_SUFFIXES = {"_check_in": "check_in", "_claim": "claim", "_cancel": "cancel", "_error": "error"}
_ES_ACTIONS = {
    "info": "cluster:monitor/main",
    "list": "cluster:admin/xpack/connector/sync_job/list",
    "post": "cluster:admin/xpack/connector/sync_job/post",
    "get": "cluster:admin/xpack/connector/sync_job/get",
    "delete": "cluster:admin/xpack/connector/sync_job/delete",
    "check_in": "cluster:admin/xpack/connector/sync_job/check_in",
    "claim": "cluster:admin/xpack/connector/sync_job/claim",
    "cancel": "cluster:admin/xpack/connector/sync_job/cancel",
    "error": "cluster:admin/xpack/connector/sync_job/update_error",
}
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
_WWW_AUTHENTICATE = ('Basic realm="security", charset="UTF-8"', 'Bearer realm="security"', "ApiKey")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    content_type: str = _JSON
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
            values["actions"] = frozenset(str(a) for a in values["actions"])
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


@dataclass(slots=True)
class RecordedRequest:
    """What reached the server. ``status`` is the answer given (None: reset or cut off)."""

    method: str
    raw_path: str
    job_id: str | None
    action: str | None
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float
    status: int | None = None


@dataclass(slots=True)
class _Job:
    id: str
    connector_id: str
    job_type: str
    status: str
    created_at: datetime
    seq: int
    last_seen: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    canceled_at: datetime | None = None
    cancelation_requested_at: datetime | None = None
    worker_hostname: str | None = None
    trigger_method: str = "on_demand"
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector": {"id": self.connector_id},
            "status": self.status,
            "job_type": self.job_type,
            "trigger_method": self.trigger_method,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "last_seen": _iso(self.last_seen),
            "completed_at": _iso(self.completed_at),
            "canceled_at": _iso(self.canceled_at),
            "cancelation_requested_at": _iso(self.cancelation_requested_at),
            "worker_hostname": self.worker_hostname,
            "error": self.error,
            "deleted_document_count": 0,
            "indexed_document_count": 0,
            "indexed_document_volume": 0,
            "total_document_count": 0,
            "metadata": {},
        }


class _Reject(Exception):
    """Carries an early answer out of the checks; never escapes this module."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


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


def _unquote_strict(segment: str) -> str:
    if _BAD_ESCAPE.search(segment):
        raise ValueError(f"invalid escape sequence in path segment [{segment}]")
    return unquote(segment, errors="strict")


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=_dumps(payload), content_type=_JSON)
    response.headers[_PRODUCT] = "Elasticsearch"
    response.headers.extend(headers or {})
    return response


def _error(status: int, error_type: str, reason: str, **extra: Any) -> web.Response:
    """Elasticsearch's standard error envelope."""
    cause = {"type": error_type, "reason": reason, **extra}
    return _json(status, {"error": {"root_cause": [cause], **cause}, "status": status})


def _simple_error(status: int, message: str) -> web.Response:
    """The flat envelope Elasticsearch's router uses before any handler runs."""
    return _json(status, {"error": message, "status": status})


def _invalid(message: str) -> _Reject:
    reason = f"Validation Failed: 1: {message};"
    return _Reject(_error(400, "action_request_validation_exception", reason))


def _not_found(job_id: str) -> _Reject:
    reason = f"connector sync job [{job_id}] not found"
    return _Reject(_error(404, "resource_not_found_exception", reason))


class Emulator:
    """The sync-job store, its HTTP handler, the request log and the fault plan."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        privileges: Privileges = "manage",
        version: str = "9.1.0",
        now: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.basic = basic
        self.bearer = bearer
        self.privileges: Privileges = privileges
        self.version = version
        self.requests: list[RecordedRequest] = []
        self.faults = FaultPlan()
        self._now = now
        self._monotonic = monotonic
        self._jobs: dict[str, _Job] = {}
        self._seq = 0

    def __repr__(self) -> str:  # credentials stay out of reprs
        return f"<Emulator jobs={len(self._jobs)} requests={len(self.requests)}>"

    # -- Python API -------------------------------------------------------------------

    def create_job(
        self,
        connector_id: str = "c1",
        job_type: str = "full",
        status: str = "in_progress",
        worker_hostname: str | None = None,
        job_id: str | None = None,
    ) -> str:
        """Store a job and return its id (random, 20 url-safe characters, unless given)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if job_type not in JOB_TYPES:
            raise ValueError(f"unknown job type {job_type!r}")
        job_id = secrets.token_urlsafe(15) if job_id is None else job_id
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} already exists")
        moment = self._now()
        self._seq += 1
        self._jobs[job_id] = _Job(
            id=job_id,
            connector_id=connector_id,
            job_type=job_type,
            status="pending",
            created_at=moment,
            seq=self._seq,
            last_seen=moment,
            worker_hostname=worker_hostname,
        )
        if status != "pending":
            self.set_status(job_id, status)
        return job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's document as GET would return it, or None."""
        job = self._jobs.get(job_id)
        return None if job is None else job.document()

    def delete_job(self, job_id: str) -> None:
        """Forget a job, as if deleted (later check-ins 404). Missing ids are ignored."""
        self._jobs.pop(job_id, None)

    def set_status(self, job_id: str, status: str) -> None:
        """Move a job to ``status``, stamping the matching timestamp. KeyError if missing."""
        job = self._jobs[job_id]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        moment = self._now()
        job.status = status
        if status == "in_progress" and job.started_at is None:
            job.started_at = moment
        elif status == "canceling":
            job.cancelation_requested_at = moment
        elif status in {"completed", "canceled", "error"}:
            job.completed_at = moment
            if status == "canceled":
                job.canceled_at = moment

    def export_jobs(self) -> list[dict[str, Any]]:
        """Every job as plain data (for :meth:`import_jobs` in another process)."""
        return [
            {
                "job_id": job.id,
                "connector_id": job.connector_id,
                "job_type": job.job_type,
                "status": job.status,
                "worker_hostname": job.worker_hostname,
            }
            for job in sorted(self._jobs.values(), key=lambda j: j.seq)
        ]

    def import_jobs(self, jobs: Iterable[dict[str, Any]]) -> None:
        """Create the jobs :meth:`export_jobs` described (timestamps start afresh)."""
        for job in jobs:
            self.create_job(
                connector_id=job["connector_id"],
                job_type=job["job_type"],
                status=job["status"],
                worker_hostname=job.get("worker_hostname"),
                job_id=job["job_id"],
            )

    def checkins(self, job_id: str | None = None) -> list[RecordedRequest]:
        """Recorded check-in requests, all of them or those naming ``job_id``."""
        return [
            record
            for record in self.requests
            if record.action == "check_in" and (job_id is None or record.job_id == job_id)
        ]

    def script(self, faults: Iterable[Fault], job_id: str | None = None) -> None:
        self.faults.script(faults, job_id)

    def always(self, fault: Fault | None, job_id: str | None = None) -> None:
        self.faults.always(fault, job_id)

    # -- HTTP -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The one request handler: control API, or record, fault and answer."""
        segments = decode_path(request.raw_path)
        if segments and segments[0] == "_emulator":
            return await self._control(request, segments[1:])
        body = await request.read()
        action: str | None = None
        job_id: str | None = None
        answer: web.Response | None = None
        try:
            action, job_id = self._route(request.method, request.raw_path, segments)
        except _Reject as rejected:
            answer = rejected.response
        record = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            job_id=job_id,
            action=action,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            at=self._monotonic(),
        )
        self.requests.append(record)
        fault = None if action is None else self.faults.take(action, job_id)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.reset:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault is not None and (fault.status is not None or fault.body is not None):
            answer = self._fault_response(fault, job_id)
        elif action is not None:
            answer = self._answer(request, action, job_id, body)
        assert answer is not None  # routed, or the router's rejection
        if fault is not None:
            if fault.retry_after is not None:
                answer.headers["Retry-After"] = fault.retry_after
            if not fault.product_header:
                answer.headers.popall(_PRODUCT, None)
        record.status = answer.status
        return answer

    def _route(
        self, method: str, raw_path: str, segments: list[str] | None
    ) -> tuple[str, str | None]:
        """(action, job id) for a request, or _Reject with the router's answer."""
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
            raise _Reject(_simple_error(400, message))
        if method not in methods:
            allowed = ", ".join(sorted(methods))
            message = (
                f"Incorrect HTTP method for uri [{path}] and method [{method}], "
                f"allowed: [{allowed}]"
            )
            response = _simple_error(405, message)
            response.headers["Allow"] = ",".join(sorted(methods))
            raise _Reject(response)
        if raw_id is None:
            return methods[method], None
        try:
            return methods[method], _unquote_strict(raw_id)
        except ValueError as exc:  # UnicodeDecodeError included
            raise _Reject(_error(400, "illegal_argument_exception", str(exc))) from None

    def _answer(
        self, request: web.BaseRequest, action: str, job_id: str | None, body: bytes
    ) -> web.Response:
        try:
            self._check_credentials(request, action)
            self._check_params(request, action)
            self._check_media_types(request)
            if body and action not in {"post", "claim", "error"}:
                path = request.raw_path.split("?", 1)[0]
                reason = f"request [{request.method} {path}] does not support having a body"
                raise _Reject(_error(400, "illegal_argument_exception", reason))
            if action in {"post", "claim", "error"} and not body:
                raise _Reject(_error(400, "parse_exception", "request body is required"))
            if job_id == "":
                raise _invalid(
                    "[connector_sync_job_id] of the connector sync job cannot be null or empty."
                )
            return self._execute(request, action, job_id, body)
        except _Reject as rejected:
            return rejected.response

    def _execute(
        self, request: web.BaseRequest, action: str, job_id: str | None, body: bytes
    ) -> web.Response:
        if action == "info":
            return self._info()
        if action == "list":
            return self._list(request.query)
        if action == "post":
            return self._post(body)
        assert job_id is not None  # every other action names a job
        job = self._jobs.get(job_id)
        if job is None:
            raise _not_found(job_id)
        moment = self._now()
        if action == "get":
            return _json(200, job.document())
        if action == "delete":
            del self._jobs[job_id]
            return _json(200, {"acknowledged": True})
        if action == "check_in":
            job.last_seen = moment
        elif action == "claim":
            fields = self._parse(
                body, "claim_connector_sync_job", {"worker_hostname", "sync_cursor"}
            )
            if not isinstance(fields.get("worker_hostname"), str):
                raise _invalid("[worker_hostname] of the connector sync job cannot be null.")
            job.worker_hostname = fields["worker_hostname"]
            job.status, job.started_at, job.last_seen = "in_progress", moment, moment
        elif action == "cancel":
            self._cancel(job)
        elif action == "error":
            fields = self._parse(body, "connector_sync_job_error_request", {"error"})
            if not isinstance(fields.get("error"), str) or not fields["error"]:
                raise _invalid("[error] of the connector sync job cannot be null or empty")
            job.status, job.error = "error", fields["error"]
        return _json(200, {"result": "updated"})

    def _cancel(self, job: _Job) -> None:
        if job.status in {"pending", "suspended"}:
            self.set_status(job.id, "canceled")
        elif job.status == "in_progress":
            self.set_status(job.id, "canceling")
        else:
            reason = (
                f"Invalid transition attempt from [{job.status}] to [canceling]. Such a "
                "ConnectorSyncStatus transition is not supported by the Connector Protocol."
            )
            raise _Reject(_error(400, "status_exception", reason))

    def _info(self) -> web.Response:
        return _json(
            200,
            {
                "name": "heartbeat-emulator",
                "cluster_name": "heartbeat-emulator",
                "cluster_uuid": "emulator",
                "version": {"number": self.version, "build_flavor": "default"},
                "tagline": "You Know, for Search",
            },
        )

    def _list(self, query: Mapping[str, str]) -> web.Response:
        start, size = self._int_param(query, "from", 0), self._int_param(query, "size", 100)
        status = query.get("status")
        if status is not None and status.lower() not in STATUSES:
            reason = f"Unknown ConnectorSyncStatus [{status}]."
            raise _Reject(_error(400, "illegal_argument_exception", reason))
        job_types = None
        if query.get("job_type"):
            job_types = set(query["job_type"].lower().split(","))
            for job_type in job_types - set(JOB_TYPES):
                reason = f"Unknown ConnectorSyncJobType [{job_type}]."
                raise _Reject(_error(400, "illegal_argument_exception", reason))
        connector_id = query.get("connector_id")
        matching = [
            job
            for job in self._jobs.values()
            if (status is None or job.status == status.lower())
            and (connector_id is None or job.connector_id == connector_id)
            and (job_types is None or job.job_type in job_types)
        ]
        matching.sort(key=lambda job: (job.created_at, job.seq), reverse=True)
        results = [job.document() for job in matching[start : start + size]]
        return _json(200, {"count": len(matching), "results": results})

    @staticmethod
    def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
        text = query.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            reason = f"Failed to parse int parameter [{name}] with value [{text}]"
            raise _Reject(_error(400, "illegal_argument_exception", reason)) from None
        if value < 0:
            raise _invalid(f"[{name}] parameter cannot be negative, found [{value}]")
        return value

    def _post(self, body: bytes) -> web.Response:
        fields = self._parse(
            body, "connector_sync_job_post_request", {"id", "job_type", "trigger_method"}
        )
        if "id" not in fields:
            raise _Reject(_error(400, "illegal_argument_exception", "Required [id]"))
        if not isinstance(fields["id"], str) or not fields["id"]:
            raise _invalid("[id] of the connector cannot be null or empty")
        job_type = fields.get("job_type") or "full"
        if job_type not in JOB_TYPES:
            reason = f"Unknown ConnectorSyncJobType [{job_type}]."
            raise _Reject(_error(400, "illegal_argument_exception", reason))
        job_id = self.create_job(connector_id=fields["id"], job_type=job_type, status="pending")
        if isinstance(fields.get("trigger_method"), str):
            self._jobs[job_id].trigger_method = fields["trigger_method"]
        return _json(201, {"id": job_id})

    @staticmethod
    def _parse(body: bytes, parser: str, allowed: set[str]) -> dict[str, Any]:
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = f"[{parser}] failed to parse request body: {exc}"
            raise _Reject(_error(400, "x_content_parse_exception", reason)) from None
        if not isinstance(fields, dict):
            reason = f"[{parser}] expected an object"
            raise _Reject(_error(400, "x_content_parse_exception", reason))
        for name in fields:
            if name not in allowed:
                reason = f"[{parser}] unknown field [{name}]"
                raise _Reject(_error(400, "x_content_parse_exception", reason))
        return fields

    def _check_params(self, request: web.BaseRequest, action: str) -> None:
        allowed = _GLOBAL_PARAMS | (_LIST_PARAMS if action == "list" else frozenset())
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            path = request.raw_path.split("?", 1)[0]
            names = ", ".join(f"[{name}]" for name in unknown)
            noun = "parameter" if len(unknown) == 1 else "parameters"
            reason = f"request [{path}] contains unrecognized {noun}: {names}"
            raise _Reject(_error(400, "illegal_argument_exception", reason))

    def _check_media_types(self, request: web.BaseRequest) -> None:
        major = int(self.version.split(".", 1)[0])
        for header in ("Accept", "Content-Type"):
            match = re.search(r"compatible-with=(\d+)", request.headers.get(header, ""))
            if match and int(match.group(1)) not in {major, major - 1}:
                reason = f"Invalid media-type value on headers [{header}]"
                raise _Reject(_error(400, "media_type_header_exception", reason))

    def _check_credentials(self, request: web.BaseRequest, action: str) -> None:
        principal = "user [_anonymous]"
        if self.api_key is not None or self.basic is not None or self.bearer is not None:
            header = request.headers.get("Authorization")
            if header is None:
                path = request.raw_path.split("?", 1)[0]
                raise self._unauthenticated(
                    f"missing authentication credentials for REST request [{path}]"
                )
            scheme, _, value = header.partition(" ")
            principal_or_none = self._authenticate(scheme.lower(), value)
            if principal_or_none is None:
                raise self._unauthenticated(
                    "unable to authenticate with provided credentials and anonymous access "
                    "is not allowed for this request"
                )
            principal = principal_or_none
        if self.privileges == "manage" or (
            self.privileges == "monitor" and action in _READ_ACTIONS
        ):
            return
        reason = (
            f"action [{_ES_ACTIONS[action]}] is unauthorized for {principal}, this action is "
            "granted by the cluster privileges [manage_connector,manage,all]"
        )
        raise _Reject(_error(403, "security_exception", reason))

    def _authenticate(self, scheme: str, value: str) -> str | None:
        """The principal's description for 403 messages, or None if nothing matches."""
        if scheme == "apikey" and self.api_key is not None and value == self.api_key:
            try:
                key_id = base64.b64decode(value, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key_id = "unknown"
            return f"API key id [{key_id or 'unknown'}] of user [heartbeat]"
        if scheme == "basic" and self.basic is not None:
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            if value == expected:
                return f"user [{self.basic[0]}] with effective roles [heartbeat]"
        if scheme == "bearer" and self.bearer is not None and value == self.bearer:
            return "user [heartbeat] with effective roles [heartbeat]"
        return None

    @staticmethod
    def _unauthenticated(reason: str) -> _Reject:
        header = {"WWW-Authenticate": list(_WWW_AUTHENTICATE)}
        response = _error(401, "security_exception", reason, header=header)
        for challenge in _WWW_AUTHENTICATE:
            response.headers.add("WWW-Authenticate", challenge)
        return _Reject(response)

    @staticmethod
    def _fault_response(fault: Fault, job_id: str | None) -> web.Response:
        if fault.body is not None:
            response = web.Response(status=fault.status or 200, body=fault.body)
            response.headers["Content-Type"] = fault.content_type
            response.headers[_PRODUCT] = "Elasticsearch"
            return response
        status = cast(int, fault.status)
        if status < 400:
            return _json(status, {})
        default_type, default_reason = _FAULT_TYPES.get(status, ("exception", "emulated error"))
        if status == 404 and job_id is not None:
            default_reason = f"connector sync job [{job_id}] not found"
        return _error(status, fault.error_type or default_type, fault.reason or default_reason)

    # -- control API ------------------------------------------------------------------

    async def _control(self, request: web.BaseRequest, segments: list[str]) -> web.Response:
        method, body = request.method, await request.read()
        try:
            data: Any = json.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            ids = [_unquote_strict(segment) for segment in segments[1:2]]
            return self._control_dispatch(method, segments, ids[0] if ids else None, data)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except KeyError as exc:
            return web.json_response({"error": f"no such job {exc}"}, status=404)

    def _control_dispatch(
        self, method: str, segments: list[str], job_id: str | None, data: dict[str, Any]
    ) -> web.Response:
        route = (method, segments[0] if segments else "", len(segments))
        if route == ("POST", "jobs", 1):
            new_id = self.create_job(
                connector_id=str(data.get("connector_id", "c1")),
                job_type=str(data.get("job_type", "full")),
                status=str(data.get("status", "in_progress")),
                worker_hostname=data.get("worker_hostname"),
                job_id=data.get("job_id"),
            )
            return web.json_response({"id": new_id})
        if route[1:] == ("jobs", 2) and job_id is not None and method in {"GET", "DELETE"}:
            document = self.job(job_id)
            if document is None:
                raise KeyError(job_id)
            if method == "DELETE":
                self.delete_job(job_id)
            return web.json_response(document)
        if route == ("PUT", "jobs", 3) and job_id is not None and segments[2] == "status":
            self.set_status(job_id, str(data.get("status")))
            return web.json_response(self.job(job_id))
        if route == ("POST", "faults", 1):
            return self._control_faults(data)
        if route == ("DELETE", "faults", 1):
            self.faults.clear()
            return web.json_response({"acknowledged": True})
        if route == ("GET", "requests", 1):
            return web.json_response(self._summary())
        if route == ("DELETE", "requests", 1):
            self.requests.clear()
            return web.json_response({"acknowledged": True})
        if route == ("PUT", "auth", 1):
            if "api_key" in data:
                self.api_key = data["api_key"]
            if "privileges" in data:
                if data["privileges"] not in get_args(Privileges):
                    raise ValueError(f"unknown privileges {data['privileges']!r}")
                self.privileges = data["privileges"]
            return web.json_response({"acknowledged": True})
        return web.json_response({"error": f"no control endpoint {method} {segments}"}, status=404)

    def _control_faults(self, data: dict[str, Any]) -> web.Response:
        faults = [Fault.from_json(item) for item in data.get("faults") or []]
        job_id = data.get("job_id")
        if job_id is not None and not isinstance(job_id, str):
            raise ValueError("job_id must be a string or null")
        mode = data.get("mode", "script")
        if mode == "script":
            self.faults.script(faults, job_id)
        elif mode == "always" and len(faults) <= 1:
            self.faults.always(faults[0] if faults else None, job_id)
        else:
            raise ValueError("mode must be 'script', or 'always' with at most one fault")
        return web.json_response({"acknowledged": True})

    def _summary(self) -> dict[str, Any]:
        by_action = Counter(record.action or "unrouted" for record in self.requests)
        check_ins = Counter(record.job_id for record in self.checkins())
        return {
            "total": len(self.requests),
            "by_action": dict(by_action),
            "check_ins": {str(job_id): count for job_id, count in check_ins.items()},
        }


@asynccontextmanager
async def serve(
    emulator: Emulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 0.5,
) -> AsyncIterator[str]:
    """Serve ``emulator`` while the block runs; yields the base URL with the bound port.

    aiohttp's low-level server is used, with no router, so no route matching or path
    normalisation happens before :meth:`Emulator.handle`. A handler sleeping on a
    ``delay`` fault is cancelled when its client disconnects.
    """
    server = web.Server(emulator.handle, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = runner.addresses[0][1]
        # a wildcard bind is reached over loopback
        url_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        if ":" in url_host:
            url_host = f"[{url_host}]"
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://{url_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def run_emulator(host: str, port: int, api_key: str | None, data: Path | None = None) -> None:
    """Serve an emulator until SIGTERM/SIGINT, after printing ``emulator_listening url=...``.

    With ``data``, jobs are loaded from that JSON file at start (when it exists) and
    written back at exit, so a restarted emulator keeps its jobs as Elasticsearch would.
    """
    emulator = Emulator(api_key=api_key)
    store = None if data is None else anyio.Path(data)
    if store is not None and await store.exists():
        emulator.import_jobs(json.loads(await store.read_text(encoding="utf-8")))
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with serve(emulator, host, port) as url:
                print(f"emulator_listening url={url}", flush=True)
                async for _ in signals:
                    break
    finally:
        if store is not None:
            with anyio.CancelScope(shield=True):
                await store.write_text(json.dumps(emulator.export_jobs()), encoding="utf-8")
