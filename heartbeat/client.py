"""The one place that speaks HTTP to Elasticsearch.

Owns the process's single ``aiohttp.ClientSession``, the request format (method,
path, auth header, ``Accept``, ``User-Agent``), TLS, host fail-over (through
:class:`heartbeat.hosts.HostPool`: a host that refuses or times out is skipped while
dead, and the attempt goes to the next live host at once), and the mapping
of every answer and every ``aiohttp`` failure onto an :mod:`heartbeat.outcomes`
value. It does not retry, sleep or decide what a failure means for a job: that is
the scheduler's business.
"""

from __future__ import annotations

import asyncio
import base64
import json
import platform
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from yarl import URL

from heartbeat import backoff
from heartbeat._version import __version__
from heartbeat.config import ElasticsearchSettings
from heartbeat.config.tls import build_context
from heartbeat.hosts import Host, HostPool, dead_time
from heartbeat.identity import CONFIRM_WINDOW, IDENTITY_PRIVILEGE, ClusterIdentity, ClusterInfo
from heartbeat.jobid import encode_segment, validate_job_id
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Outcome,
    Rejected,
    Retryable,
    Success,
    Unauthorized,
)

ACCEPT = "application/vnd.elasticsearch+json; compatible-with=8"
USER_AGENT = (
    f"heartbeat/{__version__} (Python/{platform.python_version()}; aiohttp/{aiohttp.__version__})"
)
#: Answers larger than this are not read in full: we only need the error type.
MAX_BODY = 64 * 1024
#: Job documents (one, or a page of the list) are read whole, up to this size: a sync
#: job embeds its connector's configuration and filtering rules, often beyond MAX_BODY.
DOCUMENT_MAX_BODY = 16 * 1024 * 1024
#: A job list whose size changes between two pages is read again, this many times at most.
LIST_ATTEMPTS = 3
log = structlog.get_logger("heartbeat")

NEEDED_PRIVILEGES = (
    "cluster privilege manage_connector, and write on index .elastic-connectors-sync-jobs*"
)


def auth_header(settings: ElasticsearchSettings) -> str | None:
    """The ``Authorization`` header value for the configured credentials, if any."""
    if settings.api_key is not None:
        return f"ApiKey {settings.api_key.get_secret_value()}"
    if settings.username is not None and settings.password is not None:
        raw = f"{settings.username}:{settings.password.get_secret_value()}".encode()
        return f"Basic {base64.b64encode(raw).decode('ascii')}"
    if settings.bearer_token is not None:
        return f"Bearer {settings.bearer_token.get_secret_value()}"
    return None


def ssl_for(settings: ElasticsearchSettings) -> ssl.SSLContext | aiohttp.Fingerprint:
    """The TLS policy: verify by default, TLS 1.2 minimum, optional CA, client cert, pin.

    Raises ConfigError naming the key when a file it names cannot be used."""
    if settings.ssl_assert_fingerprint:
        # Pinning replaces chain verification, as in the official client.
        return aiohttp.Fingerprint(bytes.fromhex(settings.ssl_assert_fingerprint))
    return build_context(settings)


def checkin_path(job_id: str) -> str:
    """The encoded path of the check-in endpoint of ``job_id`` (already validated)."""
    return f"/_connector/_sync_job/{encode_segment(job_id)}/_check_in"


def job_path(job_id: str) -> str:
    return f"/_connector/_sync_job/{encode_segment(job_id)}"


def list_path(offset: int, size: int, filters: dict[str, str], fields: Sequence[str]) -> str:
    """The encoded path (with query) of one page of the sync-job list."""
    params = {**filters, "from": str(offset), "size": str(size)}
    if fields:
        # Real Elasticsearch then sends only these fields (the emulator ignores it).
        params["filter_path"] = ",".join(["count", *(f"results.{name}" for name in fields)])
    return "/_connector/_sync_job?" + urlencode(params, quote_via=quote, safe="")


#: Elasticsearch's answer to a check-in, byte for byte. This body is known to be JSON
#: without parsing it, which the check-in hot path relies on; any other body is parsed.
CHECKIN_UPDATED = b'{"result":"updated"}'
#: The outcome of every ordinary check-in: outcomes are immutable, so one will do.
SUCCESS_200 = Success(200)


