"""The watch file ([jobs] file): its format, change detection, reconciliation with the
watch list (state-restored ids included), failures that must not unwatch anything, and
SIGHUP, with real files, a real Heartbeat and the emulator."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from heartbeat.config import Config
from heartbeat.daemon import Heartbeat
from heartbeat.sources.file import FileSource, parse
from tests.conftest import ES
from tests.helpers_control import QUIET, QUIET_DAEMON
from tests.helpers_daemon import run_daemon
from tests.strategies import job_ids
from tests.support import make_config, running, toml, until, write_config


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == name]


def replace(path: Path, text: str | bytes) -> None:
    """Write atomically, as the README tells operators to."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    os.replace(tmp, path)


# --- the format (pure) -------------------------------------------------------------------


def test_comments_blanks_whitespace_and_crlf() -> None:
    raw = (
        "\ufeffjob-1\r\n"  # a byte-order mark and a Windows line end
        "  # a comment\n"
        "\n"
        "\t job two \t\r\n"  # inner space kept, the rest stripped
        "job#3 # not a comment\n"  # '#' after the first character is part of the id
        "job-1\n"  # duplicate
        "a/b?c%2F..\n"
        "   \n"
        "last-without-newline"
    ).encode()
    parsed = parse(raw)
    assert parsed.ids == [
        "job-1",
        "job two",
        "job#3 # not a comment",
        "a/b?c%2F..",
        "last-without-newline",
    ]
    assert parsed.bad == []


def test_bad_lines_are_reported_with_their_numbers_and_skipped() -> None:
    raw = b"good-1\nbad\x01id\n\xff\xfe-not-utf8\n" + b"x" * 600 + b"\ngood-2\n"
    parsed = parse(raw)
    assert parsed.ids == ["good-1", "good-2"]
    assert [(bad.number, bad.error.split(" ")[0]) for bad in parsed.bad] == [
        (2, "job"),
        (3, "not"),
        (4, "job"),
    ]
    assert "control character" in parsed.bad[0].error
    assert parsed.bad[0].text == "'bad\\x01id'"
    assert "512" in parsed.bad[2].error


#: What the file format can carry: everything a job id may be except an id that starts
#: with '#' (a comment), starts or ends with a space or a tab (stripped), or starts with
#: a byte-order mark (ignored on the first line).
def carried(job_id: str) -> bool:
    return not job_id.startswith(("#", "\ufeff")) and job_id == job_id.strip(" \t")


@given(st.lists(job_ids.filter(carried), max_size=20))
def test_any_carried_id_parses_back_verbatim(ids: list[str]) -> None:
    raw = "".join(f"{job_id}\n" for job_id in ids).encode("utf-8")
    assert parse(raw).ids == list(dict.fromkeys(ids))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(job_ids.filter(carried), min_size=1, max_size=10))
def test_any_carried_id_goes_through_a_real_file_into_the_watch_list(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str]
) -> None:
    path = tmp_path_factory.mktemp("watch") / "jobs.txt"
    path.write_bytes("".join(f"  {job_id}\t\r\n# c\n" for job_id in ids).encode("utf-8"))

    async def load() -> list[str]:
        # A Heartbeat that is not entered: the source only needs its watch list.
        hb = Heartbeat(Config())
        source = FileSource(path)
        with capture_logs():
            async with anyio.create_task_group() as tg:
                await tg.start(source.run, hb)
                tg.cancel_scope.cancel()
        return hb.scheduler.watchlist.job_ids()

    assert anyio.run(load) == list(dict.fromkeys(ids))


# --- against a running Heartbeat ------------------------------------------------------


async def test_file_is_applied_before_started_and_changes_within_two_seconds(
    es: ES, tmp_path: Path
) -> None:
    for job_id in ("a", "b", "c"):
        es.emu.create_job(job_id=job_id)
    path = tmp_path / "jobs.txt"
    path.write_text("a\nb\n")
    with capture_logs() as logs, anyio.fail_after(15):
        async with Heartbeat(make_config(es.url, QUIET, jobs={"file": path})) as hb:
            source = FileSource(path)  # the default 1 s polling
            await hb.start(source.run, hb)
            assert sorted(hb.scheduler.watchlist.job_ids()) == ["a", "b"]  # before "started"
            replace(path, "b\nc\n")
            changed_at = anyio.current_time()
            await until(lambda: sorted(hb.scheduler.watchlist.job_ids()) == ["b", "c"], within=3)
            assert anyio.current_time() - changed_at < 2.0
    removed = events(logs, "job_removed")
    assert removed == [
        {"event": "job_removed", "job_id": "a", "reason": "source", "log_level": "info"}
    ]
    loaded = events(logs, "watch_file_loaded")
    assert [(e["jobs"], e["added"], e["removed"]) for e in loaded] == [(2, 2, 0), (2, 1, 1)]


