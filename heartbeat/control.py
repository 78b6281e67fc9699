"""The control API (``[control]``): a local HTTP API that watches and unwatches ids.

Owns the HTTP surface, its access checks and its listeners: a Unix socket (mode 0600)
and, optionally, loopback TCP with a bearer token. It is the source named ``control``
(started by the daemon with the other sources, before READY=1); ids go through the
same validation and watch list as every other source. It does not speak to
Elasticsearch and does not own the watch list's persistence: it waits for it.

Endpoints (every answer is JSON, errors as ``{"error": "..."}``)::

    GET    /jobs        {"jobs": [JOB, ...]}
    POST   /jobs        {"ids": [ID, ...], "ttl"?: N}
                        -> {"added": [...], "already_watched": [...]}
                        (all ids validated first: one bad id changes nothing)
    GET    /jobs/ID     JOB, or 404
    PUT    /jobs/ID     watch: 201 JOB when new, 200 JOB when already watched (a renewal);
                        {"ttl": N} or ?ttl=N: the claim ends unless renewed in N s
    DELETE /jobs/ID     unwatch: 200 {"id", "removed": true, "sources"}, or 404
    GET    /status      version, jobs, in-flight requests, Elasticsearch state, outage

    JOB = {"id", "sources", "last_success", "next_due", "consecutive_failures",
           "last_error", "expires_at"}, times in ISO 8601 UTC or null; expires_at is
           the latest expiry among the job's claims, null when any is permanent.

A 2xx to PUT, POST or DELETE is sent only once the watch list is saved (``[state]
dir``): an acknowledged id survives ``kill -9``. If saving takes longer than
``PERSIST_TIMEOUT`` (a full or read-only disk), the answer is 503: the change is
applied in memory but not acknowledged, and the request can be repeated.

Ids travel in the path as one percent-encoded segment: ``/jobs/a%2Fb`` is the id
``a/b``, ``/jobs/%2E%2E`` the id ``..``. Routing works on the raw request target (no
normalisation by aiohttp's router), decoding is strict, and a literal ``.``/``..``
segment is refused rather than guessed at.

Access: on the Unix socket, the file mode is the protection. The socket is 0600, so
only the daemon's user and root can connect, and they can read the token anyway; so no
token is asked there. Over TCP every request needs ``Authorization: Bearer TOKEN``
(compared in constant time); the configuration refuses ``listen`` without a token,
and a non-loopback address without ``allow_remote``. Bodies over 64 KiB get 413.
"""

from __future__ import annotations

import hmac
import json
import socket
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import anyio.to_thread
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from heartbeat import logs
from heartbeat._version import __version__
from heartbeat.config import ControlSettings
from heartbeat.errors import ConfigError, InvalidJobId
from heartbeat.health import elasticsearch_state
from heartbeat.jobid import validate_job_id
from heartbeat.leases import check_ttl
from heartbeat.memory import Tombstone
from heartbeat.unixsocket import bind_unix_socket, remove_unix_socket
from heartbeat.watchlist import JobView

if TYPE_CHECKING:
    from heartbeat.config import Config
    from heartbeat.daemon import Heartbeat

log = structlog.get_logger("heartbeat")

NAME = "control"
MAX_BODY = 64 * 1024
#: Seconds a change may take to reach the disk before the answer is 503.
PERSIST_TIMEOUT = 10.0
#: Refused requests are logged at most this often (seconds), with a count.
UNAUTHORIZED_LOG_PERIOD = 60.0
#: Seconds in-flight requests get when the daemon stops.
SHUTDOWN_GRACE = 1.0

_METHODS = {
    "jobs": ("GET", "POST"),
    "job": ("DELETE", "GET", "PUT"),
    "status": ("GET",),
    "dropped": ("GET",),
    "restore": ("POST",),
}


