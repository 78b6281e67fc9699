"""The ``[section]`` tables but ``[elasticsearch]``: one frozen pydantic model each.

Owns each section's keys, types, defaults and the checks that need only that section
(one way to authenticate to Redis, a shard parses, a socket path fits ``sun_path``).
Some defaults read the process environment when a model is built:
``$STATE_DIRECTORY`` (``state.dir``), ``$RUNTIME_DIRECTORY`` (``control.socket``) and
the host name (``queue.group``, ``queue.consumer``, ``discovery.worker_hostname``).

It does not own ``[elasticsearch]`` (heartbeat.config.elasticsearch), the root
:class:`~heartbeat.config.Config` or its environment overrides
(heartbeat.config.model), reading ``*_file`` secrets (heartbeat.config.loading), checks
that span sections or need a resolved secret (heartbeat.config.checks), or redaction
(heartbeat.config.redact). Key names are a public contract: add keys, never rename them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from heartbeat.config.fields import (
    FilePath,
    HeaderSecret,
    ListenAddress,
    PositiveFloat,
    Secret,
    Section,
    parse_listen,
    parse_shard,
    url_password,
)
from heartbeat.errors import InvalidJobId
from heartbeat.jobid import validate_job_id

__all__ = [
    "MAX_SOCKET_PATH",
    "BackoffSettings",
    "ControlSettings",
    "DiscoverySettings",
    "JobsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "QueueSettings",
    "ScheduleSettings",
    "StateSettings",
    "WorkerSettings",
]

#: Linux's sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


def _ttl(value: float) -> float:
    if 0 < value < 1:
        raise ValueError("must be 0 (claims never expire) or at least 1 second")
    return value


#: ``default_ttl``: seconds a claim lasts unless renewed; 0: claims never expire.
DefaultTTL = Annotated[float, Field(ge=0, allow_inf_nan=False), AfterValidator(_ttl)]


class ScheduleSettings(Section):
    interval: PositiveFloat = 60.0
    jitter: float = Field(default=0.1, ge=0, lt=1, allow_inf_nan=False)
    idle_after: PositiveFloat = 300.0
    max_in_flight: int = Field(default=32, ge=1, le=4096)
    shutdown_timeout: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    #: New jobs per second when a batch arrives at once (start-up, a big file).
    ramp_rate: PositiveFloat = 1000.0
    #: Seconds in which every watched job's status is read once (finished jobs are
    #: dropped); 0 turns it off. See heartbeat.finished.
    status_check_interval: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    #: Seconds a job is still checked in after heartbeat first sees it ``canceling``;
    #: then it is dropped (``reason="finished"``, ``job_status="canceling"``).
    canceling_grace: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    #: Seconds between a job's first genuine 404 and the check-in that confirms it;
    #: only a second genuine 404 drops the job.
    drop_confirm_after: float = Field(default=10.0, ge=0, allow_inf_nan=False)


class BackoffSettings(Section):
    initial: PositiveFloat = 1.0
    multiplier: float = Field(default=2.0, ge=1, allow_inf_nan=False)
    max: PositiveFloat = 60.0


class JobsSettings(Section):
    ids: list[str] = Field(default_factory=list)
    #: A file of ids, one per line (heartbeat.sources.file), re-read when it changes.
    file: FilePath | None = None

    @field_validator("ids")
    @classmethod
    def _valid_ids(cls, ids: list[str]) -> list[str]:
        for index, job_id in enumerate(ids):
            try:
                validate_job_id(job_id)
            except InvalidJobId as exc:
                raise ValueError(f"entry {index}: {exc}") from None
        return list(dict.fromkeys(ids))


class StateSettings(Section):
    #: Where the watch list is saved; default ``$STATE_DIRECTORY`` (set by systemd's
    #: StateDirectory=), else nowhere (the watch list then lives in memory only).
    dir: FilePath | None = Field(
        default_factory=lambda: (
            Path(os.environ["STATE_DIRECTORY"].split(":")[0])
            if os.environ.get("STATE_DIRECTORY")
            else None
        )
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        # "": no state file even under systemd (an empty path would be the cwd).
        return None if isinstance(value, str) and not value.strip() else value


class QueueSettings(Section):
    """``[queue]``: a Redis stream of watch/unwatch entries (heartbeat.sources.queue)."""

    #: ``redis://``, ``rediss://`` or ``unix://``; unset: no queue. Never logged as is.
    url: str | None = None
    password: Secret | None = None
    password_file: FilePath | None = None
    stream: str = Field(default="heartbeat:jobs", min_length=1)
    #: One consumer group per daemon (or replica set): each group sees every entry.
    group: str = Field(default_factory=socket.gethostname, min_length=1)
    #: Stable across restarts, so a restarted daemon re-reads its unacknowledged entries.
    consumer: str = Field(default_factory=socket.gethostname, min_length=1)
    #: ``"k/N"``: keep only ids with ``zlib.crc32(id.encode("utf-8")) % N == k``.
    shard: str | None = None
    #: Seconds a watch entry without ``ttl`` lasts unless renewed (heartbeat.leases).
    default_ttl: DefaultTTL = 0.0

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            urlsplit(url).port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            raise ValueError("is not a valid URL (check the host and port)") from None
        # Imported here: redis is only loaded when a queue is configured.
        from redis.connection import parse_url

        try:
            # What the queue source will do with it at start: refused now, not there.
            parse_url(url)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            password = url_password(url)
            problem = str(exc) if password is None or password not in str(exc) else ""
            raise ValueError(f"is not a valid Redis URL: {problem or 'cannot be parsed'}") from None
        return url

    @field_validator("shard")
    @classmethod
    def _shard(cls, shard: str | None) -> str | None:
        if shard is None:
            return None
        index, count = parse_shard(shard)
        return f"{index}/{count}"

    @model_validator(mode="after")
    def _one_password(self) -> QueueSettings:
        if self.password and self.password_file:
            raise ValueError("set password or password_file, not both")
        in_url = self.url is not None and url_password(self.url) is not None
        if in_url and (self.password or self.password_file):
            raise ValueError("set the password in url or in password/password_file, not both")
        return self


class DiscoverySettings(Section):
    """``[discovery]``: watch the running jobs of these connectors claimed by this host."""

    connector_ids: list[str] = Field(default_factory=list)
    #: The ``worker_hostname`` a connector on this host claims its jobs with.
    worker_hostname: str = Field(default_factory=socket.gethostname, min_length=1)
    interval: PositiveFloat = 30.0

    @field_validator("connector_ids")
    @classmethod
    def _connector_ids(cls, ids: list[str]) -> list[str]:
        for index, connector_id in enumerate(ids):
            if not connector_id.strip():
                raise ValueError(f"entry {index}: connector id is empty")
        return list(dict.fromkeys(ids))


class WorkerSettings(Section):
    """``[worker]``: how heartbeat knows the connector worker beside it is alive
    (heartbeat.worker). Neither probe set: no probing, check-ins as without it."""

    #: A file holding the worker's decimal pid: alive while that process exists and is
    #: not a zombie; its start time is the incarnation. Missing or empty: down.
    pid_file: FilePath | None = None
    #: ``http(s)://`` URL: alive while GET answers 2xx within ``probe_timeout``; a JSON
    #: body with ``started_at`` (ISO 8601) names the incarnation.
    health_url: str | None = None
    probe_interval: PositiveFloat = 5.0
    probe_timeout: PositiveFloat = 2.0
    #: Probes failing in a row before the worker counts as down.
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    #: Seconds a job's ``started_at`` (Elasticsearch's clock) may precede the
    #: incarnation's start (this host's clock) and still belong to it.
    clock_skew: float = Field(default=10.0, ge=0)

    @field_validator("pid_file", "health_url", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pid_file")
    @classmethod
    def _not_a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and value.is_dir():
            raise ValueError(f"{value} is a directory; give the file holding the pid")
        return value

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        url = url.strip()
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            raise ValueError("is not a valid URL (check the host and port)") from None
        if not parts.hostname:
            raise ValueError("has no host")
        if "@" in parts.netloc:
            raise ValueError("must not carry credentials (user:password@)")
        return url

    @property
    def enabled(self) -> bool:
        return self.pid_file is not None or self.health_url is not None


class LoggingSettings(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsSettings(Section):
    #: ``host:port`` for /metrics, /livez and /readyz (``[::1]:9310`` for IPv6);
    #: None or "" (the default): no listener.
    listen: ListenAddress = None
    #: Allow a non-loopback ``listen`` address (the endpoints have no authentication).
    allow_remote: bool = False

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind, or None when metrics are off."""
        return None if self.listen is None else parse_listen(self.listen)


