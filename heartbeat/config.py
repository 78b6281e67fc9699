"""Settings: the TOML file, environment overrides, validation, secrets.

Owns turning ``--config PATH`` (default ``$HEARTBEAT_CONFIG``, else
``/etc/heartbeat/heartbeat.toml``) plus ``HEARTBEAT_<SECTION>__<KEY>`` environment
variables into one validated, immutable :class:`Config`, or a :class:`ConfigError`
that names the file, the key and the problem. Section and key names are a public
contract: add keys, never rename them.

Secrets (API key, password, bearer token) are ``SecretStr``: they print as
``'**********'`` in reprs and in ``heartbeat validate``. ``*_file`` keys are read here,
once, with ``$VARIABLES`` expanded, so ``api_key_file =
"${CREDENTIALS_DIRECTORY}/api_key"`` works with systemd's ``LoadCredential=``.
It does not open network connections or touch the watch list.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import socket
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from heartbeat.errors import ConfigError, InvalidJobId
from heartbeat.jobid import validate_job_id

DEFAULT_PATH = Path("/etc/heartbeat/heartbeat.toml")
ENV_PREFIX = "HEARTBEAT_"
ENV_PATH = "HEARTBEAT_CONFIG"

#: Keys whose values are never echoed in an error message or in ``validate``.
SECRET_KEYS = frozenset({"api_key", "password", "bearer_token", "token"})
#: Keys whose values may hold a secret inside them (``queue.url``): never echoed either.
SECRET_BEARING_KEYS = frozenset({"url"})
REDACTED = "***"

PositiveFloat = Annotated[float, Field(gt=0)]


def _no_nul(path: Path) -> Path:
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL byte")
    return path


#: A filesystem path; refused early when the OS could never open it.
FilePath = Annotated[Path, AfterValidator(_no_nul)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElasticsearchSettings(_Section):
    hosts: list[str] = Field(default_factory=lambda: ["https://localhost:9200"], min_length=1)
    cloud_id: str | None = None
    api_key: SecretStr | None = None
    api_key_file: FilePath | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: FilePath | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: FilePath | None = None
    ca_certs: FilePath | None = None
    verify_certs: bool = True
    ssl_assert_fingerprint: str | None = None
    client_cert: FilePath | None = None
    client_key: FilePath | None = None
    request_timeout: PositiveFloat = 10.0

    @field_validator("hosts")
    @classmethod
    def _hosts_are_urls(cls, hosts: list[str]) -> list[str]:
        cleaned = []
        for host in hosts:
            if not host.startswith(("http://", "https://")):
                raise ValueError(f"{host!r} must start with http:// or https://")
            cleaned.append(host.rstrip("/"))
        return cleaned

    @field_validator("ssl_assert_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if not value:
            return None
        digits = value.replace(":", "").strip().lower()
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raise ValueError("must be hexadecimal (colons allowed)") from None
        if len(raw) != 32:
            raise ValueError(f"must be a SHA-256 fingerprint (32 bytes), got {len(raw)} bytes")
        return digits

    @model_validator(mode="after")
    def _one_way_in(self) -> ElasticsearchSettings:
        if self.cloud_id and "hosts" in self.model_fields_set:
            raise ValueError("set either hosts or cloud_id, not both")
        forms = [
            name
            for name, present in (
                ("api_key", self.api_key or self.api_key_file),
                ("username/password", self.username or self.password or self.password_file),
                ("bearer_token", self.bearer_token or self.bearer_token_file),
            )
            if present
        ]
        if len(forms) > 1:
            raise ValueError(f"set exactly one way to authenticate, not {' and '.join(forms)}")
        if self.api_key and self.api_key_file:
            raise ValueError("set api_key or api_key_file, not both")
        if self.password and self.password_file:
            raise ValueError("set password or password_file, not both")
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("set bearer_token or bearer_token_file, not both")
        if (self.password or self.password_file) and not self.username:
            raise ValueError("password needs username")
        if self.username and not (self.password or self.password_file):
            raise ValueError("username needs password or password_file")
        if self.client_key and not self.client_cert:
            raise ValueError("client_key needs client_cert")
        return self

    def urls(self) -> list[str]:
        """The base URLs to try, in order (``cloud_id`` decoded when set)."""
        if self.cloud_id:
            return [decode_cloud_id(self.cloud_id)]
        return list(self.hosts)


class ScheduleSettings(_Section):
    interval: PositiveFloat = 60.0
    jitter: float = Field(default=0.1, ge=0, lt=1)
    idle_after: PositiveFloat = 300.0
    max_in_flight: int = Field(default=32, ge=1, le=4096)
    shutdown_timeout: float = Field(default=10.0, ge=0)
    #: New jobs per second when a batch arrives at once (start-up, a big file).
    ramp_rate: PositiveFloat = 1000.0
    #: Seconds in which every watched job's status is read once (finished jobs are
    #: dropped); 0 turns it off. See heartbeat.finished.
    status_check_interval: float = Field(default=300.0, ge=0)


class BackoffSettings(_Section):
    initial: PositiveFloat = 1.0
    multiplier: float = Field(default=2.0, ge=1)
    max: PositiveFloat = 60.0


class JobsSettings(_Section):
    ids: list[str] = Field(default_factory=list)
    #: A file of ids, one per line (heartbeat.sources.file), re-read when it changes.
    file: Path | None = None

    @field_validator("ids")
    @classmethod
    def _valid_ids(cls, ids: list[str]) -> list[str]:
        for index, job_id in enumerate(ids):
            try:
                validate_job_id(job_id)
            except InvalidJobId as exc:
                raise ValueError(f"entry {index}: {exc}") from None
        return list(dict.fromkeys(ids))


class StateSettings(_Section):
    #: Where the watch list is saved; default ``$STATE_DIRECTORY`` (set by systemd's
    #: StateDirectory=), else nowhere (the watch list then lives in memory only).
    dir: FilePath | None = Field(
        default_factory=lambda: (
            Path(os.environ["STATE_DIRECTORY"].split(":")[0])
            if os.environ.get("STATE_DIRECTORY")
            else None
        )
    )


def parse_shard(text: str) -> tuple[int, int]:
    """``"k/N"`` -> ``(k, N)`` with ``0 <= k < N``; ValueError otherwise."""
    k, slash, n = text.partition("/")
    if not slash or not k.strip().isdigit() or not n.strip().isdigit():
        raise ValueError("must be 'k/N' with whole numbers, e.g. '0/2'")
    index, count = int(k), int(n)
    if count < 1 or index >= count:
        raise ValueError("must be 'k/N' with N >= 1 and 0 <= k < N")
    return index, count


def url_password(url: str) -> str | None:
    """The password a Redis URL carries (``user:pass@`` or ``?password=``), if any."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for name, value in parse_qsl(parts.query):
        if name == "password" and value:
            return value
    return None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: the form that may be logged."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if has_password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    query = "&".join(
        f"password={REDACTED}" if item.partition("=")[0] == "password" else item
        for item in parts.query.split("&")
    )
    redacted = f"{parts.scheme}://{netloc}{parts.path}"
    return redacted + (f"?{query}" if parts.query else "")


