"""Job ids: what is refused, and that any accepted id stays one path segment."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heartbeat.client import checkin_path
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import checked_segment, encode_segment, validate_job_id
from tests.strategies import job_ids


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        ("x" * 513, "513 bytes"),
        ("é" * 257, "514 bytes"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("a\x7fb", "control character"),
        ("a\x85b", "control character"),
        ("a\ud800b", "surrogate"),
        (42, "must be a string"),
    ],
)
def test_refused_ids(bad: object, why: str) -> None:
    with pytest.raises(InvalidJobId, match=why):
        validate_job_id(bad)


def test_longest_id_is_accepted() -> None:
    assert validate_job_id("x" * 512) == "x" * 512


@given(st.one_of(job_ids, st.text(max_size=600), st.sampled_from(["", ".", "..", "x" * 513])))
def test_the_checked_segment_is_the_segment_of_a_valid_id_and_refuses_the_rest(
    job_id: str,
) -> None:
    # The check-in path's encoding: no separate validation, the same verdict.
    try:
        validate_job_id(job_id)
    except InvalidJobId as exc:
        with pytest.raises(InvalidJobId, match=re.escape(str(exc))):
            checked_segment(job_id)
    else:
        assert checked_segment(job_id) == encode_segment(job_id)


@pytest.mark.parametrize(
    ("job_id", "segment"),
    [
        ("my-job", "my-job"),
        ("a/b?c#d é", "a%2Fb%3Fc%23d%20%C3%A9"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("...", "..."),
        ("../../_security/user", "..%2F..%2F_security%2Fuser"),
        ("100%", "100%25"),
        ("a,b*c", "a,b*c"),
    ],
)
def test_encoding_matches_the_official_client(job_id: str, segment: str) -> None:
    assert encode_segment(job_id) == segment


@given(job_ids)
def test_any_id_is_exactly_one_segment_of_the_check_in_path(job_id: str) -> None:
    path = checkin_path(validate_job_id(job_id))
    parts = path.split("/")
    assert parts[:3] == ["", "_connector", "_sync_job"]
    assert parts[4:] == ["_check_in"]
    assert len(parts) == 5
    segment = parts[3]
    assert segment not in {".", ".."}
    assert all(c not in segment for c in "?#/ ")
    assert unquote(segment) == job_id


def test_every_character_is_encoded_as_the_official_client_does() -> None:
    # encode_segment skips urllib for ids it would leave alone; this holds the shortcut
    # to urllib's answer (the official client's), character by character.
    for codepoint in range(0x10000):
        char = chr(codepoint)
        if 0xD800 <= codepoint <= 0xDFFF:
            continue  # lone surrogates are refused before encoding
        expected = "%2E" if char == "." else quote(char, safe=",*")
        assert encode_segment(char) == expected, hex(codepoint)
        assert encode_segment(f"job-{char}") == "job-" + quote(char, safe=",*")
