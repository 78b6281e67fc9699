"""The Redis stream: a shared queue of watch/unwatch entries for several daemons.

Producers append entries with two fields, ``op`` (``watch`` or ``unwatch``) and ``id``::

    XADD heartbeat:jobs * op watch id <sync job id> [ttl <seconds>]

A ``ttl`` (or ``[queue] default_ttl``) makes the claim end unless the same entry comes
again within it (heartbeat.leases); a watch without either is permanent.

Each daemon reads the whole stream through its own consumer group (``[queue] group``,
default the host name), so every daemon sees every entry; daemons that share a group
split the entries between them. The group is created at id ``0`` with ``MKSTREAM``
when missing, so a new daemon first replays the entries already in the stream (in
order: a watch later undone by an unwatch ends unwatched).

A batch of up to :data:`BATCH` entries is applied in order, then the watch list is
persisted (``[state] dir``), then every entry of the batch is acknowledged with one
``XACK``: an acknowledged entry survives ``kill -9``. Entries read but not acknowledged
(a crash, a lost connection) are read again first on every (re)connection
(``XREADGROUP ... 0``, then ``>``); applying an entry twice changes nothing.

* With ``[queue] shard = "k/N"`` only ids with ``zlib.crc32(id.encode("utf-8")) % N == k``
  are applied; the others are acknowledged and ignored.
* A malformed entry (a missing field, an unknown op, an id that is not valid UTF-8 or
  not a valid job id) is logged (``queue_entry_invalid``), copied to ``<stream>:dead``
  with its fields plus ``error`` and ``source_id``, and acknowledged.
* ``unwatch`` withdraws only the queue's claim (``reason="source"``): a job another
  source also asked for stays watched.
* When Redis goes away, check-ins go on; the source reconnects with backoff
  (``[backoff]``), logging ``queue_disconnected`` and ``queue_reconnected`` once per
  outage.

The URL may carry a password: only :func:`heartbeat.config.redact_url` forms are logged.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from heartbeat import backoff, logs
from heartbeat.config import Config, QueueSettings, parse_shard, redact_url, url_password
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import printable, validate_job_id
from heartbeat.leases import check_ttl
from heartbeat.sources.base import Feed

if TYPE_CHECKING:
    from heartbeat.config import BackoffSettings

log = structlog.get_logger("heartbeat")

NAME = "queue"
OPS = ("watch", "unwatch")
#: Entries read, applied, persisted and acknowledged together.
BATCH = 1000
#: How long one XREADGROUP waits for new entries (milliseconds).
BLOCK_MS = 2000
#: Malformed entries go to ``<stream>:dead``, trimmed to about this many entries.
DEAD_SUFFIX = ":dead"
DEAD_MAXLEN = 100_000
#: More invalid entries than this in one batch are logged as one line.
INVALID_LOG_LIMIT = 10


class EntryError(ValueError):
    """What is wrong with one stream entry."""


def parse_entry(fields: Mapping[bytes, bytes]) -> tuple[str, str]:
    """``(op, job_id)`` of one stream entry, or EntryError naming the problem."""
    if not fields:
        raise EntryError("entry has no fields (deleted from the stream?)")
    raw_op, raw_id = fields.get(b"op"), fields.get(b"id")
    if raw_op is None:
        raise EntryError("missing field 'op'")
    if raw_id is None:
        raise EntryError("missing field 'id'")
    try:
        op = raw_op.decode("utf-8")
    except UnicodeDecodeError:
        raise EntryError("op is not valid UTF-8") from None
    if op not in OPS:
        raise EntryError(f"unknown op {printable(op)}; expected 'watch' or 'unwatch'")
    try:
        job_id = raw_id.decode("utf-8")
    except UnicodeDecodeError:
        raise EntryError("id is not valid UTF-8") from None
    try:
        return op, validate_job_id(job_id)
    except InvalidJobId as exc:
        raise EntryError(str(exc)) from None


def parse_ttl(fields: Mapping[bytes, bytes]) -> float | None:
    """The optional ``ttl`` field of a watch entry: seconds, at least 1."""
    raw = fields.get(b"ttl")
    if raw is None:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise EntryError("ttl must be a number of seconds") from None
    try:
        return check_ttl(text)
    except ValueError as exc:
        raise EntryError(str(exc)) from None


def in_shard(job_id: str, shard: tuple[int, int] | None) -> bool:
    """True when ``job_id`` belongs to shard ``(k, N)``: CRC32 of its UTF-8 bytes mod N is k."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(job_id.encode("utf-8")) % count == index