async def test_an_in_place_rewrite_with_the_same_size_is_seen(es: ES, tmp_path: Path) -> None:
    for job_id in ("job-a", "job-b"):
        es.emu.create_job(job_id=job_id)
    path = tmp_path / "jobs.txt"
    path.write_text("job-a\n")
    with capture_logs(), anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, jobs={"file": path}), "file", "control") as (
            hb,
            _,
        ):
            path.write_text("job-b\n")  # same size, same second: mtime_ns tells
            await until(lambda: hb.scheduler.watchlist.job_ids() == ["job-b"])


async def test_an_id_also_wanted_by_another_source_stays(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="shared")
    path = tmp_path / "jobs.txt"
    path.write_text("shared\n")
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(
            make_config(es.url, QUIET, jobs={"ids": ["shared"], "file": path}), "file", "control"
        ) as (hb, _):
            assert hb.scheduler.watchlist.claims()["shared"] == ("config", "file")
            replace(path, "")
            await until(lambda: hb.scheduler.watchlist.claims()["shared"] == ("config",))
            await anyio.sleep(0.3)
            assert "shared" in hb.scheduler
    assert events(logs, "job_removed") == []


async def test_a_bad_line_is_logged_with_its_number_and_the_rest_applies(
    es: ES, tmp_path: Path
) -> None:
    for job_id in ("ok-1", "ok-2"):
        es.emu.create_job(job_id=job_id)
    path = tmp_path / "jobs.txt"
    path.write_bytes(b"ok-1\n\n# fine\nbad\x7fid\nok-2\n")
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, jobs={"file": path}), "file", "control") as (
            hb,
            _,
        ):
            assert hb.scheduler.watchlist.job_ids() == ["ok-1", "ok-2"]
    [bad] = events(logs, "watch_file_line_invalid")
    assert bad["line"] == 4
    assert bad["path"] == str(path)
    assert "control character" in str(bad["error"])
    assert events(logs, "watch_file_loaded")[0]["invalid_lines"] == 1


async def test_many_bad_lines_are_counted_not_each_logged(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="ok")
    path = tmp_path / "jobs.txt"
    path.write_bytes(b"bad\x01\n" * 500 + b"ok\n")
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, jobs={"file": path}), "file", "control") as (
            hb,
            _,
        ):
            assert hb.scheduler.watchlist.job_ids() == ["ok"]
    assert len(events(logs, "watch_file_line_invalid")) == 10
    assert events(logs, "watch_file_loaded")[0]["invalid_lines"] == 500


@pytest.mark.parametrize("problem", ["missing", "directory", "not-utf8-is-fine"])
async def test_an_unreadable_file_unwatches_nothing_and_is_retried(
    es: ES, tmp_path: Path, problem: str
) -> None:
    for job_id in ("a", "b"):
        es.emu.create_job(job_id=job_id)
    path = tmp_path / "jobs.txt"
    path.write_text("a\nb\n")
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, jobs={"file": path}), "file", "control") as (
            hb,
            _,
        ):
            assert sorted(hb.scheduler.watchlist.job_ids()) == ["a", "b"]
            path.unlink()
            if problem == "directory":
                path.mkdir()
            elif problem == "not-utf8-is-fine":
                path.write_bytes(b"a\n\xff\n")  # readable: one bad line, b removed
                await until(lambda: hb.scheduler.watchlist.job_ids() == ["a"])
                return
            await until(lambda: events(logs, "watch_file_unreadable"))
            await anyio.sleep(0.5)  # several more polls
            assert sorted(hb.scheduler.watchlist.job_ids()) == ["a", "b"]
            if problem == "directory":
                path.rmdir()
            replace(path, "b\n")
            await until(lambda: hb.scheduler.watchlist.job_ids() == ["b"])
    [unreadable] = events(logs, "watch_file_unreadable")  # once, not once per poll
    assert unreadable["kept"] == 2
    assert unreadable["error"] == (
        "No such file or directory" if problem == "missing" else "not a regular file"
    )
    assert events(logs, "watch_file_loaded")[-1]["recovered"] is True


