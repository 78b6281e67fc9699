"""Log output: JSON lines, the console renderer, and secrets scrubbed from every line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from heartbeat import logs


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logs._debug = True


def test_json_when_not_a_tty() -> None:
    out = io.StringIO()
    logs.configure(format="auto", level="info", stream=out)
    structlog.get_logger("heartbeat").warning("job_dropped", job_id="a", reason="not_found")
    structlog.get_logger("heartbeat").debug("checkin_succeeded", job_id="a")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert list(record)[:3] == ["event", "level", "timestamp"]
    assert record["event"] == "job_dropped"
    assert record["level"] == "warning"
    assert record["timestamp"].endswith("Z")
    assert (record["job_id"], record["reason"]) == ("a", "not_found")


def test_console_on_a_tty() -> None:
    out = FakeTTY()
    logs.configure(format="auto", level="debug", stream=out)
    structlog.get_logger("heartbeat").info("daemon_started", jobs=3)
    text = out.getvalue()
    assert "daemon_started" in text
    assert "jobs" in text
    assert not text.lstrip().startswith("{")


def test_registered_secrets_never_reach_a_line() -> None:
    out = io.StringIO()
    logs.configure(format="json", level="info", stream=out)
    logs.register_secret("s3cr3t-api-key")
    structlog.get_logger("heartbeat").error(
        "checkin_failed",
        error="401 for ApiKey s3cr3t-api-key",
        nested={"headers": ["Authorization: ApiKey s3cr3t-api-key"]},
    )
    text = out.getvalue()
    assert "s3cr3t-api-key" not in text
    assert text.count("***") == 2