class QueueSettings(_Section):
    """``[queue]``: a Redis stream of watch/unwatch entries (heartbeat.sources.queue)."""

    #: ``redis://``, ``rediss://`` or ``unix://``; unset: no queue. Never logged as is.
    url: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    stream: str = Field(default="heartbeat:jobs", min_length=1)
    #: One consumer group per daemon (or replica set): each group sees every entry.
    group: str = Field(default_factory=socket.gethostname, min_length=1)
    #: Stable across restarts, so a restarted daemon re-reads its unacknowledged entries.
    consumer: str = Field(default_factory=socket.gethostname, min_length=1)
    #: ``"k/N"``: keep only ids with ``zlib.crc32(id.encode("utf-8")) % N == k``.
    shard: str | None = None

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


class DiscoverySettings(_Section):
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


class LoggingSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


def _clean_listen(value: object) -> object:
    """``listen`` values: "" means off; anything else must parse as ``host:port``."""
    if isinstance(value, str):
        if not value.strip():
            return None
        parse_listen(value.strip())
        return value.strip()
    return value


#: ``host:port`` to listen on, or None (off).
ListenAddress = Annotated[str | None, BeforeValidator(_clean_listen)]


class MetricsSettings(_Section):
    #: ``host:port`` for /metrics, /livez and /readyz (``[::1]:9310`` for IPv6);
    #: None or "" (the default): no listener.
    listen: ListenAddress = None
    #: Allow a non-loopback ``listen`` address (the endpoints have no authentication).
    allow_remote: bool = False

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind, or None when metrics are off."""
        return None if self.listen is None else parse_listen(self.listen)


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9310"`` -> ``("127.0.0.1", 9310)``; ``"[::1]:0"`` -> ``("::1", 0)``."""
    host, colon, port = value.rpartition(":")
    if not colon or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9310")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets, e.g. [::1]:9310")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_control_socket() -> Path | None:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) / "control.sock" if runtime else None


#: Linux's sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107
MIN_TOKEN_LENGTH = 16


