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

Ids travel in the path as one percent-encoded segment (``/jobs/a%2Fb``); the routes,
the id decoding and the bodies are :mod:`heartbeat.control_wire`.

Access: on the Unix socket, the file mode is the protection. The socket is 0600, so
only the daemon's user and root can connect, and they can read the token anyway; so no
token is asked there. Over TCP every request needs ``Authorization: Bearer TOKEN``
(compared in constant time); the configuration refuses ``listen`` without a token,
and a non-loopback address without ``allow_remote``. Bodies over 64 KiB get 413.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from heartbeat import logs
from heartbeat._version import __version__
from heartbeat.config import ControlSettings
from heartbeat.control_wire import (
    MAX_BODY,
    METHODS,
    Refused,
    decode_id,
    ids_and_ttl,
    iso,
    job_json,
    json_response,
    put_body,
    read_body,
    route,
    tombstone_json,
    ttl_of,
)
from heartbeat.errors import ConfigError
from heartbeat.memory import Tombstone
from heartbeat.sources.base import Feed
from heartbeat.unixsocket import bind_unix_socket, remove_unix_socket
from heartbeat.watchlist import JobView

if TYPE_CHECKING:
    from heartbeat.config import Config
    from heartbeat.status import Status

__all__ = ["MAX_BODY", "NAME", "ControlAPI", "ControlFeed", "ControlSource"]

log = structlog.get_logger("heartbeat")

NAME = "control"
#: Seconds a change may take to reach the disk before the answer is 503.
PERSIST_TIMEOUT = 10.0
#: Refused requests are logged at most this often (seconds), with a count.
UNAUTHORIZED_LOG_PERIOD = 60.0
#: Seconds in-flight requests get when the daemon stops.
SHUTDOWN_GRACE = 1.0


class ControlFeed(Feed, Protocol):
    """A :class:`Feed` plus what the endpoints read and undo: the jobs, their leases'
    expiry, the tombstones of dropped jobs, and the status snapshot."""

    async def claim_valid_async(
        self, job_ids: Sequence[str], source: str, *, ttl: float | None = None
    ) -> int: ...

    def unwatch(self, job_id: str, *, reason: str = ...) -> bool: ...

    def is_watched(self, job_id: str) -> bool: ...

    def job(self, job_id: str) -> JobView | None: ...

    def jobs(self) -> list[JobView]: ...

    def expires_at(self, view: JobView) -> float | None: ...

    def claim_counts(self) -> dict[str, int]: ...

    def dropped(self) -> list[Tombstone]: ...

    def restore(self, job_id: str) -> Tombstone | None: ...

    def snapshot(self) -> Status: ...


class ControlAPI:
    """The request handler. ``token`` is asked of TCP clients only; ``default_ttl``
    (``[control] default_ttl``) is the ttl of a watch that gives none (0: permanent)."""

    def __init__(self, feed: ControlFeed, *, token: str | None, default_ttl: float = 0.0) -> None:
        self.feed = feed
        self.token = token
        self.default_ttl = default_ttl
        self._refused = 0
        self._refused_logged_at: float | None = None

    async def handle(self, request: web.BaseRequest, *, tcp: bool) -> web.StreamResponse:
        try:
            if tcp:
                self._authorize(request)
            endpoint, segment = route(request.raw_path)
            methods = METHODS[endpoint]
            if request.method not in methods:
                message = f"{request.method} is not allowed here; allowed: {', '.join(methods)}"
                raise Refused(405, message, Allow=", ".join(methods))
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
                return json_response(200, self.status())
            if endpoint == "dropped":
                return json_response(
                    200, {"dropped": [tombstone_json(t) for t in self.feed.dropped()]}
                )
            if request.method == "POST":
                return await self._watch_many(*ids_and_ttl(body))
            return json_response(200, {"jobs": [self._json(view) for view in self.feed.jobs()]})
        except Refused as early:
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
        now = self.feed.clock.monotonic()
        last = self._refused_logged_at
        if last is None or now - last >= UNAUTHORIZED_LOG_PERIOD:
            log.warning("control_unauthorized", peer=request.remote, refused=self._refused)
            self._refused, self._refused_logged_at = 0, now
        raise Refused(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})

    def _json(self, view: JobView) -> dict[str, Any]:
        return job_json(view, self.feed.expires_at(view))

    async def _job(self, method: str, job_id: str, ttl: object = None) -> web.Response:
        feed = self.feed
        view = feed.job(job_id)
        if method == "GET":
            if view is None:
                raise Refused(404, f"not watched: {job_id!r}")
            return json_response(200, self._json(view))
        if method == "PUT":
            seconds = ttl_of(ttl, self.default_ttl)
            new = feed.claim_valid([job_id], NAME, ttl=seconds) == 1
            view = feed.job(job_id)
            assert view is not None
            await self._persisted()
            return json_response(201 if new else 200, self._json(view))
        if view is None:  # DELETE
            raise Refused(404, f"not watched: {job_id!r}")
        feed.unwatch(job_id, reason=NAME)  # every source's claim
        await self._persisted()
        return json_response(200, {"id": job_id, "removed": True, "sources": list(view.sources)})

    async def _restore(self, job_id: str) -> web.Response:
        """Watch a dropped job again with its former sources' claims (permanent)."""
        tombstone = self.feed.restore(job_id)
        if tombstone is None:
            raise Refused(404, f"not a dropped job: {job_id!r}")
        await self._persisted()
        view = self.feed.job(job_id)
        assert view is not None
        return json_response(200, {"id": job_id, "restored": True, "job": job_json(view)})

    async def _watch_many(self, ids: list[str], ttl: object = None) -> web.Response:
        feed = self.feed
        seconds = ttl_of(ttl, self.default_ttl)
        known = {job_id for job_id in ids if feed.is_watched(job_id)}
        await feed.claim_valid_async(ids, NAME, ttl=seconds)
        await self._persisted()
        return json_response(
            200,
            {
                "added": [job_id for job_id in ids if job_id not in known],
                "already_watched": [job_id for job_id in ids if job_id in known],
            },
        )

    async def _persisted(self) -> None:
        """Return once the change is on disk; else 503 (applied, not acknowledged)."""
        with anyio.move_on_after(PERSIST_TIMEOUT):
            await self.feed.persisted()
            return
        status = self.feed.snapshot()
        where = status.state_path or "disk"
        why = status.state_error or "saving is slow"
        raise Refused(503, f"applied but not saved to {where} ({why}); repeat the request")

    def status(self) -> dict[str, Any]:
        """``GET /status``, from one snapshot (heartbeat.status)."""
        status = self.feed.snapshot()
        outage = status.outage_s
        last = status.last_success_at
        state = None
        if status.state_path is not None:
            state = {"path": status.state_path, "error": status.state_error}
        return {
            "version": __version__,
            "jobs": status.jobs,
            "sources": self.feed.claim_counts(),
            "in_flight": status.in_flight,
            "elasticsearch": status.elasticsearch,
            "outage": None
            if status.outage_since is None or outage is None
            else {"since": iso(status.wall(status.outage_since)), "duration_s": round(outage, 3)},
            "last_success": None if last is None else iso(status.wall(last)),
            "state": state,
            "worker": status.worker,
            "summary": status.summary(),
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

    async def run(self, feed: ControlFeed, *, task_status: TaskStatus[Any]) -> None:
        settings = self.settings
        api = ControlAPI(feed, token=self._token(settings), default_ttl=settings.default_ttl)
        self._api = api
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
            if feed.snapshot().state_path is None:
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
        if self._api is not None:
            self._api.default_ttl = new.default_ttl
            if new.token != old.token:
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