@dataclass(slots=True)
class Batch:
    """One read, sorted: what to apply in order, what is malformed, what to acknowledge."""

    ops: list[tuple[str, str]] = field(default_factory=list)
    #: The ``ttl`` of each of ``ops`` (None: none given), in the same order.
    ttls: list[float | None] = field(default_factory=list)
    invalid: list[tuple[str, dict[bytes, bytes], str]] = field(default_factory=list)
    ack: list[str] = field(default_factory=list)
    skipped: int = 0


def partition_batch(
    entries: Iterable[tuple[str, Mapping[bytes, bytes]]], shard: tuple[int, int] | None
) -> Batch:
    """Split a read of entries into this shard's operations (with their TTLs), the
    invalid entries and the count of other shards' ones; every entry is to be acked."""
    batch = Batch()
    for entry_id, fields in entries:
        batch.ack.append(entry_id)
        try:
            op, job_id = parse_entry(fields)
            ttl = parse_ttl(fields)
        except EntryError as exc:
            batch.invalid.append((entry_id, dict(fields), str(exc)))
            continue
        if in_shard(job_id, shard):
            batch.ops.append((op, job_id))
            batch.ttls.append(ttl)
        else:
            batch.skipped += 1
    return batch


def apply(
    feed: Feed,
    ops: list[tuple[str, str]],
    ttls: list[float | None] | None = None,
    default_ttl: float = 0.0,
) -> tuple[int, int]:
    """Apply watch/unwatch in order (runs of watches with one TTL as one batch);
    ``(added, removed)``. A watch without ``ttl`` gets ``default_ttl`` (0: permanent)."""
    added = removed = 0
    run: list[str] = []
    run_ttl: float | None = None
    for index, (op, job_id) in enumerate(ops):
        if op == "watch":
            given = ttls[index] if ttls is not None else None
            ttl = given if given is not None else (default_ttl or None)
            if run and ttl != run_ttl:
                added += feed.claim_valid(run, NAME, ttl=run_ttl)
                run = []
            run.append(job_id)
            run_ttl = ttl
            continue
        if run:
            added += feed.claim_valid(run, NAME, ttl=run_ttl)
            run = []
        removed += feed.release(job_id, source=NAME, reason="source")
    if run:
        added += feed.claim_valid(run, NAME, ttl=run_ttl)
    return added, removed


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply on one stream (RESP2 or RESP3 shape)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        per_stream = [
            value[0] if value and isinstance(value[0], list) else value for value in reply.values()
        ]
    else:
        per_stream = [item[1] for item in reply]
    entries: list[tuple[str, dict[bytes, bytes]]] = []
    for stream_entries in per_stream:
        for entry_id, fields in stream_entries or []:
            if entry_id is None:
                continue
            text = entry_id.decode("ascii") if isinstance(entry_id, bytes) else str(entry_id)
            entries.append((text, dict(fields or {})))
    return entries


