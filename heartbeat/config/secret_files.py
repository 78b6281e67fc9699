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
from typing import Any

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


def resolve_secret_files(config: Config, source: str) -> Config:
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
            secret = read_secret_file(path, f"elasticsearch.{file_key}", source)
            updates[value_key] = SecretStr(secret)
    if not updates:
        return config
    return config.model_copy(update={"elasticsearch": es.model_copy(update=updates)})


def resolve_queue_password(config: Config, source: str) -> Config:
    queue = config.queue
    if queue.password_file is None:
        return config
    secret = read_secret_file(queue.password_file, "queue.password_file", source)
    return config.model_copy(
        update={"queue": queue.model_copy(update={"password": SecretStr(secret)})}
    )


def resolve_control_token(config: Config, source: str) -> Config:
    control = config.control
    if control.token_file is None:
        return config
    secret = read_secret_file(control.token_file, "control.token_file", source)
    return config.model_copy(
        update={"control": control.model_copy(update={"token": SecretStr(secret)})}
    )
