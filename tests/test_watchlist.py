"""The watch list alone: claims, replacing a source's claims, and the typed change
events its observers get. No event loop and no scheduler: placing a new job is a
recording stub here."""

from __future__ import annotations

from structlog.testing import capture_logs

from heartbeat.changes import (
    Change,
    ClaimsAdded,
    ClaimWithdrawn,
    JobDropped,
    JobRemoved,
    JobsAdded,
)
from heartbeat.clock import ManualClock
from heartbeat.watchlist import Job, WatchList


class Recorder:
    def __init__(self) -> None:
        self.placed: list[tuple[str, float]] = []
        self.forgotten: list[str] = []
        self.changes: list[Change] = []

    def place(self, jobs: list[Job], now: float) -> None:
        self.placed += [(job.id, now) for job in jobs]

    def forget(self, job: Job) -> None:
        self.forgotten.append(job.id)


def watchlist() -> tuple[WatchList, Recorder]:
    recorder = Recorder()
    watched = WatchList(ManualClock(start=1000.0), place=recorder.place, forget=recorder.forget)
    watched.observers.append(recorder.changes.append)
    return watched, recorder


def test_claims_per_source_and_their_counts() -> None:
    watched, recorder = watchlist()
    watched.watch_many(["a", "b", "c"], "config")
    watched.watch_many(["b", "c", "d"], "file")
    assert watched.claimed("config") == {"a", "b", "c"}
    assert watched.claimed("file") == {"b", "c", "d"}
    assert watched.claimed("queue") == set()
    assert watched.claim_counts() == {"config": 3, "file": 3}
    assert watched.claims() == {
        "a": ("config",),
        "b": ("config", "file"),
        "c": ("config", "file"),
        "d": ("file",),
    }
    # Placed once each, when first watched; a second claim places nothing.
    assert recorder.placed == [("a", 1000.0), ("b", 1000.0), ("c", 1000.0), ("d", 1000.0)]
    assert recorder.changes == [
        JobsAdded(("a", "b", "c"), "config"),
        ClaimsAdded(("b", "c"), "file"),
        JobsAdded(("d",), "file"),
    ]


def test_replace_claims_withdraws_then_adds_and_counts_both() -> None:
    watched, recorder = watchlist()
    watched.watch_many(["keep", "gone", "shared"], "file")
    watched.watch("shared", "config")
    recorder.changes.clear()
    with capture_logs() as logs:
        assert watched.replace_claims("file", ["new", "keep", "new"], reason="source") == (1, 2)
    assert watched.claimed("file") == {"keep", "new"}
    assert watched.claims()["shared"] == ("config",)  # another source still wants it
    assert "gone" not in watched
    assert recorder.forgotten == ["gone"]
    assert recorder.changes == [
        JobRemoved("gone", "source"),
        ClaimWithdrawn("shared", "file"),
        JobsAdded(("new",), "file"),
    ]
    assert [(e["event"], e.get("job_id"), e.get("reason")) for e in logs] == [
        ("job_removed", "gone", "source"),
        ("job_added", "new", None),
    ]
    # Already exactly that: nothing changes, nothing is logged.
    with capture_logs() as logs:
        assert watched.replace_claims("file", ["keep", "new"], reason="source") == (0, 0)
    assert logs == []


def test_a_drop_goes_whatever_the_claims_with_its_fields() -> None:
    watched, recorder = watchlist()
    watched.watch("x", "config")
    watched.watch("x", "control")
    with capture_logs() as logs:
        assert watched.drop("x", "not_found", status=404, server_reason="no such job")
        assert not watched.drop("x", "not_found")
    assert "x" not in watched
    assert recorder.changes[-1] == JobDropped(
        "x", "not_found", ("config", "control"), status=404, server_reason="no such job"
    )
    assert logs == [
        {
            "event": "job_dropped",
            "log_level": "warning",
            "job_id": "x",
            "reason": "not_found",
            "status": 404,
            "server_reason": "no such job",
        }
    ]


def test_unwatching_a_claim_the_source_does_not_hold_changes_nothing() -> None:
    watched, recorder = watchlist()
    watched.watch("x", "config")
    recorder.changes.clear()
    assert not watched.unwatch("x", "source", "file")
    assert not watched.unwatch("y")
    assert recorder.changes == [] and "x" in watched
    assert watched.unwatch("x", "config", "config")
    assert recorder.changes == [JobRemoved("x", "config")]
