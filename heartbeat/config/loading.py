"""Loading: from ``--config PATH`` and the environment to a checked :class:`Config`.

Owns where the file is (:func:`config_path`: ``--config``, else ``$HEARTBEAT_CONFIG``,
else :data:`DEFAULT_PATH`), parsing it (:func:`read_file`), the order of the steps in
:func:`build` (validate with environment overrides, read ``*_file`` secrets, then the
cross-section checks), and turning a pydantic ``ValidationError`` into the one
ConfigError line that names the file (and the environment variable, when the value came
from one), the key and the problem, never echoing a secret value.

It does not own the keys and their rules (heartbeat.config.sections, .model, .checks),
how secret files are read (heartbeat.config.secret_files), or the exit code
(heartbeat.cli). It does not open network connections or touch the watch list.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from heartbeat.config.checks import control_checks, cross_checks
from heartbeat.config.inputs import check_environment, check_file_types
from heartbeat.config.model import ENV_PREFIX, Config
from heartbeat.config.redact import SECRET_BEARING_KEYS, SECRET_KEYS
from heartbeat.config.secret_files import (
    resolve_secret_files,
)
from heartbeat.errors import ConfigError

DEFAULT_PATH = Path("/etc/heartbeat/heartbeat.toml")
ENV_PATH = "HEARTBEAT_CONFIG"


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


#: A configuration file larger than this is not one (100,000 ids take about 4 MiB).
MAX_FILE = 64 * 1024 * 1024


def _read_bytes(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO must not hang validate, or the daemon's event loop on SIGHUP.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):  # /dev/null is all defaults
            raise ValueError("is not a regular file")
        raw = handle.read(MAX_FILE + 1)
    if len(raw) > MAX_FILE:
        raise ValueError(f"is larger than {MAX_FILE // 2**20} MiB")
    return raw


def read_file(path: Path) -> dict[str, Any]:
    """Parse the TOML file, or raise ConfigError naming the file and the problem."""
    source = str(path)
    try:
        return tomllib.loads(_read_bytes(path).decode("utf-8"))
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    except ValueError as exc:
        raise ConfigError(str(exc), source=source) from None


def _has_settings(data: Mapping[str, Any]) -> bool:
    """Whether the parsed file sets anything (tables with no keys set nothing)."""
    return any(not isinstance(value, Mapping) or _has_settings(value) for value in data.values())


def build(data: Mapping[str, Any], *, source: str) -> Config:
    """Validate ``data`` (the parsed file) with ``HEARTBEAT_*`` environment overrides."""
    check_environment(os.environ)
    check_file_types(data, source)
    try:
        config = Config(**data)
    except SettingsError as exc:
        # A HEARTBEAT_* variable pydantic-settings could not parse; its message names
        # the section, never the value. (Lists are checked first, by check_environment.)
        raise ConfigError(f"environment: {exc}", source=source) from None
    except ValidationError as exc:
        key, message = _first_error(exc)
        env_name = _env_source(key, os.environ)
        where = f"{source} (environment {env_name})" if env_name else source
        raise ConfigError(message, key=key or None, source=where) from None
    config = resolve_secret_files(config, source)
    cross_checks(config, source)
    control_checks(config, source)
    return config


def load(path: str | os.PathLike[str] | None = None, *, reloading: bool = False) -> Config:
    """Load and validate the configuration file at ``path`` (see :func:`config_path`).

    ``reloading``: a file that sets nothing is refused (at start it means all defaults;
    on SIGHUP it is most likely a file caught half-written)."""
    resolved = config_path(path, os.environ)
    data = read_file(resolved)
    if reloading and not _has_settings(data):
        raise ConfigError(
            "the file is empty (no settings): refused on reload, as a file caught "
            "half-written would drop the hosts, the credentials and the ids",
            source=str(resolved),
        )
    return build(data, source=str(resolved))
