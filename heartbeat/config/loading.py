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
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from heartbeat.config.checks import control_checks, cross_checks
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=source) from None


def build(data: Mapping[str, Any], *, source: str) -> Config:
    """Validate ``data`` (the parsed file) with ``HEARTBEAT_*`` environment overrides."""
    try:
        config = Config(**data)
    except SettingsError as exc:
        # A HEARTBEAT_* variable pydantic-settings could not parse (a list that is not
        # JSON, say); its message names the section, never the value.
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


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration file at ``path`` (see :func:`config_path`)."""
    resolved = config_path(path, os.environ)
    return build(read_file(resolved), source=str(resolved))