class _Answer(Exception):
    """Carries an early answer (an error) out of the checks; never escapes this module."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        self.response = answer(status, {"error": message})
        self.response.headers.update(headers)


def answer(status: int, payload: object) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(status=status, body=body, content_type="application/json")


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``2025-01-31T12:00:00.000Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        raise _Answer(400, f"{exc}; nothing was changed") from None


def put_body(body: bytes, query: Any) -> object:
    """The ``ttl`` of a PUT /jobs/ID: ``{"ttl": N}`` in the body or ``?ttl=N``."""
    given: object = query.get("ttl")
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Answer(400, 'the body is not JSON; expected {"ttl": SECONDS} or none') from None
        if not isinstance(data, dict) or set(data) - {"ttl"}:
            raise _Answer(400, 'expected a JSON object {"ttl": SECONDS}')
        if "ttl" in data:
            if given is not None:
                raise _Answer(400, "ttl given twice (body and query)")
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
    raise _Answer(404, f"no such endpoint: {path or raw_path}{hint}")


def decode_id(segment: str) -> str:
    """The job id a path segment spells, validated; 400 otherwise."""
    if segment in {".", ".."}:
        raise _Answer(400, f"a literal {segment!r} segment is ambiguous; spell the id %2E")
    for position, char in enumerate(segment):
        if char == "%" and not _is_hex(segment[position + 1 : position + 3]):
            raise _Answer(400, f"invalid percent-escape at position {position} of the id")
    try:
        return validate_job_id(unquote(segment, errors="strict"))
    except UnicodeDecodeError:
        raise _Answer(400, "the percent-encoded id is not UTF-8") from None
    except InvalidJobId as exc:
        raise _Answer(400, str(exc)) from None


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
        raise _Answer(400, 'the body is not JSON; expected {"ids": ["...", ...]}') from None
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise _Answer(400, 'expected a JSON object {"ids": ["...", ...]}')
    unknown = sorted(set(data) - {"ids", "ttl"})
    if unknown:
        raise _Answer(400, f"unknown fields {unknown}")
    ids: list[str] = data["ids"]
    for index, job_id in enumerate(ids):
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            raise _Answer(400, f"ids[{index}]: {exc}; nothing was changed") from None
    return list(dict.fromkeys(ids)), data.get("ttl")


async def read_body(request: web.BaseRequest) -> bytes:
    """The request body, at most MAX_BODY bytes (413 beyond, chunked bodies included)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _Answer(413, f"the body is over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1):
        size += len(chunk)
        if size > MAX_BODY:
            raise _Answer(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ControlAPI:
    """The request handler. ``token`` is asked of TCP clients only."""

    def __init__(self, hb: Heartbeat, *, token: str | None) -> None:
        self.hb = hb
        self.token = token
        self._refused = 0
        self._refused_logged_at: float | None = None

    async def handle(self, request: web.BaseRequest, *, tcp: bool) -> web.StreamResponse:
        try:
            if tcp:
                self._authorize(request)
            endpoint, segment = route(request.raw_path)
            methods = _METHODS[endpoint]
            if request.method not in methods:
                message = f"{request.method} is not allowed here; allowed: {', '.join(methods)}"
                raise _Answer(405, message, Allow=", ".join(methods))
            body = await read_body(request)
            if endpoint == "restore":
                assert segment is not None
                return await self._restore(decode_id(segment))
            if segment is not None:
                ttl: object = None
                if request.method == "PUT":
                    ttl = put_body(body, request.query)
                return await self._job(request.method, decode_id(segment), ttl)
            if endpoint == "status":
                return answer(200, self.status())
            if endpoint == "dropped":
                return answer(200, {"dropped": [tombstone_json(t) for t in self.hb.dropped()]})
            if request.method == "POST":
                return await self._watch_many(*ids_and_ttl(body))
            return answer(200, {"jobs": [self._json(view) for view in self.hb.scheduler.jobs()]})
        except _Answer as early:
            if early.response.status == 413:
                early.response.force_close()  # do not read the rest of a large body
            return early.response

    def _authorize(self, request: web.BaseRequest) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        expected = (self.token or "").encode("utf-8")
        given = credentials.strip().encode("utf-8", errors="replace")
        if expected and scheme.lower() == "bearer" and hmac.compare_digest(given, expected):
            return
        self._refused += 1
        now = self.hb.scheduler.clock.monotonic()
        last = self._refused_logged_at
        if last is None or now - last >= UNAUTHORIZED_LOG_PERIOD:
            log.warning("control_unauthorized", peer=request.remote, refused=self._refused)
            self._refused, self._refused_logged_at = 0, now
        raise _Answer(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})

    def _json(self, view: JobView) -> dict[str, Any]:
        return job_json(view, self.hb.leases.expires_at(view.id, view.sources))

    async def _job(self, method: str, job_id: str, ttl: object = None) -> web.Response:
        scheduler = self.hb.scheduler
        view = scheduler.job(job_id)
        if method == "GET":
            if view is None:
                raise _Answer(404, f"not watched: {job_id!r}")
            return answer(200, self._json(view))
        if method == "PUT":
            seconds = ttl_of(ttl, self.hb.config.control.default_ttl)
            new = self.hb.watch(job_id, NAME, ttl=seconds)
            view = scheduler.job(job_id)
            assert view is not None
            await self._persisted()
            return answer(201 if new else 200, self._json(view))
        if view is None:  # DELETE
            raise _Answer(404, f"not watched: {job_id!r}")
        scheduler.unwatch(job_id, reason=NAME)
        await self._persisted()
        return answer(200, {"id": job_id, "removed": True, "sources": list(view.sources)})

    async def _restore(self, job_id: str) -> web.Response:
        """Watch a dropped job again with its former sources' claims (permanent)."""
        tombstone = self.hb.restore(job_id)
        if tombstone is None:
            raise _Answer(404, f"not a dropped job: {job_id!r}")
        await self._persisted()
        view = self.hb.scheduler.job(job_id)
        assert view is not None
        return answer(200, {"id": job_id, "restored": True, "job": job_json(view)})

    async def _watch_many(self, ids: list[str], ttl: object = None) -> web.Response:
        scheduler = self.hb.scheduler
        seconds = ttl_of(ttl, self.hb.config.control.default_ttl)
        known = {job_id for job_id in ids if job_id in scheduler}
        await self.hb.watch_many_async(ids, NAME, ttl=seconds)
        await self._persisted()
        return answer(
            200,
            {
                "added": [job_id for job_id in ids if job_id not in known],
                "already_watched": [job_id for job_id in ids if job_id in known],
            },
        )

    async def _persisted(self) -> None:
        """Return once the change is on disk; else 503 (applied, not acknowledged)."""
        with anyio.move_on_after(PERSIST_TIMEOUT):
            await self.hb.persisted()
            return
        state = self.hb.state
        where = str(state.path) if state is not None else "disk"
        why = (state.failed if state is not None else None) or "saving is slow"
        raise _Answer(503, f"applied but not saved to {where} ({why}); repeat the request")

    def status(self) -> dict[str, Any]:
        hb = self.hb
        scheduler = hb.scheduler
        now = scheduler.clock.monotonic()
        to_wall = scheduler.clock.wall() - now
        elasticsearch = elasticsearch_state(scheduler)
        outage = None
        if scheduler.outage_since is not None:
            outage = {
                "since": iso(scheduler.outage_since + to_wall),
                "duration_s": round(now - scheduler.outage_since, 3),
            }
        last = scheduler.last_success_at
        state = hb.state
        return {
            "version": __version__,
            "jobs": len(scheduler),
            "sources": scheduler.watchlist.claim_counts(),
            "in_flight": scheduler.in_flight,
            "elasticsearch": elasticsearch,
            "outage": outage,
            "last_success": None if last is None else iso(last + to_wall),
            "state": None if state is None else {"path": str(state.path), "error": state.failed},
            "worker": None if hb.worker is None else hb.worker.status(),
            "summary": hb.summary(),
        }


class ControlSource:
    """Serves :class:`ControlAPI` on the configured socket and/or TCP address."""

    name = NAME

    def __init__(self, settings: ControlSettings) -> None:
        self.settings = settings
        self._api: ControlAPI | None = None
        #: Where it serves once started: the socket path, the bound (host, port).
        self.socket: Path | None = None
        self.tcp_address: tuple[str, int] | None = None

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the TCP listener once started, else None."""
        if self.tcp_address is None:
            return None
        host, port = self.tcp_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _token(self, settings: ControlSettings) -> str | None:
        token = settings.token.get_secret_value() if settings.token is not None else None
        logs.register_secret(token)
        return token

    async def run(self, hb: Heartbeat, *, task_status: TaskStatus[Any]) -> None:
        settings = self.settings
        api = self._api = ControlAPI(hb, token=self._token(settings))
        runners: list[web.ServerRunner] = []
        sock: socket.socket | None = None
        identity: tuple[int, int] | None = None
        try:
            if settings.socket is not None:
                bound, identity = await anyio.to_thread.run_sync(bind_unix_socket, settings.socket)
                sock = bound
                runner = await _runner(partial(api.handle, tcp=False), runners)
                await web.SockSite(runner, bound).start()
                self.socket = settings.socket
            address = settings.address()
            if address is not None:
                runner = await _runner(partial(api.handle, tcp=True), runners)
                try:
                    await web.TCPSite(runner, *address).start()
                except OSError as exc:
                    problem = f"{settings.listen!r}: cannot listen: {exc.strerror or exc}"
                    raise ConfigError(problem, key="control.listen") from None
                self.tcp_address = runner.addresses[0][:2]
            log.info(
                "control_listening",
                socket=None if self.socket is None else str(self.socket),
                listen=self.url,
            )
            if hb.state is None:
                log.warning(
                    "control_not_persisted",
                    problem="no [state] dir: ids added through the control API are lost on restart",
                )
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                for runner in runners:
                    await runner.cleanup()
                if sock is not None:
                    sock.close()  # a no-op once the server has closed it
                if identity is not None and settings.socket is not None:
                    remove_unix_socket(settings.socket, identity)

    async def reload(self, config: Config) -> None:
        """SIGHUP: a new token applies at once; listeners change only on restart."""
        new, old = config.control, self.settings
        if self._api is not None and new.token != old.token:
            self._api.token = self._token(new)
        changed = [
            key
            for key in ("socket", "listen", "allow_remote")
            if getattr(new, key) != getattr(old, key)
        ]
        if changed:
            log.warning("control_restart_needed", changed=[f"control.{key}" for key in changed])
        self.settings = new.model_copy(update={key: getattr(old, key) for key in changed})


async def _runner(handler: Any, runners: list[web.ServerRunner]) -> web.ServerRunner:
    # aiohttp's low-level server: no router, so nothing normalises the path first.
    server = web.Server(handler, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    runners.append(runner)
    return runner
