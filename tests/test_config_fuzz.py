"""Hostile configuration values: any TOML-shaped input is a Config or a ConfigError
that names a key, never a crash or a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat import config as configuration
from heartbeat.errors import ConfigError

SECTIONS = {
    name: list(field.annotation.model_fields)  # type: ignore[union-attr]
    for name, field in configuration.Config.model_fields.items()
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "http://x", "../../etc/passwd", "a\x00b"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=4)):
        keys = [*SECTIONS.get(section, ["whatever"]), "unknown_key"]
        document[section] = draw(st.dictionaries(st.sampled_from(keys), values, max_size=4))
    if draw(st.booleans()):
        document["stray"] = draw(values)
    return document


@settings(max_examples=300, deadline=None)
@given(documents())
def test_any_document_is_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    try:
        config = configuration.build(document, source="fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml")
        assert "\n" not in message
        assert "Traceback" not in message
    else:
        assert config.schedule.interval * (1 + config.schedule.jitter) < config.schedule.idle_after


@pytest.mark.parametrize("key", ["ca_certs", "api_key_file", "client_cert"])
def test_paths_with_nul_bytes_are_config_errors(key: str) -> None:
    with pytest.raises(ConfigError, match=f"elasticsearch.{key}"):
        configuration.build({"elasticsearch": {key: "a\x00b"}}, source="x.toml")