class ControlSettings(_Section):
    """``[control]``: the local HTTP API that watches and unwatches ids (heartbeat.control)."""

    #: Unix socket, mode 0600; default ``$RUNTIME_DIRECTORY/control.sock`` (systemd's
    #: RuntimeDirectory=), else none. "" turns it off.
    socket: Path | None = Field(default_factory=_default_control_socket)
    #: ``host:port`` for the same API over TCP (``[::1]:9311`` for IPv6); needs a token.
    listen: ListenAddress = None
    #: Bearer token required on ``listen``: at least 16 printable ASCII characters.
    token: SecretStr | None = None
    token_file: Path | None = None
    #: Allow a non-loopback ``listen`` address.
    allow_remote: bool = False

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


def _resolve_control_token(config: Config, source: str) -> Config:
    control = config.control
    if control.token_file is None:
        return config
    secret = _read_secret_file(control.token_file, "control.token_file", source)
    return config.model_copy(
        update={"control": control.model_copy(update={"token": SecretStr(secret)})}
    )


def usable_token(token: str) -> bool:
    """Long enough to guess at no better than chance, and sendable in an HTTP header."""
    printable = token.isascii() and token.isprintable() and " " not in token
    return printable and len(token) >= MIN_TOKEN_LENGTH


def _control_checks(config: Config, source: str) -> None:
    control = config.control
    token = control.token.get_secret_value() if control.token is not None else None
    if token is not None and not usable_token(token):
        raise ConfigError(
            f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters, no spaces",
            key="control.token_file" if control.token_file else "control.token",
            source=source,
        )
    address = control.address()
    if address is None:
        return
    if token is None:
        raise ConfigError(
            f"{control.listen!r}: the API over TCP needs control.token or control.token_file",
            key="control.listen",
            source=source,
        )
    if not control.allow_remote and not is_loopback(address[0]):
        raise ConfigError(
            f"{control.listen!r} is not a loopback address; set control.allow_remote = true "
            "to serve the control API on it",
            key="control.listen",
            source=source,
        )


