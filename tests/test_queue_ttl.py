"""The Redis queue's ``ttl`` field and ``[queue] default_ttl``, against a real
redis-server and the emulator: a watch entry with a TTL ends unless the same entry
comes again within it."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat.sources.queue import EntryError, parse_ttl, partition_batch
from tests.conftest import ES
from tests.helpers_redis import QUEUE, RedisServer, producer, settled, unique
from tests.support import make_config, running, until


def test_ttl_field_parses_and_a_bad_one_is_a_malformed_entry() -> None:
    assert parse_ttl({b"op": b"watch", b"id": b"a"}) is None
    assert parse_ttl({b"ttl": b"120"}) == 120.0
    for bad in (b"0.5", b"soon", b"\xff", b"-3"):
        with pytest.raises(EntryError, match="ttl must be"):
            parse_ttl({b"ttl": bad})
    batch = partition_batch(
        [
            ("1-0", {b"op": b"watch", b"id": b"a", b"ttl": b"5"}),
            ("1-1", {b"op": b"watch", b"id": b"b", b"ttl": b"0"}),
            ("1-2", {b"op": b"watch", b"id": b"c"}),
        ],
        shard=None,
    )
    assert (batch.ops, batch.ttls) == ([("watch", "a"), ("watch", "c")], [5.0, None])
    assert [entry_id for entry_id, _, _ in batch.invalid] == ["1-1"]


async def test_queue_claims_with_a_ttl_expire_and_renewals_keep_them(
    es: ES, redis_server: RedisServer
) -> None:
    for job_id in ("leased", "renewed", "defaulted"):
        es.emu.create_job(job_id=job_id)
    stream = unique()
    config = make_config(
        es.url, QUEUE, queue={"url": redis_server.url, "stream": stream, "default_ttl": 1}
    )
    with anyio.fail_after(20), capture_logs() as logs:
        async with running(config, "queue") as (hb, _), producer(redis_server) as redis:
            await redis.xadd(stream, {"op": "watch", "id": "leased", "ttl": "1"})
            await redis.xadd(stream, {"op": "watch", "id": "renewed", "ttl": "1"})
            await redis.xadd(stream, {"op": "watch", "id": "defaulted"})
            await until(lambda: settled(redis, stream))
            assert {"leased", "renewed", "defaulted"} <= set(hb.scheduler.watchlist.job_ids())
            for _ in range(4):  # renewed every 0.4 s: never expires
                await anyio.sleep(0.4)
                await redis.xadd(stream, {"op": "watch", "id": "renewed", "ttl": "1"})
            assert "leased" not in hb.scheduler and "defaulted" not in hb.scheduler
            assert "renewed" in hb.scheduler
    removed = sorted(
        (e["job_id"], e["reason"], e["source"]) for e in logs if e["event"] == "job_removed"
    )
    assert removed == [("defaulted", "expired", "queue"), ("leased", "expired", "queue")]
