"""Configuration: the file, the environment, the errors an operator sees."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from heartbeat import config as configuration
from heartbeat.errors import ConfigError
from tests.support import heartbeat_cli, write_config

EXAMPLE = Path(__file__).parent.parent / "config" / "heartbeat.toml"


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        configuration.load(write_config(tmp_path / "heartbeat.toml", text))
    return str(caught.value)


def test_the_example_config_is_valid_and_complete() -> None:
    config = configuration.load(EXAMPLE)
    assert config.schedule.interval == 60
    text = EXAMPLE.read_text()
    for section, model in configuration.Config.model_fields.items():
        assert f"[{section}]" in text
        annotation = model.annotation
        assert annotation is not None
        for key in annotation.model_fields:
            assert key in text, f"{section}.{key} is not documented in the example config"


def test_defaults_without_any_key(tmp_path: Path) -> None:
    config = configuration.load(write_config(tmp_path / "heartbeat.toml", ""))
    assert config.elasticsearch.hosts == ["https://localhost:9200"]
    assert config.elasticsearch.verify_certs is True
    assert (config.schedule.interval, config.schedule.idle_after) == (60, 300)


def test_interval_must_beat_idle_after(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[schedule]\ninterval = 400\n")
    assert message.endswith(
        "heartbeat.toml: schedule.interval: 400 must be less than schedule.idle_after (300)"
    )


def test_interval_plus_jitter_must_beat_idle_after(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[schedule]\ninterval = 290\njitter = 0.1\n")
    assert "schedule.interval: 290 with jitter 0.1 can reach 319" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[schedule]\nintervall = 4\n", "schedule.intervall: unknown key"),
        ("[schedul]\ninterval = 4\n", "schedul: unknown key"),
        (
            "[schedule]\ninterval = 'soon'\n",
            "schedule.interval: 'soon': expected a number, got a string",
        ),
        ("[schedule]\ninterval = -1\n", "schedule.interval: -1: Input should be greater than 0"),
        ("[schedule]\njitter = 1.5\n", "schedule.jitter: 1.5: Input should be less than 1"),
        ("[schedule]\nmax_in_flight = 0\n", "schedule.max_in_flight: 0"),
        ("[backoff]\ninitial = 10\nmax = 5\n", "backoff.max: 5 must not be less than"),
        ("[logging]\nformat = 'xml'\n", "logging.format: 'xml': Input should be"),
        ("[jobs]\nids = ['ok', '']\n", "jobs.ids: entry 1: job id is empty"),
        ('[jobs]\nids = ["a\\u0001b"]\n', "jobs.ids: entry 0: job id has a control character"),
        ("[elasticsearch]\nhosts = ['localhost:9200']\n", "elasticsearch.hosts: 'localhost:9200'"),
        (
            "[elasticsearch]\nssl_assert_fingerprint = 'abc'\n",
            "elasticsearch.ssl_assert_fingerprint",
        ),
        ("[elasticsearch]\ncloud_id = 'x:!!!'\n", "elasticsearch.cloud_id"),
        (
            "[elasticsearch]\nca_certs = '/nonexistent/ca.pem'\n",
            "elasticsearch.ca_certs: /nonexistent",
        ),
        ("not toml [", "invalid TOML"),
    ],
)
def test_errors_name_the_key_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert str(tmp_path / "heartbeat.toml") in message
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        configuration.load(tmp_path / "absent.toml")


def test_one_way_to_authenticate(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "[elasticsearch]\napi_key = 'k1234'\nusername = 'u'\npassword = 'p1234'\n"
    )
    assert "set exactly one way to authenticate" in message
    assert "k1234" not in message and "p1234" not in message


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[elasticsearch]\napi_key = 12345678\n")
    assert "elasticsearch.api_key" in message
    assert "12345678" not in message


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTBEAT_ELASTICSEARCH__API_KEY", "from-env-key")
    monkeypatch.setenv("HEARTBEAT_SCHEDULE__INTERVAL", "30")
    config = configuration.load(
        write_config(tmp_path / "heartbeat.toml", "[schedule]\ninterval = 45\njitter = 0.2\n")
    )
    assert config.schedule.interval == 30
    assert config.schedule.jitter == 0.2
    assert config.elasticsearch.api_key is not None
    assert config.elasticsearch.api_key.get_secret_value() == "from-env-key"


def test_environment_errors_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTBEAT_SCHEDULE__INTERVAL", "-3")
    message = error_of(tmp_path, "")
    assert "(environment HEARTBEAT_SCHEDULE__INTERVAL): schedule.interval: '-3'" in message


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "heartbeat.toml", "[schedule]\ninterval = 42\n")
    monkeypatch.setenv("HEARTBEAT_CONFIG", str(path))
    assert configuration.load().schedule.interval == 42


def test_secret_files_with_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "api_key").write_text("file-key-123\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = configuration.load(
        write_config(
            tmp_path / "heartbeat.toml",
            '[elasticsearch]\napi_key_file = "${CREDENTIALS_DIRECTORY}/api_key"\n',
        )
    )
    assert config.elasticsearch.api_key is not None
    assert config.elasticsearch.api_key.get_secret_value() == "file-key-123"


def test_unreadable_secret_file(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, f"[elasticsearch]\npassword_file = '{tmp_path}/nope'\nusername = 'u'\n"
    )
    assert "elasticsearch.password_file: cannot read" in message


def test_cloud_id_is_decoded_like_the_official_client() -> None:
    encoded = base64.b64encode(b"eu-west-1.aws.found.io:9243$es-uuid$kb-uuid").decode()
    assert configuration.decode_cloud_id(f"prod:{encoded}") == (
        "https://es-uuid.eu-west-1.aws.found.io:9243"
    )
    plain = base64.b64encode(b"us-east-1.aws.found.io$abc").decode()
    assert configuration.decode_cloud_id(f"x:{plain}") == "https://abc.us-east-1.aws.found.io:443"


def test_hosts_and_cloud_id_are_exclusive(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"h$u").decode()
    message = error_of(
        tmp_path, f"[elasticsearch]\nhosts = ['http://x:1']\ncloud_id = 'n:{encoded}'\n"
    )
    assert "either hosts or cloud_id" in message


async def test_validate_prints_the_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "heartbeat.toml", "[elasticsearch]\napi_key = 'very-secret-key'\n"
    )
    code, out, err = await heartbeat_cli("validate", "--config", str(path))
    assert code == 0, err
    assert "very-secret-key" not in out + err
    body = json.loads(out)
    assert body["elasticsearch"]["api_key"] == "***"
    assert body["schedule"]["interval"] == 60


async def test_config_error_exits_78_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "heartbeat.toml", "[schedule]\ninterval = 400\n")
    code, _, err = await heartbeat_cli("run", "--config", str(path))
    assert code == 78
    lines = err.strip().splitlines()
    assert lines == [
        f"heartbeat: configuration error: {path}: schedule.interval: 400 must be less than "
        "schedule.idle_after (300)"
    ]


async def test_validate_prints_only_json_on_stdout_and_the_run_warnings_on_stderr(
    tmp_path: Path,
) -> None:
    # Legal but risky: a tight schedule, TLS verification off, a secret others can read.
    path = write_config(
        tmp_path / "heartbeat.toml",
        "[elasticsearch]\napi_key = 'very-secret-key'\nverify_certs = false\n"
        "[schedule]\ninterval = 200\njitter = 0\n",
    )
    path.chmod(0o644)
    code, out, err = await heartbeat_cli("validate", "--config", str(path))
    assert code == 0, err
    assert json.loads(out)["schedule"]["interval"] == 200  # jq-able as is
    lines = err.splitlines()
    assert [line.split(": ", 3)[1:3] for line in lines[:3]] == [
        ["warning", "config_file_exposed"],
        ["warning", "schedule_tight"],
        ["warning", "tls_verification_off"],
    ]
    assert lines[3:] == [f"heartbeat: {path}: valid"]
    assert "very-secret-key" not in out + err


async def test_validate_shows_the_hosts_a_cloud_id_stands_for(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"eu-west-1.aws.found.io:9243$es-uuid$kb-uuid").decode()
    path = write_config(
        tmp_path / "heartbeat.toml", f"[elasticsearch]\ncloud_id = 'prod:{encoded}'\n"
    )
    code, out, err = await heartbeat_cli("validate", "--config", str(path))
    assert code == 0, err
    body = json.loads(out)
    assert body["elasticsearch"]["hosts"] == ["https://es-uuid.eu-west-1.aws.found.io:9243"]


def test_toml_types_are_kept_and_environment_strings_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for text, expected in [
        (
            "[schedule]\ninterval = true\n",
            "schedule.interval: true: expected a number, got a boolean",
        ),
        ("[schedule]\nmax_in_flight = true\n", "schedule.max_in_flight: true: expected a whole"),
        ("[schedule]\njitter = false\n", "schedule.jitter: false: expected a number"),
        (
            "[schedule]\ninterval = '30'\n",
            "schedule.interval: '30': expected a number, got a string",
        ),
        ("[elasticsearch]\nverify_certs = 'yes'\n", "verify_certs: 'yes': expected true or false"),
    ]:
        assert expected in error_of(tmp_path, text)
    assert (
        configuration.load(
            write_config(tmp_path / "heartbeat.toml", "[schedule]\ninterval = 30\n")
        ).schedule.interval
        == 30
    )
    monkeypatch.setenv("HEARTBEAT_SCHEDULE__INTERVAL", "45")
    monkeypatch.setenv("HEARTBEAT_ELASTICSEARCH__VERIFY_CERTS", "true")
    config = configuration.load(write_config(tmp_path / "heartbeat.toml", ""))
    assert (config.schedule.interval, config.elasticsearch.verify_certs) == (45, True)


def test_an_empty_file_is_all_defaults_at_start_and_refused_on_reload(tmp_path: Path) -> None:
    path = write_config(tmp_path / "heartbeat.toml", "# nothing yet\n[schedule]\n")
    assert configuration.load(path).schedule.interval == 60
    with pytest.raises(ConfigError, match="the file is empty"):
        configuration.load(path, reloading=True)
    path.write_text("[schedule]\ninterval = 30\n")
    assert configuration.load(path, reloading=True).schedule.interval == 30


def test_worker_probes_are_validated(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[worker]\nhealth_url = "ftp://127.0.0.1/healthz"\n')
    # Never echoed: a URL may carry a secret.
    assert message.endswith("worker.health_url: must start with http:// or https://")
    message = error_of(tmp_path, f"[worker]\npid_file = {json.dumps(str(tmp_path))}\n")
    assert "worker.pid_file" in message and "is a directory" in message
    message = error_of(tmp_path, "[worker]\nfailure_threshold = 0\n")
    assert "worker.failure_threshold" in message
    # A missing pid file is "down" at run time, not a configuration error.
    missing = tmp_path / "no-such.pid"
    config = configuration.load(
        write_config(
            tmp_path / "heartbeat.toml", f"[worker]\npid_file = {json.dumps(str(missing))}\n"
        )
    )
    assert config.worker.pid_file == missing and config.worker.enabled
    assert not configuration.load(write_config(tmp_path / "heartbeat.toml", "")).worker.enabled


def test_a_health_url_with_credentials_is_refused_unechoed(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[worker]\nhealth_url = "http://user:s3cr3t-pw@127.0.0.1/h"\n')
    assert "worker.health_url" in message and "credentials" in message
    assert "s3cr3t-pw" not in message


def test_drop_confirm_after_must_stay_well_below_idle_after(tmp_path: Path) -> None:
    path = tmp_path / "hb.toml"
    path.write_text("[schedule]\nidle_after = 300\ndrop_confirm_after = 150\n")
    with pytest.raises(ConfigError) as caught:
        configuration.load(path)
    assert caught.value.key == "schedule.drop_confirm_after"
    assert "half of schedule.idle_after" in str(caught.value)
    path.write_text("[schedule]\nidle_after = 300\ndrop_confirm_after = 149\n")
    assert configuration.load(path).schedule.drop_confirm_after == 149
