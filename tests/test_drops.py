"""The pure rules of issue 12 alone: the drop rule (heartbeat.drops), the expected
cluster (heartbeat.identity), tombstones and saved outcomes (heartbeat.memory)."""

from __future__ import annotations

from heartbeat.drops import STORM_MIN_JOBS, DropRule, is_storm
from heartbeat.identity import ClusterIdentity, ClusterInfo
from heartbeat.memory import (
    MAX_TOMBSTONES,
    TOMBSTONE_AGE,
    Tombstone,
    Tombstones,
    outcomes_json,
    parse_outcomes,
)

# -- the drop rule ------------------------------------------------------------------------


def test_a_storm_needs_ten_jobs_and_more_than_half() -> None:
    assert not is_storm(9, 10)  # fewer than ten pending: never a storm
    assert not is_storm(10, 20)  # exactly half: not more than half
    assert is_storm(11, 20)
    assert not is_storm(10, 100)
    # More than half of the jobs that answered since the first mark: a storm too.
    assert is_storm(10, 100, answered=15)
    assert not is_storm(10, 100, answered=20)


def test_first_404_pends_second_drops_outside_a_storm() -> None:
    rule = DropRule()
    assert rule.not_found("a", None, 0.0, watched=100, idle_after=300.0) == "pending"
    assert rule.pending == 1
    assert rule.not_found("a", 0.0, 10.0, watched=100, idle_after=300.0) == "drop"


def test_in_a_storm_drops_wait_for_idle_after() -> None:
    rule = DropRule()
    for n in range(STORM_MIN_JOBS + 1):
        assert rule.not_found(f"j{n}", None, 0.0, watched=20, idle_after=300.0) == "pending"
    assert rule.not_found("j0", 0.0, 10.0, watched=20, idle_after=300.0) == "defer"
    assert rule.log_storm() is True
    assert rule.log_storm() is False  # once per storm
    assert rule.not_found("j0", 0.0, 299.0, watched=20, idle_after=300.0) == "defer"
    assert rule.not_found("j0", 0.0, 300.0, watched=20, idle_after=300.0) == "drop"


def test_a_wave_of_404s_over_a_spread_list_is_a_storm_early() -> None:
    rule = DropRule()
    # 1,000 jobs spread over the interval: by the first confirmation, 12 answered, all 404.
    for n in range(12):
        rule.not_found(f"j{n}", None, float(n), watched=1000, idle_after=300.0)
    assert rule.not_found("j0", 0.0, 10.0, watched=1000, idle_after=300.0) == "defer"


def test_successes_in_the_wave_keep_a_few_404s_from_being_a_storm() -> None:
    rule = DropRule()
    for n in range(10):
        rule.not_found(f"gone{n}", None, 0.0, watched=1000, idle_after=300.0)
    for n in range(30):
        rule.answered(f"ok{n}")  # the rest of the list keeps succeeding
    assert rule.not_found("gone0", 0.0, 10.0, watched=1000, idle_after=300.0) == "drop"


def test_clearing_ends_the_storm_and_the_wave() -> None:
    rule = DropRule()
    for n in range(12):
        rule.not_found(f"j{n}", None, 0.0, watched=20, idle_after=300.0)
    assert rule.log_storm()
    for _ in range(12):
        rule.cleared(watched=20)
    assert (rule.pending, rule.wave, rule.storm_logged) == (0, set(), False)
    rule.cleared(watched=20)  # never below zero
    assert rule.pending == 0


# -- the expected cluster -----------------------------------------------------------------


def test_the_first_cluster_seen_is_remembered_and_then_expected() -> None:
    changes: list[str | None] = []
    identity = ClusterIdentity(on_change=lambda: changes.append(identity.remembered))
    assert identity.judge("http://a", "uuid-a") == "match"
    assert changes == ["uuid-a"]
    assert identity.judge("http://b", "uuid-b") == "mismatch"
    assert identity.mismatched("http://b", "uuid-b") is True
    assert identity.mismatched("http://b", "uuid-b") is False  # logged once
    assert identity.judge("http://a", "uuid-a") == "match"
    assert changes == ["uuid-a"]  # nothing new to remember


