"""The warnings a valid configuration still deserves, for ``run`` and ``validate`` alike.

Owns which settings are legal but risky: a schedule with little room before the idle
rule (``schedule_tight``), a config file holding a secret that other users can read
(``config_file_exposed``), and TLS verification turned off (``tls_verification_off``).
``heartbeat run`` logs each as a warning at start; ``heartbeat validate`` prints them
on stderr and still exits 0.

It does not own refusing a configuration (heartbeat.config.checks) or logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heartbeat.config.loading import read_file
from heartbeat.config.model import Config
from heartbeat.config.redact import holds_secret, world_readable
from heartbeat.errors import ConfigError


@dataclass(frozen=True)
class StartupWarning:
    """One warning: the log event's name and its fields."""

    event: str
    fields: dict[str, str]

    def line(self) -> str:
        details = " ".join(f"{key}={value!r}" for key, value in self.fields.items())
        return f"{self.event}: {details}"


def startup_warnings(config: Config, path: Path | None) -> list[StartupWarning]:
    found = []
    if path is not None and _exposed(path):
        found.append(
            StartupWarning(
                "config_file_exposed",
                {
                    "path": str(path),
                    "problem": "holds a secret and is readable by other users; chmod 0600 or 0640",
                },
            )
        )
    s = config.schedule
    if s.interval * (1 + s.jitter) >= s.idle_after / 2:
        found.append(
            StartupWarning(
                "schedule_tight",
                {
                    "problem": "interval * (1 + jitter) is not below idle_after / 2: a single "
                    "failed check-in leaves little time before the idle rule, and jobs count "
                    "as at risk between check-ins"
                },
            )
        )
    es = config.elasticsearch
    if not es.verify_certs and not es.ssl_assert_fingerprint:
        found.append(
            StartupWarning(
                "tls_verification_off",
                {
                    "key": "elasticsearch.verify_certs",
                    "problem": "verify_certs = false: any server can pose as Elasticsearch "
                    "and read the credentials; set ca_certs or ssl_assert_fingerprint instead",
                },
            )
        )
    return found


def _exposed(path: Path) -> bool:
    try:
        data = read_file(path)
    except ConfigError:
        return False
    return holds_secret(data) and world_readable(path)