class Config(BaseSettings):
    """The whole configuration. Build it with :func:`load`, or directly in code."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed in as init kwargs).
        return (env_settings, init_settings)


def decode_cloud_id(cloud_id: str) -> str:
    """``name:base64(host[:port]$es_uuid[$kibana_uuid])`` -> ``https://es_uuid.host:port``."""
    _, _, encoded = cloud_id.rpartition(":")
    try:
        decoded = base64.b64decode(encoded.encode("ascii"), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError("cloud_id is not valid base64") from None
    parts = decoded.split("$")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError("cloud_id does not decode to host$es_uuid")
    host, _, port = parts[0].partition(":")
    port = port or "443"
    if not port.isdigit():
        raise ValueError("cloud_id has a non-numeric port")
    return f"https://{parts[1]}.{host}:{port}"


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    key = _key(loc)
    leaf = str(loc[-1]) if loc else ""
    if error["type"] == "extra_forbidden":
        return key, "unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = leaf in SECRET_KEYS | SECRET_BEARING_KEYS
    if secret or ("ctx" not in error and error["type"].startswith("model")):
        return key, message
    value = error.get("input")
    if isinstance(value, (int, float, str, bool)) and leaf not in SECRET_KEYS and loc:
        shown = repr(value) if isinstance(value, str) else str(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return key, f"{shown}: {message}"
    return key, message


def _read_secret_file(path: Path, key: str, source: str) -> str:
    expanded = Path(os.path.expandvars(str(path))).expanduser()
    try:
        value = expanded.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {expanded}: {exc.strerror or exc}", key=key, source=source
        ) from None
    if not value:
        raise ConfigError(f"{expanded} is empty", key=key, source=source)
    return value


def _resolve_secret_files(config: Config, source: str) -> Config:
    es = config.elasticsearch
    updates: dict[str, Any] = {}
    credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / "api_key"
    no_auth = not (
        es.api_key or es.api_key_file or es.username or es.bearer_token or es.bearer_token_file
    )
    if no_auth and credential.is_file():
        # systemd's LoadCredential=api_key:... with no auth configured: use it.
        es = es.model_copy(update={"api_key_file": credential})
        updates["api_key_file"] = credential
    for file_key, value_key in (
        ("api_key_file", "api_key"),
        ("password_file", "password"),
        ("bearer_token_file", "bearer_token"),
    ):
        path = getattr(es, file_key)
        if path is not None:
            secret = _read_secret_file(path, f"elasticsearch.{file_key}", source)
            updates[value_key] = SecretStr(secret)
    if not updates:
        return config
    return config.model_copy(update={"elasticsearch": es.model_copy(update=updates)})


def _resolve_queue_password(config: Config, source: str) -> Config:
    queue = config.queue
    if queue.password_file is None:
        return config
    secret = _read_secret_file(queue.password_file, "queue.password_file", source)
    return config.model_copy(
        update={"queue": queue.model_copy(update={"password": SecretStr(secret)})}
    )


def _cross_checks(config: Config, source: str) -> None:
    s = config.schedule
    if s.interval >= s.idle_after:
        raise ConfigError(
            f"{s.interval:g} must be less than schedule.idle_after ({s.idle_after:g})",
            key="schedule.interval",
            source=source,
        )
    if s.interval * (1 + s.jitter) >= s.idle_after:
        raise ConfigError(
            f"{s.interval:g} with jitter {s.jitter:g} can reach "
            f"{s.interval * (1 + s.jitter):g}, which must be less than "
            f"schedule.idle_after ({s.idle_after:g})",
            key="schedule.interval",
            source=source,
        )
    if config.discovery.interval >= s.idle_after:
        # A job claimed just after a listing must be found before it goes idle.
        raise ConfigError(
            f"{config.discovery.interval:g} must be less than schedule.idle_after "
            f"({s.idle_after:g})",
            key="discovery.interval",
            source=source,
        )
    b = config.backoff
    if b.max < b.initial:
        raise ConfigError(
            f"{b.max:g} must not be less than backoff.initial ({b.initial:g})",
            key="backoff.max",
            source=source,
        )
    es = config.elasticsearch
    if es.cloud_id:
        try:
            decode_cloud_id(es.cloud_id)
        except ValueError as exc:
            raise ConfigError(str(exc), key="elasticsearch.cloud_id", source=source) from None
    for key in ("ca_certs", "client_cert", "client_key"):
        path = getattr(es, key)
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{path} does not exist", key=f"elasticsearch.{key}", source=source)
    metrics = config.metrics.address()
    if metrics is not None and not config.metrics.allow_remote and not is_loopback(metrics[0]):
        raise ConfigError(
            f"{config.metrics.listen!r} is not a loopback address, and /metrics, /livez and "
            "/readyz have no authentication; set metrics.allow_remote = true to listen on it",
            key="metrics.listen",
            source=source,
        )


def _env_source(key: str, environ: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    if len(parts) < 2:
        return None
    name = f"{ENV_PREFIX}{parts[0]}__{parts[1]}".upper()
    return name if name in environ else None


def config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """``--config``, else ``$HEARTBEAT_CONFIG``, else the default path."""
    if explicit:
        return Path(explicit)
    if environ.get(ENV_PATH):
        return Path(environ[ENV_PATH])
    return DEFAULT_PATH


def read_file(path: Path) -> dict[str, Any]:
    """Parse the TOML file, or raise ConfigError naming the file and the problem."""
    source = str(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("no such file", source=source) from None
    except PermissionError:
        raise ConfigError("permission denied", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", source=source) from None
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None


def build(data: Mapping[str, Any], *, source: str) -> Config:
    """Validate ``data`` (the parsed file) with ``HEARTBEAT_*`` environment overrides."""
    try:
        config = Config(**data)
    except ValidationError as exc:
        key, message = _first_error(exc)
        env_name = _env_source(key, os.environ)
        where = f"{source} (environment {env_name})" if env_name else source
        raise ConfigError(message, key=key or None, source=where) from None
    config = _resolve_secret_files(config, source)
    config = _resolve_queue_password(config, source)
    config = _resolve_control_token(config, source)
    _cross_checks(config, source)
    _control_checks(config, source)
    return config


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration file at ``path`` (see :func:`config_path`)."""
    resolved = config_path(path, os.environ)
    return build(read_file(resolved), source=str(resolved))


def holds_secret(data: Mapping[str, Any]) -> bool:
    es = data.get("elasticsearch")
    if isinstance(es, Mapping) and any(es.get(key) for key in SECRET_KEYS):
        return True
    control = data.get("control")
    if isinstance(control, Mapping) and control.get("token"):
        return True
    queue = data.get("queue")
    if not isinstance(queue, Mapping):
        return False
    url = queue.get("url")
    try:
        in_url = isinstance(url, str) and url_password(url) is not None
    except ValueError:
        in_url = False
    return bool(queue.get("password")) or in_url


def world_readable(path: Path) -> bool:
    """True when users other than the owner and group can read ``path``."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by ``"***"``."""
    data = config.model_dump(mode="json")
    if data["control"].get("token") is not None:
        data["control"]["token"] = REDACTED
    es = data["elasticsearch"]
    for key in SECRET_KEYS:
        if es.get(key) is not None:
            es[key] = "***"
    queue = data["queue"]
    if queue.get("password") is not None:
        queue["password"] = REDACTED
    if config.queue.url is not None:
        queue["url"] = redact_url(config.queue.url)
    return data
