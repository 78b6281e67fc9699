"""The Redis stream source against a real redis-server and the emulator.

Each test uses its own stream and group names on the session's Redis; the outage test
runs a Redis of its own, which it kills and restarts.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
import zlib
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from heartbeat.config import QueueSettings
from heartbeat.emulator import Emulator, serve
from heartbeat.sources.queue import EntryError, in_shard, parse_entry, partition_batch
from heartbeat.state import FILENAME
from tests.conftest import ES
from tests.helpers_daemon import DAEMON, run_daemon
from tests.helpers_redis import (
    CONSUMER,
    GROUP,
    QUEUE,
    RedisServer,
    pending,
    producer,
    settled,
    unique,
)
from tests.strategies import job_ids
from tests.support import make_config, running, toml, until, write_config

# -- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "entry has no fields"),
        ({b"id": b"x"}, "missing field 'op'"),
        ({b"op": b"watch"}, "missing field 'id'"),
        ({b"op": b"frobnicate", b"id": b"x"}, "unknown op 'frobnicate'"),
        ({b"op": b"\xff", b"id": b"x"}, "op is not valid UTF-8"),
        ({b"op": b"watch", b"id": b"\xff\xfe"}, "id is not valid UTF-8"),
        ({b"op": b"watch", b"id": b""}, "job id is empty"),
        ({b"op": b"unwatch", b"id": b"a\x01b"}, "control character"),
    ],
)
def test_malformed_entries_name_their_problem(fields: dict[bytes, bytes], problem: str) -> None:
    with pytest.raises(EntryError, match=problem.replace("'", ".")):
        parse_entry(fields)


def test_entries_parse_verbatim_and_shards_are_crc32_of_utf8() -> None:
    assert parse_entry({b"op": b"watch", b"id": "a/b é".encode()}) == ("watch", "a/b é")
    for job_id in ("job-1", "a/b é", "💥"):
        k = zlib.crc32(job_id.encode("utf-8")) % 3
        assert [in_shard(job_id, (index, 3)) for index in range(3)] == [
            index == k for index in range(3)
        ]
    batch = partition_batch(
        [("1-0", {b"op": b"watch", b"id": b"a"}), ("1-1", {b"op": b"nope", b"id": b"a"})],
        shard=None,
    )
    assert (batch.ops, batch.ack) == ([("watch", "a")], ["1-0", "1-1"])
    assert [(entry_id, problem) for entry_id, _, problem in batch.invalid] == [
        ("1-1", "unknown op 'nope'; expected 'watch' or 'unwatch'")
    ]


# -- against Redis -----------------------------------------------------------------------


async def test_watch_and_unwatch_through_the_stream(
    es: ES, redis_server: RedisServer, tmp_path: Path
) -> None:
    for job_id in ("a", "b", "c", "x", "y"):
        es.emu.create_job(job_id=job_id)
    stream = unique()
    config = make_config(
        es.url, QUEUE, queue={"url": redis_server.url, "stream": stream}, state={"dir": tmp_path}
    )
    config = config.model_copy(update={"jobs": config.jobs.model_copy(update={"ids": ["c"]})})
    with anyio.fail_after(10), capture_logs() as logs:
        async with running(config, "queue") as (hb, _), producer(redis_server) as redis:
            for op, job_id in [
                ("watch", "a"),
                ("watch", "b"),
                ("unwatch", "a"),
                ("watch", "c"),  # also in [jobs] ids
                ("unwatch", "c"),  # withdraws the queue's claim only
                ("watch", "x"),
                ("unwatch", "x"),
                ("unwatch", "y"),
                ("watch", "y"),
            ]:
                await redis.xadd(stream, {"op": op, "id": job_id})
            await until(lambda: settled(redis, stream))
            assert hb.scheduler.watchlist.claims() == {
                "c": ("config",),
                "b": ("queue",),
                "y": ("queue",),
            }
            saved = json.loads((tmp_path / FILENAME).read_text())["jobs"]
            assert saved == {"c": ["config"], "b": ["queue"], "y": ["queue"]}
    removed = {(e["job_id"], e["reason"]) for e in logs if e["event"] == "job_removed"}
    assert removed == {("a", "source"), ("x", "source")}
    connected = [e for e in logs if e["event"] == "queue_connected"]
    assert [(e["stream"], e["group"], e["consumer"]) for e in connected] == [
        (stream, GROUP, CONSUMER)
    ]


async def test_malformed_entries_go_to_the_dead_stream_and_are_acknowledged(
    es: ES, redis_server: RedisServer
) -> None:
    es.emu.create_job(job_id="good")
    es.emu.create_job(job_id="later")
    stream = unique()
    bad: list[dict[str | bytes, str | bytes]] = [
        {"op": "watch"},
        {"id": "x"},
        {"op": "frobnicate", "id": "x"},
        {"op": "watch", "id": ""},
        {"op": "watch", "id": "a\x01b"},
        {"op": "watch", "id": b"\xff\xfe"},
        {"op": b"\xff", "id": "x", "note": "kept"},
    ]
    with anyio.fail_after(10), capture_logs() as logs:
        config = make_config(es.url, QUEUE, queue={"url": redis_server.url, "stream": stream})
        async with running(config, "queue") as (hb, _), producer(redis_server) as redis:
            ids = [(await redis.xadd(stream, fields)).decode() for fields in bad]
            await redis.xadd(stream, {"op": "watch", "id": "good"})
            await until(lambda: settled(redis, stream))
            assert hb.scheduler.watchlist.job_ids() == ["good"]
            dead = await redis.xrange(f"{stream}:dead")
            # The source is still reading: a later entry is applied too.
            await redis.xadd(stream, {"op": "watch", "id": "later"})
            await until(lambda: "later" in hb.scheduler)
    assert len(dead) == len(bad)
    for (_, fields), original, source_id in zip(dead, bad, ids, strict=True):
        assert fields[b"source_id"] == source_id.encode()
        assert fields[b"error"]
        originals = {
            (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
            for k, v in original.items()
        }
        assert {k: v for k, v in fields.items() if k not in (b"error", b"source_id")} == originals
    invalid = [e for e in logs if e["event"] == "queue_entry_invalid"]
    assert [e["entry_id"] for e in invalid] == ids
    assert [e["problem"] for e in invalid] == [f[b"error"].decode() for _, f in dead]
    assert invalid[2]["problem"] == "unknown op 'frobnicate'; expected 'watch' or 'unwatch'"
    assert invalid[5]["problem"] == "id is not valid UTF-8"


async def test_ten_thousand_ids_at_once_are_watched_persisted_and_acknowledged(
    es: ES, redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"bulk-{n:05d}" for n in range(10_000)]
    for job_id in ids:
        es.emu.create_job(job_id=job_id)
    stream = unique()
    with anyio.fail_after(20):
        async with running(
            make_config(
                es.url,
                QUEUE,
                queue={"url": redis_server.url, "stream": stream},
                state={"dir": tmp_path},
            ),
            "queue",
        ) as (hb, _):
            async with producer(redis_server) as redis:
                async with redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.xadd(stream, {"op": "watch", "id": job_id})
                    await pipe.execute()
                started = time.perf_counter()
                await until(lambda: settled(redis, stream), within=15)
                elapsed = time.perf_counter() - started
                # Acknowledged means persisted: the file holds every id already.
                saved = json.loads((tmp_path / FILENAME).read_text())["jobs"]
            assert len(hb.scheduler) == len(ids)
    assert saved == {job_id: ["queue"] for job_id in ids}
    with capsys.disabled():
        print(f"\n[info] 10,000 queue entries watched, persisted and acked in {elapsed:.2f} s")


async def test_two_daemons_split_the_ids_exactly_by_crc32_shard(
    es: ES, redis_server: RedisServer
) -> None:
    ids = [f"shard-{n}" for n in range(200)]
    for job_id in ids:
        es.emu.create_job(job_id=job_id)
    stream = unique()
    expected = [
        {job_id for job_id in ids if zlib.crc32(job_id.encode("utf-8")) % 2 == k} for k in (0, 1)
    ]
    assert all(expected) and expected[0].isdisjoint(expected[1])
    config0 = make_config(
        es.url,
        QUEUE,
        queue={"url": redis_server.url, "stream": stream, "group": "g0", "shard": "0/2"},
    )
    config1 = make_config(
        es.url,
        QUEUE,
        queue={"url": redis_server.url, "stream": stream, "group": "g1", "shard": "1/2"},
    )
    with anyio.fail_after(10):
        async with (
            running(config0, "queue") as (hb0, _),
            running(config1, "queue") as (hb1, _),
            producer(redis_server) as redis,
        ):
            for job_id in ids:
                await redis.xadd(stream, {"op": "watch", "id": job_id})
            await until(lambda: settled(redis, stream, "g0"))
            await until(lambda: settled(redis, stream, "g1"))
            assert set(hb0.scheduler.watchlist.job_ids()) == expected[0]
            assert set(hb1.scheduler.watchlist.job_ids()) == expected[1]
            # Unwatch entries are filtered the same way.
            for job_id in ids[:20]:
                await redis.xadd(stream, {"op": "unwatch", "id": job_id})
            await until(lambda: settled(redis, stream, "g0"))
            await until(lambda: settled(redis, stream, "g1"))
            remaining = set(hb0.scheduler.watchlist.job_ids()) | set(
                hb1.scheduler.watchlist.job_ids()
            )
            assert remaining == set(ids[20:])


async def test_entries_read_but_not_acknowledged_before_a_crash_are_read_again(
    es: ES, redis_server: RedisServer
) -> None:
    for job_id in ("p1", "p2", "p3", "p4"):
        es.emu.create_job(job_id=job_id)
    stream = unique()
    with anyio.fail_after(10):
        async with producer(redis_server) as redis:
            # The previous daemon's process: it read three entries, then died.
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            for job_id in ("p1", "p2", "p3"):
                await redis.xadd(stream, {"op": "watch", "id": job_id})
            await redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=10)
            assert await pending(redis, stream) == 3
            async with running(
                make_config(es.url, QUEUE, queue={"url": redis_server.url, "stream": stream}),
                "queue",
            ) as (hb, _):
                await until(lambda: {"p1", "p2", "p3"} <= set(hb.scheduler.watchlist.job_ids()))
                await until(lambda: settled(redis, stream))
                await redis.xadd(stream, {"op": "watch", "id": "p4"})
                await until(lambda: "p4" in hb.scheduler)
                await until(lambda: settled(redis, stream))


async def test_redis_killed_and_restarted_check_ins_go_on(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="steady")
    es.emu.create_job(job_id="before")
    es.emu.create_job(job_id="after")
    server = RedisServer()
    server.start()
    stream = unique()
    config = make_config(es.url, QUEUE, queue={"url": server.url, "stream": stream})
    config = config.model_copy(
        update={
            "jobs": config.jobs.model_copy(update={"ids": ["steady"]}),
            "schedule": config.schedule.model_copy(update={"interval": 0.1, "jitter": 0.0}),
        }
    )
    try:
        with anyio.fail_after(15), capture_logs() as logs:
            async with running(config, "queue") as (hb, _):
                async with producer(server) as redis:
                    await redis.xadd(stream, {"op": "watch", "id": "before"})
                    await until(lambda: "before" in hb.scheduler)
                server.kill()
                await until(lambda: any(e["event"] == "queue_disconnected" for e in logs))
                checkins = len(es.emu.checkins("steady"))
                await anyio.sleep(0.8)  # several reconnection attempts fail meanwhile
                assert len(es.emu.checkins("steady")) >= checkins + 4
                server.start()
                await until(lambda: any(e["event"] == "queue_reconnected" for e in logs))
                async with producer(server) as redis:
                    # The restarted Redis lost everything: the group is created again.
                    await redis.xadd(stream, {"op": "watch", "id": "after"})
                    await until(lambda: "after" in hb.scheduler)
                assert set(hb.scheduler.watchlist.job_ids()) == {"steady", "before", "after"}
    finally:
        server.kill()
    events = [e["event"] for e in logs]
    assert events.count("queue_disconnected") == 1
    assert events.count("queue_reconnected") == 1
    reconnected = next(e for e in logs if e["event"] == "queue_reconnected")
    assert reconnected["attempts"] >= 2


async def test_the_password_is_used_and_never_logged(es: ES, tmp_path: Path) -> None:
    password = "redis-pw-" + uuid.uuid4().hex[:8]
    es.emu.create_job(job_id="auth-ok")
    server = RedisServer(password=password)
    server.start()
    password_file = tmp_path / "redis_password"
    password_file.write_text(password + "\n")
    stream = unique()
    try:
        with anyio.fail_after(10), capture_logs() as logs:
            # In the URL, with a wrong password first: refused, logged without it.
            wrong = server.url.replace("redis://", "redis://:wrong-pw-123@")
            config = make_config(es.url, QUEUE, queue={"url": wrong, "stream": stream})
            async with running(config, "queue"):
                await until(lambda: any(e["event"] == "queue_disconnected" for e in logs))
            # From password_file, through the same loading as `heartbeat run`.
            path = tmp_path / "heartbeat.toml"
            queue = {"url": server.url, "stream": stream}
            path.write_text(toml(es.url, queue={**queue, "password_file": password_file}))
            from heartbeat.config import load

            async with running(load(path), "queue") as (hb, _), producer(server) as redis:
                await redis.xadd(stream, {"op": "watch", "id": "auth-ok"})
                await until(lambda: "auth-ok" in hb.scheduler)
    finally:
        server.kill()
    rendered = repr(logs)
    assert password not in rendered and "wrong-pw-123" not in rendered
    disconnected = next(e for e in logs if e["event"] == "queue_disconnected")
    assert disconnected["url"] == f"redis://:***@127.0.0.1:{server.port}/0"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ids=st.lists(job_ids, min_size=1, max_size=8, unique=True))
async def test_any_valid_id_travels_the_stream_verbatim(
    redis_server: RedisServer, ids: list[str]
) -> None:
    emulator = Emulator()
    for job_id in ids:
        emulator.create_job(job_id=job_id)
    stream = unique("prop")
    with anyio.fail_after(10):
        async with (
            serve(emulator) as url,
            producer(redis_server) as redis,
            running(
                make_config(url, QUEUE, queue={"url": redis_server.url, "stream": stream}), "queue"
            ) as (hb, _),
        ):
            for job_id in ids:
                await redis.xadd(stream, {"op": "watch", "id": job_id})
            await until(lambda: settled(redis, stream))
            assert sorted(hb.scheduler.watchlist.job_ids()) == sorted(ids)
            for job_id in ids:
                await redis.xadd(stream, {"op": "unwatch", "id": job_id})
            await until(lambda: settled(redis, stream))
            assert hb.scheduler.watchlist.job_ids() == []


def test_queue_settings_defaults() -> None:
    settings = QueueSettings()
    assert settings.url is None
    assert (settings.stream, settings.shard) == ("heartbeat:jobs", None)
    import socket

    assert settings.group == settings.consumer == socket.gethostname()


async def test_heartbeat_run_with_a_queue_and_discovery_reloads_and_hides_the_password(
    es: ES, tmp_path: Path
) -> None:
    password = "run-pw-" + uuid.uuid4().hex[:8]
    server = RedisServer(password=password)
    server.start()
    url = server.url.replace("redis://", f"redis://:{password}@")
    first, second = unique(), unique()
    for job_id in ("from-queue", "from-second-stream"):
        es.emu.create_job(job_id=job_id)
    discovered = es.emu.create_job("c1", worker_hostname="sidecar-host")

    def write(stream: str) -> Path:
        text = toml(
            es.url,
            DAEMON,
            queue={"url": url, "stream": stream, "group": GROUP},
            discovery={"connector_ids": ["c1"], "worker_hostname": "sidecar-host", "interval": 1},
        )
        return write_config(tmp_path / "hb.toml", text)

    try:
        async with run_daemon(write(first)) as daemon, producer(server) as redis:
            started = await daemon.wait_for("daemon_started")
            assert {"queue", "discovery"} <= set(started["sources"])
            connected = await daemon.wait_for("queue_connected")
            assert connected["url"] == f"redis://:***@127.0.0.1:{server.port}/0"
            added = await daemon.wait_for("job_added")
            assert (added["job_id"], added["source"]) == (discovered, "discovery")
            await redis.xadd(first, {"op": "watch", "id": "from-queue"})
            await until(lambda: settled(redis, first), within=10)
            # SIGHUP with another stream: the source reconnects to it at once.
            write(second)
            daemon.signal(signal.SIGHUP)
            await daemon.wait_for("config_reloaded")
            await redis.xadd(second, {"op": "watch", "id": "from-second-stream"})
            await until(lambda: settled(redis, second), within=10)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    finally:
        server.kill()
    sources = {e["job_id"]: e["source"] for e in daemon.named("job_added") if "job_id" in e}
    assert sources == {
        discovered: "discovery",
        "from-queue": "queue",
        "from-second-stream": "queue",
    }
    assert not any(password in line for line in daemon.raw)
