"""The one place that speaks HTTP to Elasticsearch.

One module per concern:

- :mod:`heartbeat.client.transport`: the process's single ``aiohttp.ClientSession``,
  the request format (auth header, ``Accept``, ``User-Agent``), TLS, and one attempt on
  one host, with every ``aiohttp`` failure mapped onto an outcome;
- :mod:`heartbeat.client.responses`: a complete response, and :func:`classify`, what
  it means as an :mod:`heartbeat.outcomes` value;
- this module: :class:`Client`, host fail-over (through
  :class:`heartbeat.hosts.HostPool`: a host that refuses or times out is skipped while
  dead, and the attempt goes to the next live host at once), the cluster's identity
  (``GET /``, :mod:`heartbeat.identity`) and the sync-job requests (check-in, one
  job, the job list).

It does not retry, sleep or decide what a failure means for a job: that is the
scheduler's business. It does not validate job ids either: they are validated where
they enter (:mod:`heartbeat.jobid`), and :func:`checkin_path` only refuses one it
cannot encode as one path segment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from yarl import URL

from heartbeat.client.paths import checkin_path, job_path, list_path
from heartbeat.client.responses import Response, classify
from heartbeat.client.transport import ACCEPT, MAX_BODY, USER_AGENT, Transport
from heartbeat.config import ElasticsearchSettings
from heartbeat.hosts import Host, HostPool, dead_time
from heartbeat.identity import CONFIRM_WINDOW, IDENTITY_PRIVILEGE, ClusterIdentity, ClusterInfo
from heartbeat.outcomes import NotFound, Outcome, Retryable, Success

__all__ = [
    "ACCEPT",
    "USER_AGENT",
    "Client",
    "checkin_path",
    "classify",
    "job_path",
    "list_path",
]

#: Job documents (one, or a page of the list) are read whole, up to this size: a sync
#: job embeds its connector's configuration and filtering rules, often beyond MAX_BODY.
DOCUMENT_MAX_BODY = 16 * 1024 * 1024
#: A job list whose size changes between two pages is read again, this many times at most.
LIST_ATTEMPTS = 3
log = structlog.get_logger("heartbeat")


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
        self._urls = [URL(url) for url in settings.urls()]
        # What logs name: never credentials (the configuration refuses them anyway).
        names = [str(url.with_user(None)) for url in self._urls]
        self.pool = HostPool(names)
        self._transport = Transport(settings, self._urls, names, max_in_flight)
        self.timeout = self._transport.timeout
        self._monotonic = monotonic
        self.identity = identity if identity is not None else ClusterIdentity(settings.cluster_uuid)
        #: The ``GET /`` read under way on each host, shared by concurrent requests.
        self._identity_reads: dict[int, asyncio.Future[tuple[Retryable, bool] | None]] = {}
        self._wall = wall_clock

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
        await self._transport.open()

    async def close(self) -> None:
        await self._transport.close()

    def _wall_now(self) -> float:
        return self._wall()

    async def request(
        self, method: str, path: str, body: Any = None, *, max_body: int = MAX_BODY
    ) -> Response | Retryable:
        """Send one request (``path`` already encoded) and read the whole response.

        An attempt that cannot connect, times out or loses its connection marks its
        host dead (:mod:`heartbeat.hosts`) and the request goes to the next live host
        at once, as it does from a host of another cluster (:mod:`heartbeat.identity`:
        ``GET /`` is read at first contact with each host and after a reconnection);
        any other transport failure is returned as a Retryable outcome.
        """
        if not self._transport.is_open:
            raise RuntimeError("Client used outside 'async with'")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        pool, transport = self.pool, self._transport
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
            try:
                result, dead = await transport.attempt(
                    host.index, method, path, data, headers, max_body
                )
            except BaseException:  # cancelled: the attempt says nothing about the host
                pool.released(host, trial=trial)
                raise
            if isinstance(result, Response):
                result.host = host
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
        try:
            result, dead = await self._transport.attempt(
                host.index, "GET", "/", None, None, MAX_BODY
            )
        except BaseException:  # cancelled: the attempt says nothing about the host
            self.pool.released(host, trial=trial)
            raise
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

    def _judge(self, host: Host, response: Response) -> Retryable | None:
        """Record what ``GET /`` said about ``host``; a Retryable when it belongs to
        another cluster."""
        if response.status in (401, 403):
            host.identity = "unavailable"
            if not self.identity.unavailable_logged:
                self.identity.unavailable_logged = True
                log.warning(
                    "cluster_identity_unavailable",
                    host=host.url,
                    status=response.status,
                    needed=IDENTITY_PRIVILEGE,
                    problem="GET / refused: drops are not checked against the cluster",
                )
            return None
        info = ClusterInfo.parse(response.body) if response.is_elasticsearch else None
        if response.status != 200 or info is None:
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

    async def _prove(self, response: Response, outcome: NotFound) -> Outcome:
        """A genuine 404 drops a job only from a host confirmed as the expected
        cluster within CONFIRM_WINDOW seconds: read ``GET /`` again when it was not."""
        host = response.host
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
        response = await self.request("PUT", checkin_path(job_id))
        if isinstance(response, Retryable):
            return response
        # The wall clock only matters for a Retry-After date.
        outcome = classify(response, now_wall=self._wall_now() if response.retry_after else 0.0)
        if type(outcome) is NotFound:
            return await self._prove(response, outcome)
        return outcome

    async def get_job(self, job_id: str) -> dict[str, Any] | Outcome:
        """``GET /_connector/_sync_job/<id>``: the document, or why not."""
        response = await self.request("GET", job_path(job_id), max_body=DOCUMENT_MAX_BODY)
        if isinstance(response, Retryable):
            return response
        outcome = classify(response, now_wall=self._wall_now())
        if isinstance(outcome, Success):
            if isinstance(response.body, dict):
                return response.body
            return Retryable("malformed", "job document is not a JSON object")
        if type(outcome) is NotFound:
            return await self._prove(response, outcome)
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
                response = await self.request("GET", path, max_body=DOCUMENT_MAX_BODY)
                if isinstance(response, Retryable):
                    return response
                outcome = classify(response, now_wall=self._wall_now())
                if not isinstance(outcome, Success):
                    return outcome
                page = _job_page(response.body)
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