def test_a_pinned_cluster_wins_and_a_new_pin_clears_the_mismatches() -> None:
    identity = ClusterIdentity(pinned="uuid-b", remembered="uuid-a")
    assert identity.expected == "uuid-b"
    assert identity.judge("http://a", "uuid-a") == "mismatch"
    identity.mismatched("http://a", "uuid-a")
    assert identity.judge("http://b", "uuid-b") == "match"
    assert identity.remembered == "uuid-b"  # the pin, once seen, is remembered
    identity.pin("uuid-a")
    assert identity.mismatches == {}
    identity.mismatched("http://b", "uuid-b")
    identity.forget(["http://a"])  # http://b is no longer configured
    assert identity.mismatches == {}


def test_cluster_info_is_read_only_from_elasticsearch_s_answer() -> None:
    body = {"cluster_uuid": "u", "cluster_name": "prod", "version": {"number": "9.1.0"}}
    assert ClusterInfo.parse(body) == ClusterInfo("u", "prod", "9.1.0")
    assert ClusterInfo.parse({"cluster_uuid": "_na_"}) is None  # not joined yet
    assert ClusterInfo.parse({"cluster_uuid": ""}) is None
    assert ClusterInfo.parse([1]) is None
    assert ClusterInfo.parse({"cluster_uuid": "u", "version": "9"}) == ClusterInfo("u", None, None)


# -- tombstones and saved outcomes ---------------------------------------------------------


def tombstone(job_id: str, at: float) -> Tombstone:
    return Tombstone(job_id, "not_found", 404, "gone", at, ("control",))


def test_tombstones_keep_the_last_thousand_and_one_day() -> None:
    stones = Tombstones()
    for n in range(MAX_TOMBSTONES + 5):
        stones.add(tombstone(f"j{n}", 1000.0 + n))
    kept = stones.all(1000.0 + MAX_TOMBSTONES + 5)
    assert len(kept) == MAX_TOMBSTONES
    assert kept[0].id == "j5"
    later = stones.all(1000.0 + 500 + TOMBSTONE_AGE + 0.5)
    assert later[0].id == "j501"


def test_a_second_drop_replaces_the_first_and_take_restores_once() -> None:
    stones = Tombstones()
    stones.add(tombstone("a", 1.0))
    stones.add(tombstone("b", 2.0))
    stones.add(tombstone("a", 3.0))
    assert [t.id for t in stones.all(3.0)] == ["b", "a"]
    assert stones.take("a") is not None
    assert stones.take("a") is None
    stones.discard("b")
    assert len(stones) == 0


def test_damaged_saved_entries_are_skipped_not_fatal() -> None:
    stones = Tombstones()
    good = tombstone("a", 10.0).to_json()
    stones.load([good, {"id": 1}, "x", {**good, "id": "b", "dropped_at": True}], now=11.0)
    assert [t.id for t in stones.all(11.0)] == ["a"]
    saved = parse_outcomes(
        {"a": [5.0, 0, None], "b": ["x", 0, None], "c": [None, -1, None], "d": [1.0, 2, 3]}
    )
    assert list(saved) == ["a"]
    assert parse_outcomes(["not", "a", "dict"]) == {}


def test_outcomes_keep_only_jobs_with_something_to_remember() -> None:
    rows = [("a", 5.0, 0, None), ("new", None, 0, None), ("b", None, 2, "http_503: x")]
    assert outcomes_json(rows) == {"a": [5.0, 0, None], "b": [None, 2, "http_503: x"]}


def test_a_late_answer_from_a_host_no_longer_configured_is_not_recorded() -> None:
    identity = ClusterIdentity(remembered="uuid-a")
    identity.forget(["http://b"])
    identity.mismatched("http://b", "uuid-b")
    identity.forget(["http://a"])  # a reload back to A
    # A request of the retired client, still reading B, finishes now:
    assert identity.mismatched("http://b", "uuid-b") is False
    assert identity.mismatches == {}


def test_a_saved_tombstone_with_an_invalid_id_is_skipped() -> None:
    # The state file is where a tombstone's id enters: checked there, restored trusted.
    saved = tombstone("a", 1.0).to_json()
    assert Tombstone.from_json(saved) == tombstone("a", 1.0)
    assert Tombstone.from_json({**saved, "id": "bad\x00id"}) is None
    assert Tombstone.from_json({**saved, "id": ""}) is None
