"""Hostile configuration values: any TOML-shaped input is a Config or a ConfigError
that names a key, never a crash or a traceback."""

from __future__ import annotations

from pathlib import Path
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


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("queue", "password_file"),
        ("control", "token_file"),
        ("jobs", "file"),
        ("control", "socket"),
    ],
)
def test_every_path_key_refuses_nul_bytes(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        configuration.build({section: {key: "a\x00b"}}, source="x.toml")


def test_an_unparseable_environment_list_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEARTBEAT_ELASTICSEARCH__HOSTS", "not json")
    with pytest.raises(ConfigError) as caught:
        configuration.build({}, source="x.toml")
    assert str(caught.value) == (
        "HEARTBEAT_ELASTICSEARCH__HOSTS: expected a JSON list, e.g. '[\"https://es1:9200\"]'"
    )


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "hb.toml"
    path.write_bytes(b"[schedule]\ninterval = 5 # \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        configuration.load(path)


def test_credentials_in_hosts_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        configuration.build(
            {"elasticsearch": {"hosts": ["https://elastic:hunter2@es:9200"]}}, source="x.toml"
        )
    assert "elasticsearch.hosts" in str(caught.value)
    assert "hunter2" not in str(caught.value)