class Answer:
    """A complete HTTP answer from a server (not necessarily Elasticsearch).

    The body is parsed as JSON only when asked for (:attr:`body`): a successful
    check-in's answer never needs it.
    """

    __slots__ = ("_body", "_parsed", "host", "is_elasticsearch", "raw", "retry_after", "status")

    def __init__(
        self, status: int, is_elasticsearch: bool, raw: bytes, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.is_elasticsearch = is_elasticsearch
        self.raw = raw
        self.retry_after = retry_after
        self.host: Host | None = None  # which host answered (set by Client.request)
        self._body: Any = None
        self._parsed = False

    def __repr__(self) -> str:
        return f"Answer(status={self.status}, is_elasticsearch={self.is_elasticsearch})"

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
        """Whether the body is empty or JSON (without parsing the usual answer)."""
        return not self.raw or self.raw == CHECKIN_UPDATED or self.body is not None


class Client:
    """Elasticsearch's sync-job API, as heartbeat needs it.

    Use as ``async with Client(settings) as client:``; one instance per process.
    """

    def __init__(
        self,
        settings: ElasticsearchSettings,
        *,
        max_in_flight: int = 32,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        identity: ClusterIdentity | None = None,
    ) -> None:
        self._settings = settings
        self._urls = [URL(url) for url in settings.urls()]
        self._bases = [str(url).rstrip("/") for url in self._urls]
        # What logs name: never credentials (the configuration refuses them anyway).
        self.pool = HostPool([str(url.with_user(None)) for url in self._urls])
        self._monotonic = monotonic
        self.identity = identity if identity is not None else ClusterIdentity(settings.cluster_uuid)
        #: The ``GET /`` read under way on each host, shared by concurrent requests.
        self._identity_reads: dict[int, asyncio.Future[tuple[Retryable, bool] | None]] = {}
        self._auth = auth_header(settings)
        self._max_in_flight = max_in_flight
        self._session: aiohttp.ClientSession | None = None
        self._wall = wall_clock
        self.timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout,
            connect=min(settings.request_timeout, 10.0),
        )

    def __repr__(self) -> str:
        return f"Client(hosts={[str(u) for u in self._urls]!r})"

    @property
    def base_url(self) -> str:
        return str(self._urls[self.pool.current.index])

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is not None:
            return
        needs_tls = any(url.scheme == "https" for url in self._urls)
        connector = aiohttp.TCPConnector(
            # Our scheduler is the fair (FIFO) limit; the pool must never queue.
            limit=self._max_in_flight + 4,
            limit_per_host=0,
            ssl=ssl_for(self._settings) if needs_tls else False,
            ttl_dns_cache=60,
            keepalive_timeout=30,
        )
        headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=self.timeout,
            auto_decompress=True,
            raise_for_status=False,
            skip_auto_headers=("Content-Type",),
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _wall_now(self) -> float:
        return self._wall()

    async def request(
        self, method: str, path: str, body: Any = None, *, max_body: int = MAX_BODY
    ) -> Answer | Retryable:
        """Send one request (``path`` already encoded) and read the whole answer.

        An attempt that cannot connect, times out or loses its connection marks its
        host dead (:mod:`heartbeat.hosts`) and the request goes to the next live host
        at once, as it does from a host of another cluster (:mod:`heartbeat.identity`:
        ``GET /`` is read at first contact with each host and after a reconnection);
        any other transport failure is returned as a Retryable outcome.
        """
        if self._session is None:
            raise RuntimeError("Client used outside 'async with'")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        pool = self.pool
        failure: Retryable | None = None
        tried: frozenset[int] = frozenset()
        while (choice := pool.pick(self._monotonic(), tried)) is not None:
            host, trial = choice
            tried |= {host.index}
            if host.identity is None or host.identity == "mismatch":
                refused = await self._identify(host, trial)
                if refused is not None:
                    failure, go_on = refused
                    if go_on:
                        continue
                    return failure
                trial = False  # the identity read was the trial
            result, dead = await self._attempt(host, trial, method, path, data, headers, max_body)
            if isinstance(result, Answer):
                if pool.answered(host, trial=trial):
                    log.info("elasticsearch_host_up", host=host.url)
                return result
            failure = result
            if not dead:
                pool.released(host, trial=trial)
                return failure
            self._host_failed(host, trial, failure)
        assert failure is not None
        return failure

    async def _attempt(
        self,
        host: Host,
        trial: bool,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        max_body: int,
    ) -> tuple[Answer | Retryable, bool]:
        """One attempt on one host: the answer, or the failure and whether it means
        the host is dead (cannot connect, timed out, lost the connection)."""
        assert self._session is not None
        # encoded=True: yarl must not re-normalise the path (".." or "%2F" in an id).
        url = URL(self._bases[host.index] + path, encoded=True)
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as response:
                raw = await response.content.read(max_body)
                answer = _answer(response, raw)
                answer.host = host
                return answer, False
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = f"TLS certificate verification failed: {exc.certificate_error}"
            return Retryable("tls", reason), False
        except aiohttp.ClientConnectorSSLError as exc:
            return Retryable("tls", f"TLS error: {exc.os_error}"), False
        except aiohttp.ServerFingerprintMismatch:
            reason = "server certificate does not match ssl_assert_fingerprint"
            return Retryable("tls", reason), False
        except aiohttp.ClientConnectorError as exc:
            return Retryable("connection", f"cannot connect to {host.url}: {exc.os_error}"), True
        except TimeoutError:
            reason = f"no answer within {self._settings.request_timeout:g} s"
            return Retryable("timeout", reason), True
        except aiohttp.ClientSSLError as exc:
            return Retryable("tls", f"TLS error: {exc}"), False
        except aiohttp.ClientPayloadError as exc:
            return Retryable("malformed", f"broken response body: {exc}"), False
        except aiohttp.ClientResponseError as exc:
            return Retryable("malformed", f"invalid HTTP response: {exc.message}"), False
        except aiohttp.ClientError as exc:
            return Retryable("connection", f"{type(exc).__name__}: {exc}".rstrip(": ")), True
        except (OSError, ValueError) as exc:
            return Retryable("connection", f"{type(exc).__name__}: {exc}"), False
        except BaseException:  # cancelled: the attempt says nothing about the host
            self.pool.released(host, trial=trial)
            raise

    def _host_failed(self, host: Host, trial: bool, failure: Retryable) -> None:
        if self.pool.failed(host, self._monotonic(), trial=trial):
            log.warning(
                "elasticsearch_host_down",
                host=host.url,
                error=failure.error,
                reason=failure.reason,
                retry_in_s=dead_time(host.failures),
            )

    async def _identify(
        self, host: Host, trial: bool, *, max_age: float | None = None
    ) -> tuple[Retryable, bool] | None:
        """Read ``GET /`` on ``host`` unless it is known (or, with ``max_age``, was
        confirmed that recently). None when requests may go to it; else the failure and
        whether the request goes on to the next host. Concurrent callers share one read:
        a host that never answers costs one timeout, not one per waiting request."""
        fresh = host.identity == "confirmed" and (
            max_age is None or self._monotonic() - host.identity_at <= max_age
        )
        if fresh or host.identity in ("unavailable", "unknown"):
            return None
        reading = self._identity_reads.get(host.index)
        if reading is not None:
            shared = await asyncio.shield(reading)
            if trial:
                self.pool.released(host, trial=True)
            return shared
        reading = asyncio.get_running_loop().create_future()
        self._identity_reads[host.index] = reading
        result: tuple[Retryable, bool] | None = (Retryable("connection", "cancelled"), True)
        try:
            result = await self._read_identity(host, trial)
            return result
        finally:
            del self._identity_reads[host.index]
            reading.set_result(result)

    async def _read_identity(self, host: Host, trial: bool) -> tuple[Retryable, bool] | None:
        result, dead = await self._attempt(host, trial, "GET", "/", None, None, MAX_BODY)
        if isinstance(result, Retryable):
            if dead:
                self._host_failed(host, trial, result)
            else:
                self.pool.released(host, trial=trial)
            return result, dead
        mismatch = self._judge(host, result)
        if mismatch is not None:
            # Skipped like a dead host; its trials read GET / again.
            self.pool.failed(host, self._monotonic(), trial=trial)
            return mismatch, True
        if self.pool.answered(host, trial=trial):
            log.info("elasticsearch_host_up", host=host.url)
        return None

    def _judge(self, host: Host, answer: Answer) -> Retryable | None:
        """Record what ``GET /`` said about ``host``; a Retryable when it belongs to
        another cluster."""
        if answer.status in (401, 403):
            host.identity = "unavailable"
            if not self.identity.unavailable_logged:
                self.identity.unavailable_logged = True
                log.warning(
                    "cluster_identity_unavailable",
                    host=host.url,
                    status=answer.status,
                    needed=IDENTITY_PRIVILEGE,
                    problem="GET / refused: drops are not checked against the cluster",
                )
            return None
        info = ClusterInfo.parse(answer.body) if answer.is_elasticsearch else None
        if answer.status != 200 or info is None:
            host.identity = "unknown"  # a 404 from it is confirmed before any drop
            return None
        expected = self.identity.expected
        if self.identity.judge(host.url, info.uuid) == "match":
            host.identity = "confirmed"
            host.identity_at = self._monotonic()
            if self.identity.connected_to(host.url, info.uuid):
                log.info(
                    "elasticsearch_connected",
                    host=host.url,
                    cluster_uuid=info.uuid,
                    cluster_name=info.name,
                    version=info.version,
                )
            return None
        host.identity = "mismatch"
        if self.identity.mismatched(host.url, info.uuid):
            log.error(
                "elasticsearch_cluster_mismatch",
                host=host.url,
                expected=expected,
                found=info.uuid,
                cluster_name=info.name,
            )
        return Retryable(
            "cluster_mismatch",
            f"{host.url} belongs to cluster {info.uuid}, not the expected {expected}",
        )

    async def _prove(self, answer: Answer, outcome: NotFound) -> Outcome:
        """A genuine 404 drops a job only from a host confirmed as the expected
        cluster within CONFIRM_WINDOW seconds: read ``GET /`` again when it was not."""
        host = answer.host
        if host is None or host.identity == "unavailable":
            return outcome  # GET / is refused: as before identity checks
        if host.identity == "confirmed" and (
            self._monotonic() - host.identity_at <= CONFIRM_WINDOW
        ):
            return outcome
        if host.identity == "unknown":
            host.identity = None
        refused = await self._identify(host, False, max_age=CONFIRM_WINDOW)
        if refused is not None:
            return refused[0]
        if host.identity in ("confirmed", "unavailable"):
            return outcome
        return Retryable(
            "cluster_unconfirmed",
            f"404 from {host.url}, whose cluster could not be confirmed with GET /",
        )

    async def check_in(self, job_id: str) -> Outcome:
        """``PUT /_connector/_sync_job/<id>/_check_in``, as one typed outcome."""
        validate_job_id(job_id)
        answer = await self.request("PUT", checkin_path(job_id))
        if isinstance(answer, Retryable):
            return answer
        # The wall clock only matters for a Retry-After date.
        outcome = classify(answer, now_wall=self._wall_now() if answer.retry_after else 0.0)
        if type(outcome) is NotFound:
            return await self._prove(answer, outcome)
        return outcome

    async def get_job(self, job_id: str) -> dict[str, Any] | Outcome:
        """``GET /_connector/_sync_job/<id>``: the document, or why not."""
        validate_job_id(job_id)
        answer = await self.request("GET", job_path(job_id), max_body=DOCUMENT_MAX_BODY)
        if isinstance(answer, Retryable):
            return answer
        outcome = classify(answer, now_wall=self._wall_now())
        if isinstance(outcome, Success):
            if isinstance(answer.body, dict):
                return answer.body
            return Retryable("malformed", "job document is not a JSON object")
        if type(outcome) is NotFound:
            return await self._prove(answer, outcome)
        return outcome

    async def list_jobs(
        self,
        *,
        connector_id: str | None = None,
        status: str | None = None,
        fields: Sequence[str] = (),
        page_size: int = 100,
    ) -> list[dict[str, Any]] | Outcome:
        """``GET /_connector/_sync_job?connector_id=&status=&from=&size=``, every page:
        the documents, newest first, or why not. ``fields`` limits what is sent
        (``filter_path``). A list whose size changes between pages is read again."""
        filters = {
            name: value
            for name, value in (("connector_id", connector_id), ("status", status))
            if value is not None
        }
        for _ in range(LIST_ATTEMPTS):
            documents: list[dict[str, Any]] = []
            total: int | None = None
            while total is None or len(documents) < total:
                path = list_path(len(documents), page_size, filters, fields)
                answer = await self.request("GET", path, max_body=DOCUMENT_MAX_BODY)
                if isinstance(answer, Retryable):
                    return answer
                outcome = classify(answer, now_wall=self._wall_now())
                if not isinstance(outcome, Success):
                    return outcome
                page = _job_page(answer.body)
                if page is None:
                    return Retryable("malformed", "job list is not {count, results: [...]}")
                count, results = page
                if total is not None and count != total:
                    break  # the list changed under us: read it again
                total = count
                documents.extend(results)
                if len(results) < page_size:
                    return documents
            else:
                return documents
        return Retryable("inconsistent", "the job list kept changing while it was read")


