"""Secrets kept in files: the ``*_file`` keys, read once at load time.

Owns reading ``elasticsearch.api_key_file``, ``password_file``, ``bearer_token_file``,
``queue.password_file`` and ``control.token_file`` (``$VARIABLES`` and ``~`` expanded,
surrounding whitespace stripped, empty refused) into the matching ``SecretStr``, and
picking up systemd's ``LoadCredential=api_key:...`` (``$CREDENTIALS_DIRECTORY/api_key``)
when no Elasticsearch credentials are configured. Each function returns a new, still
frozen :class:`~heartbeat.config.Config`, or raises ConfigError naming the ``*_file`` key.

It does not validate what a secret holds (heartbeat.config.checks), decide the order of
loading (heartbeat.config.loading), or hide secrets in output (heartbeat.config.redact).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from heartbeat.config.model import Config
from heartbeat.errors import ConfigError


def read_secret_file(path: Path, key: str, source: str) -> str:
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


#: ``(section, file key, value key)``: each ``*_file`` key and the secret it fills in.
SECRET_FILES = (
    ("elasticsearch", "api_key_file", "api_key"),
    ("elasticsearch", "password_file", "password"),
    ("elasticsearch", "bearer_token_file", "bearer_token"),
    ("queue", "password_file", "password"),
    ("control", "token_file", "token"),
)


def _systemd_credential(config: Config) -> Config:
    """systemd's ``LoadCredential=api_key:...`` when no Elasticsearch auth is configured."""
    es = config.elasticsearch
    credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / "api_key"
    no_auth = not (
        es.api_key or es.api_key_file or es.username or es.bearer_token or es.bearer_token_file
    )
    if not (no_auth and credential.is_file()):
        return config
    return config.model_copy(
        update={"elasticsearch": es.model_copy(update={"api_key_file": credential})}
    )


def resolve_secret_files(config: Config, source: str) -> Config:
    """Read every configured ``*_file`` key into its secret, in :data:`SECRET_FILES` order."""
    config = _systemd_credential(config)
    for section, file_key, value_key in SECRET_FILES:
        settings = getattr(config, section)
        path = getattr(settings, file_key)
        if path is None:
            continue
        secret = SecretStr(read_secret_file(path, f"{section}.{file_key}", source))
        config = config.model_copy(
            update={section: settings.model_copy(update={value_key: secret})}
        )
    return config