async def test_a_file_missing_at_start_is_not_fatal(es: ES, tmp_path: Path) -> None:
    es.emu.create_job(job_id="late-job")
    path = tmp_path / "later.txt"
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, jobs={"file": path}), "file", "control") as (
            hb,
            _,
        ):
            assert len(hb.scheduler) == 0
            replace(path, "late-job\n")
            await until(lambda: hb.scheduler.watchlist.job_ids() == ["late-job"])
    assert len(events(logs, "watch_file_unreadable")) == 1


async def test_restored_file_ids_are_reconciled_with_the_file(es: ES, tmp_path: Path) -> None:
    """Ids saved with the "file" claim but gone from the file while heartbeat was down
    are released at start: the watch list, not the source's memory, is reconciled."""
    for job_id in ("keep", "gone", "mine"):
        es.emu.create_job(job_id=job_id)
    path, state = tmp_path / "jobs.txt", tmp_path / "state"
    path.write_text("keep\ngone\n")
    config = make_config(es.url, QUIET, jobs={"file": path}, state={"dir": state})
    with capture_logs(), anyio.fail_after(10):
        async with running(config, "file", "control") as (hb, _):
            hb.watch("mine", "control")
    path.write_text("keep\n")
    with capture_logs() as logs, anyio.fail_after(10):
        async with running(config, "file", "control") as (hb, _):
            assert hb.scheduler.watchlist.claims() == {"keep": ("file",), "mine": ("control",)}
    assert [(e["job_id"], e["reason"]) for e in events(logs, "job_removed")] == [("gone", "source")]


async def test_without_a_file_restored_file_claims_are_released(es: ES, tmp_path: Path) -> None:
    path, state = tmp_path / "jobs.txt", tmp_path / "state"
    path.write_text("from-file\n")
    with capture_logs(), anyio.fail_after(10):
        async with running(
            make_config(es.url, QUIET, jobs={"file": path}, state={"dir": state}), "file", "control"
        ):
            pass
    with capture_logs(), anyio.fail_after(10):
        async with running(make_config(es.url, QUIET, state={"dir": state}), "file", "control") as (
            hb,
            _,
        ):
            assert len(hb.scheduler) == 0


async def test_reload_follows_a_new_path_and_rereads(es: ES, tmp_path: Path) -> None:
    for job_id in ("one", "two", "three"):
        es.emu.create_job(job_id=job_id)
    first, second = tmp_path / "one.txt", tmp_path / "two.txt"
    first.write_text("one\n")
    second.write_text("two\n")
    with capture_logs(), anyio.fail_after(10):
        async with running(
            make_config(es.url, QUIET, jobs={"file": first}), "file", "control", file_poll=60
        ) as (hb, sources):
            source = sources["file"]
            await source.reload(make_config(es.url, QUIET, jobs={"file": second}))
            assert hb.scheduler.watchlist.job_ids() == ["two"]  # done when reload returns
            replace(second, "two\nthree\n")
            await source.reload(
                make_config(es.url, QUIET, jobs={"file": second})
            )  # SIGHUP: re-read now
            assert hb.scheduler.watchlist.job_ids() == ["two", "three"]
            await source.reload(make_config(es.url, QUIET, jobs={"file": None}))
            assert hb.scheduler.watchlist.job_ids() == []
            await source.reload(make_config(es.url, QUIET, jobs={"file": first}))
            assert hb.scheduler.watchlist.job_ids() == ["one"]


async def test_the_daemon_reads_the_file_and_rereads_it_on_sighup(es: ES, tmp_path: Path) -> None:
    for job_id in ("job a", "job-b"):
        es.emu.create_job(job_id=job_id)
    path = tmp_path / "jobs.txt"
    path.write_text("job a\n")
    config = write_config(tmp_path / "hb.toml", toml(es.url, QUIET_DAEMON, jobs={"file": path}))
    async with run_daemon(config) as daemon:
        started = await daemon.wait_for("daemon_started")
        assert started["jobs"] == 1
        assert "file" in started["sources"]
        replace(path, "job-b\n")
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for("config_reloaded")
        removed = await daemon.wait_for("job_removed")
        assert (removed["job_id"], removed["reason"]) == ("job a", "source")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert [e["job_id"] for e in daemon.named("job_added")] == ["job a", "job-b"]
