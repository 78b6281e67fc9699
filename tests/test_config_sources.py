"""Configuration of the queue and discovery sources and of status checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartbeat import config as configuration
from heartbeat.errors import ConfigError
from tests.support import write_config


def load(tmp_path: Path, text: str) -> configuration.Config:
    return configuration.load(write_config(tmp_path / "heartbeat.toml", text))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("shard", "problem"),
    [
        ("2/2", "queue.shard: '2/2': must be 'k/N' with N >= 1 and 0 <= k < N"),
        ("0/0", "queue.shard: '0/0': must be 'k/N' with N >= 1"),
        ("1", "queue.shard: '1': must be 'k/N' with whole numbers"),
        ("-1/2", "queue.shard: '-1/2': must be 'k/N' with whole numbers"),
        ("a/b", "queue.shard: 'a/b': must be 'k/N'"),
    ],
)
def test_a_bad_shard_is_named(tmp_path: Path, shard: str, problem: str) -> None:
    assert problem in error_of(tmp_path, f'[queue]\nshard = "{shard}"\n')


def test_queue_settings_are_read_and_the_shard_normalised(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[queue]\nurl = "redis://127.0.0.1:6390/2"\nstream = "s"\ngroup = "g"\n'
        'consumer = "c"\nshard = " 1 / 3"\n',
    )
    queue = config.queue
    assert (queue.url, queue.stream, queue.group, queue.consumer) == (
        "redis://127.0.0.1:6390/2",
        "s",
        "g",
        "c",
    )
    assert queue.shard == "1/3"
    assert config.schedule.status_check_interval == 300


def test_a_url_is_never_echoed_in_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[queue]\nurl = "http://:hunter2pw@redis:6379"\n')
    assert message.endswith("queue.url: must start with redis://, rediss:// or unix://")
    assert "hunter2pw" not in message
    message = error_of(tmp_path, '[queue]\nurl = "redis://:hunter2pw@redis:port"\n')
    assert "queue.url: is not a valid URL" in message and "hunter2pw" not in message


def test_one_password_only(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file-pw\n")
    both = f'[queue]\nurl = "redis://h"\npassword = "x-pw"\npassword_file = "{secret}"\n'
    assert "queue: set password or password_file, not both" in error_of(tmp_path, both)
    in_url = f'[queue]\nurl = "redis://:u-pw@h"\npassword_file = "{secret}"\n'
    assert "set the password in url or in password/password_file" in error_of(tmp_path, in_url)
    config = load(tmp_path, f'[queue]\nurl = "redis://h"\npassword_file = "{secret}"\n')
    assert config.queue.password is not None
    assert config.queue.password.get_secret_value() == "from-file-pw"
    missing = f'[queue]\nurl = "redis://h"\npassword_file = "{tmp_path / "nope"}"\n'
    assert "queue.password_file: cannot read" in error_of(tmp_path, missing)


def test_passwords_are_redacted_and_make_the_file_sensitive(tmp_path: Path) -> None:
    text = '[queue]\nurl = "redis://user:url-pw-1@redis:6379/0"\n'
    config = load(tmp_path, text)
    shown = configuration.redacted(config)["queue"]
    assert shown["url"] == "redis://user:***@redis:6379/0"
    assert configuration.holds_secret({"queue": {"url": "redis://user:url-pw-1@redis:6379/0"}})
    assert configuration.holds_secret({"queue": {"password": "x"}})
    assert not configuration.holds_secret({"queue": {"url": "redis://redis:6379/0"}})
    other = load(tmp_path, '[queue]\nurl = "redis://h"\npassword = "plain-pw-2"\n')
    assert configuration.redacted(other)["queue"]["password"] == "***"
    assert "plain-pw-2" not in repr(other)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:p@h:1/0", "redis://:***@h:1/0"),
        ("rediss://u:p%40q@h/0", "rediss://u:***@h/0"),
        ("unix:///run/redis.sock?db=1&password=p", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert configuration.redact_url(url) == shown


def test_environment_overrides_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTBEAT_QUEUE__URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("HEARTBEAT_DISCOVERY__CONNECTOR_IDS", '["c1"]')
    config = load(tmp_path, "")
    assert config.queue.url == "redis://10.0.0.1:6379/0"
    assert config.discovery.connector_ids == ["c1"]


def test_status_check_interval_may_be_zero_not_negative(tmp_path: Path) -> None:
    config = load(tmp_path, "[schedule]\nstatus_check_interval = 0\n")
    assert config.schedule.status_check_interval == 0
    message = error_of(tmp_path, "[schedule]\nstatus_check_interval = -1\n")
    assert "schedule.status_check_interval: -1" in message