class QueueSource:
    name = NAME

    def __init__(
        self, settings: QueueSettings, *, backoff_settings: BackoffSettings, rng: Any = None
    ) -> None:
        self.settings = settings
        #: ``[backoff]``: the delays between two reconnections.
        self.backoff = backoff_settings
        self._rng = rng if rng is not None else random.random
        self._changed = anyio.Event()
        self._session: anyio.CancelScope | None = None
        self._connected_once = False
        self._failures = 0
        self._down_since: float | None = None
        register_secrets(settings)

    @property
    def dead_stream(self) -> str:
        return self.settings.stream + DEAD_SUFFIX

    async def reload(self, config: Config) -> None:
        """New ``[queue]`` settings: reconnect with them at once."""
        self.backoff = config.backoff
        if config.queue == self.settings:
            return
        register_secrets(config.queue)
        self.settings = config.queue
        self._changed.set()
        if self._session is not None:
            self._session.cancel()

    async def run(self, feed: Feed, *, task_status: TaskStatus[Any]) -> None:
        """Read, apply, persist, acknowledge; reconnect with backoff; until cancelled."""
        task_status.started()  # never wait for Redis: check-ins must not depend on it
        while True:
            self._changed = anyio.Event()
            settings = self.settings
            if settings.url is None:
                await self._changed.wait()  # [queue] url removed by a reload
                continue
            client = connect(settings)
            try:
                with anyio.CancelScope() as self._session:
                    await self._serve(feed, client, settings)
            except (RedisError, OSError) as exc:
                self._disconnected(feed, exc)
            finally:
                self._session = None
                with anyio.CancelScope(shield=True):
                    await client.aclose()
            if self._changed.is_set():
                continue  # reconfigured: reconnect now
            b = self.backoff
            delay = backoff.retry_delay(
                max(self._failures, 1),
                u=self._rng(),
                initial=b.initial,
                multiplier=b.multiplier,
                maximum=b.max,
            )
            with anyio.move_on_after(delay):
                await self._changed.wait()

    async def _serve(self, feed: Feed, client: Redis, settings: QueueSettings) -> None:
        stream, group, consumer = settings.stream, settings.group, settings.consumer
        shard = parse_shard(settings.shard) if settings.shard else None
        await ensure_group(client, stream, group)
        last_id = "0"  # our own unacknowledged entries first, then new ones
        while True:
            reply = await client.xreadgroup(
                group,
                consumer,
                {stream: last_id},
                count=BATCH,
                block=BLOCK_MS if last_id == ">" else None,
            )
            self._connected(feed, settings)
            entries = _entries(reply)
            if not entries:
                last_id = ">"
                continue
            await self._handle(feed, client, settings, partition_batch(entries, shard))
            if last_id != ">":
                last_id = entries[-1][0]

    async def _handle(
        self, feed: Feed, client: Redis, settings: QueueSettings, batch: Batch
    ) -> None:
        log_invalid(batch.invalid)
        added, removed = apply(feed, batch.ops, batch.ttls, settings.default_ttl)
        await feed.persisted()
        async with client.pipeline(transaction=True) as pipe:
            for entry_id, fields, problem in batch.invalid:
                dead: dict[FieldT, EncodableT] = dict(fields.items())
                dead.update({b"error": problem.encode(), b"source_id": entry_id.encode()})
                pipe.xadd(self.dead_stream, dead, maxlen=DEAD_MAXLEN, approximate=True)
            pipe.xack(settings.stream, settings.group, *batch.ack)
            await pipe.execute()
        log.debug(
            "queue_applied",
            entries=len(batch.ack),
            added=added,
            removed=removed,
            invalid=len(batch.invalid),
            other_shards=batch.skipped,
        )

    def _connected(self, feed: Feed, settings: QueueSettings) -> None:
        if self._failures == 0 and self._connected_once:
            return
        if not self._connected_once:
            self._connected_once = True
            log.info(
                "queue_connected",
                url=redact_url(settings.url or ""),
                stream=settings.stream,
                group=settings.group,
                consumer=settings.consumer,
                shard=settings.shard,
            )
        if self._down_since is not None:
            log.warning(
                "queue_reconnected",
                duration_s=round(feed.clock.monotonic() - self._down_since, 3),
                attempts=self._failures,
            )
        self._failures = 0
        self._down_since = None

    def _disconnected(self, feed: Feed, exc: BaseException) -> None:
        self._failures += 1
        if self._down_since is not None:
            return
        self._down_since = feed.clock.monotonic()
        log.error(
            "queue_disconnected",
            url=redact_url(self.settings.url or ""),
            error=f"{type(exc).__name__}: {exc}",
            jobs=feed.watching(),
        )


def register_secrets(settings: QueueSettings) -> None:
    """Keep the Redis password (and a URL holding it) out of every log line."""
    if settings.password is not None:
        logs.register_secret(settings.password.get_secret_value())
    if settings.url is not None and url_password(settings.url) is not None:
        logs.register_secret(url_password(settings.url))
        logs.register_secret(settings.url)


def connect(settings: QueueSettings) -> Redis:
    """A client for ``settings.url`` (connects lazily). Retries are ours, not redis-py's."""
    assert settings.url is not None
    extra: dict[str, Any] = {}
    if settings.password is not None:
        extra["password"] = settings.password.get_secret_value()
    return Redis.from_url(
        settings.url,
        socket_connect_timeout=5.0,
        # Longer than a blocking XREADGROUP, so only a silent connection times out.
        socket_timeout=BLOCK_MS / 1000 + 5.0,
        retry=Retry(NoBackoff(), 0),
        client_name=f"heartbeat:{settings.consumer}",
        **extra,
    )


async def ensure_group(client: Redis, stream: str, group: str) -> None:
    """Create ``group`` at id 0 (with the stream) unless it exists: a new group first
    replays what the stream already holds."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if not str(exc).startswith("BUSYGROUP"):
            raise


def log_invalid(invalid: list[tuple[str, dict[bytes, bytes], str]]) -> None:
    if len(invalid) <= INVALID_LOG_LIMIT:
        for entry_id, _, problem in invalid:
            log.warning("queue_entry_invalid", entry_id=entry_id, problem=problem)
        return
    log.warning(
        "queue_entry_invalid",
        count=len(invalid),
        sample_entry_ids=[entry_id for entry_id, _, _ in invalid[:3]],
        problem=invalid[0][2],
    )