def _job_page(body: Any) -> tuple[int, list[dict[str, Any]]] | None:
    """``(count, results)`` of one list page; None when it is not one. Elasticsearch's
    ``filter_path`` leaves ``results`` out when it is empty."""
    if not isinstance(body, dict) or not isinstance(body.get("count"), int):
        return None
    results = body.get("results", [])
    if not isinstance(results, list) or not all(isinstance(doc, dict) for doc in results):
        return None
    return body["count"], results


def _answer(response: aiohttp.ClientResponse, raw: bytes) -> Answer:
    headers = response.headers
    return Answer(
        response.status,
        headers.get("X-Elastic-Product") == "Elasticsearch",
        raw,
        headers.get("Retry-After"),
    )


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


def classify(answer: Answer, *, now_wall: float) -> Outcome:
    """Map a complete HTTP answer onto an outcome (see :mod:`heartbeat.outcomes`)."""
    status = answer.status
    if 200 <= status < 300:
        if not answer.is_elasticsearch:
            # The official client refuses this too: a proxy's 200 is not a check-in.
            return Misrouted(status, "2xx answer without X-Elastic-Product: Elasticsearch")
        if not answer.is_json():
            return Retryable("malformed", "2xx answer whose body is not JSON", status=status)
        return SUCCESS_200 if status == 200 else Success(status)
    kind, reason = _error(answer.body)
    if status == 404:
        if answer.is_elasticsearch and kind == "resource_not_found_exception":
            return NotFound(reason or "not found")
        why = (
            f"404 from Elasticsearch with error type {kind!r}"
            if answer.is_elasticsearch
            else f"404 without X-Elastic-Product: {_snippet(answer.raw) or 'empty body'}"
        )
        return Misrouted(404, why)
    if status in (401, 403):
        return Unauthorized(status, reason or _snippet(answer.raw) or f"HTTP {status}")
    if status == 400:
        if reason.startswith("no handler found for uri"):
            # Elasticsearch, but not our endpoint: a wrong path prefix in hosts.
            return Misrouted(400, reason)
        if answer.is_elasticsearch:
            return Rejected(400, reason or _snippet(answer.raw) or "bad request")
        return Misrouted(400, f"400 without X-Elastic-Product: {_snippet(answer.raw)}")
    if status in (408, 409, 429) or 500 <= status < 600:
        return Retryable(
            "http",
            reason or _snippet(answer.raw) or f"HTTP {status}",
            status=status,
            retry_after=backoff.parse_retry_after(answer.retry_after, now_wall=now_wall),
            job_specific=status == 409,
        )
    return Misrouted(status, f"unexpected HTTP {status}: {reason or _snippet(answer.raw)}")