def _default_control_socket() -> Path | None:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) / "control.sock" if runtime else None


class ControlSettings(Section):
    """``[control]``: the local HTTP API that watches and unwatches ids (heartbeat.control)."""

    #: Unix socket, mode 0600; default ``$RUNTIME_DIRECTORY/control.sock`` (systemd's
    #: RuntimeDirectory=), else none. "" turns it off.
    socket: FilePath | None = Field(default_factory=_default_control_socket)
    #: ``host:port`` for the same API over TCP (``[::1]:9311`` for IPv6); needs a token.
    listen: ListenAddress = None
    #: Bearer token required on ``listen``: at least 16 printable ASCII characters.
    token: HeaderSecret | None = None
    token_file: FilePath | None = None
    #: Allow a non-loopback ``listen`` address.
    allow_remote: bool = False
    #: Seconds a claim without ``ttl`` lasts unless renewed (heartbeat.leases).
    default_ttl: DefaultTTL = 0.0

    @field_validator("socket", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("socket")
    @classmethod
    def _fits_sun_path(cls, value: Path | None) -> Path | None:
        size = 0 if value is None else len(os.fsencode(value))
        if size > MAX_SOCKET_PATH:
            raise ValueError(f"is {size} bytes; a Unix socket path has at most {MAX_SOCKET_PATH}")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> ControlSettings:
        if self.token and self.token_file:
            raise ValueError("set token or token_file, not both")
        return self

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind, or None when the API is not served over TCP."""
        return None if self.listen is None else parse_listen(self.listen)
