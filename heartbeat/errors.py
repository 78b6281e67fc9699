"""The exceptions heartbeat raises, in one small tree.

    HeartbeatError
    ├── ConfigError          a configuration that cannot be used (exit status 78)
    └── InvalidJobId         a job id refused before any request (also a ValueError)

Check-ins do not raise: the client turns every server answer and every transport
failure into a value from :mod:`heartbeat.outcomes`, so no exception reaches the
scheduler. Only :mod:`heartbeat.client` converts ``aiohttp`` exceptions.
"""

from __future__ import annotations


class HeartbeatError(Exception):
    """Base class of every error heartbeat raises on purpose."""


class ConfigError(HeartbeatError):
    """A configuration that cannot be used.

    ``key`` is the dotted config key (``schedule.interval``) when one is to blame,
    ``source`` the file (or environment) it came from.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.message = message
        self.key = key
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"


class InvalidJobId(HeartbeatError, ValueError):
    """A job id that cannot be sent to Elasticsearch as one path segment."""
