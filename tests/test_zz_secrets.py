"""Runs last (by file name): no secret a test used appears in any line logged or printed
during the whole session, in this process or in a daemon subprocess."""

from __future__ import annotations

from heartbeat import logs
from tests.conftest import CAPTURED
from tests.helpers_daemon import OUTPUT

#: Secrets handed to subprocesses or servers only (in-process ones are collected from
#: heartbeat.logs, where every Heartbeat registers the secrets of its configuration).
KNOWN = {
    "ZW5jb2RlZDprZXk=",
    "pa55word",
    "tok-123",
    "good-key-1",
    "rotated-key-2",
    "very-secret-key",
    "from-env-key",
    "file-key-123",
    "sekret-daemon-key",
    "S3CRET-MARK",  # tests/test_hostile_config.py
    "good-api-key-123",
    "private-key-123",
    "credential-key-123",
}


def test_no_secret_reached_any_log_line() -> None:
    secrets = {s for s in logs._secrets | KNOWN if len(s) >= 4}
    leaks = [
        (where, secret)
        for where, text in [*CAPTURED, *(("daemon subprocess", line) for line in OUTPUT)]
        for secret in secrets
        if secret in text
    ]
    assert leaks == []
