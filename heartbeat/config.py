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
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
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
SECRET_KEYS = frozenset({"api_key", "password", "bearer_token"})

PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElasticsearchSettings(_Section):
    hosts: list[str] = Field(default_factory=lambda: ["https://localhost:9200"], min_length=1)
    cloud_id: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    ssl_assert_fingerprint: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
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


class BackoffSettings(_Section):
    initial: PositiveFloat = 1.0
    multiplier: float = Field(default=2.0, ge=1)
    max: PositiveFloat = 60.0


class JobsSettings(_Section):
    ids: list[str] = Field(default_factory=list)

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
    dir: Path | None = Field(
        default_factory=lambda: (
            Path(os.environ["STATE_DIRECTORY"].split(":")[0])
            if os.environ.get("STATE_DIRECTORY")
            else None
        )
    )


class LoggingSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


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
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

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
    if leaf in SECRET_KEYS or ("ctx" not in error and error["type"].startswith("model")):
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
    _cross_checks(config, source)
    return config


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration file at ``path`` (see :func:`config_path`)."""
    resolved = config_path(path, os.environ)
    return build(read_file(resolved), source=str(resolved))


def holds_secret(data: Mapping[str, Any]) -> bool:
    es = data.get("elasticsearch")
    return isinstance(es, Mapping) and any(es.get(key) for key in SECRET_KEYS)


def world_readable(path: Path) -> bool:
    """True when users other than the owner and group can read ``path``."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by ``"***"``."""
    data = config.model_dump(mode="json")
    es = data["elasticsearch"]
    for key in SECRET_KEYS:
        if es.get(key) is not None:
            es[key] = "***"
    return data
