"""Secrets kept in files: the ``*_file`` keys, read once at load time.

Owns reading ``elasticsearch.api_key_file``, ``password_file``, ``bearer_token_file``,
``queue.password_file`` and ``control.token_file`` (``$VARIABLES`` and ``~`` expanded,
surrounding whitespace stripped; empty, control characters, non-regular files and
files over 64 KiB refused) into the matching ``SecretStr``, and
picking up systemd's ``LoadCredential=api_key:...`` (``$CREDENTIALS_DIRECTORY/api_key``)
when no Elasticsearch credentials are configured. Each function returns a new, still
frozen :class:`~heartbeat.config.Config`, or raises ConfigError naming the ``*_file`` key.

It does not validate what a secret holds (heartbeat.config.checks), decide the order of
loading (heartbeat.config.loading), or hide secrets in output (heartbeat.config.redact).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from pydantic import SecretStr

from heartbeat.config.fields import secret_problem
from heartbeat.config.model import Config
from heartbeat.errors import ConfigError

#: A secret file larger than this is not a secret (``/dev/zero``, a log file).
MAX_SECRET = 64 * 1024
#: The systemd credential heartbeat picks up (``LoadCredential=api_key:...``).
CREDENTIAL = "api_key"


def _read_regular(path: Path) -> str:
    """The text of a regular file of at most MAX_SECRET bytes; OSError or ValueError."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError("is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file")
        raw = handle.read(MAX_SECRET + 1)
    if len(raw) > MAX_SECRET:
        raise ValueError(f"is larger than {MAX_SECRET // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None


#: ``$NAME`` or ``${NAME}`` in a ``*_file`` path.
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def read_secret_file(path: Path, key: str, source: str, *, in_header: bool = True) -> str:
    unset = [a or b for a, b in _VARIABLE.findall(str(path)) if (a or b) not in os.environ]
    if unset:
        # Left as is by expandvars, it would read as "no such file": say why instead.
        hint = " (systemd sets it with LoadCredential=)" if "CREDENTIALS_DIRECTORY" in unset else ""
        raise ConfigError(f"{path}: ${unset[0]} is not set{hint}", key=key, source=source)
    expanded = Path(os.path.expandvars(str(path))).expanduser()
    try:
        value = _read_regular(expanded).strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {expanded}: {exc.strerror or exc}", key=key, source=source
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{expanded} {exc}", key=key, source=source) from None
    problem = secret_problem(value, in_header=in_header)
    if problem is not None:
        # Never the value: only what is wrong with it.
        raise ConfigError(f"{expanded} {problem}", key=key, source=source)
    return value


#: ``(section, file key, value key)``: each ``*_file`` key and the secret it fills in.
SECRET_FILES = (
    ("elasticsearch", "api_key_file", "api_key"),
    ("elasticsearch", "password_file", "password"),
    ("elasticsearch", "bearer_token_file", "bearer_token"),
    ("queue", "password_file", "password"),
    ("control", "token_file", "token"),
)


def section_on(config: Config, section: str) -> bool:
    """Whether the secrets of ``section`` are used (a section that is off is not read)."""
    if section == "queue":
        return config.queue.url is not None
    return True


def _systemd_credential(config: Config) -> Config:
    """systemd's ``LoadCredential=api_key:...`` when no Elasticsearch auth is configured."""
    es = config.elasticsearch
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    no_auth = not (
        es.api_key or es.api_key_file or es.username or es.bearer_token or es.bearer_token_file
    )
    if not (no_auth and directory):
        return config
    credential = Path(directory) / CREDENTIAL
    key = f"systemd credential {CREDENTIAL}"
    where = f"$CREDENTIALS_DIRECTORY/{CREDENTIAL} ({credential})"
    try:
        value = _read_regular(credential).strip()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return config  # no such credential: no authentication
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}", key=key) from None
    except ValueError as exc:
        raise ConfigError(f"{where} {exc}", key=key) from None
    problem = secret_problem(value, in_header=True)
    if problem is not None:
        raise ConfigError(f"{where} {problem}", key=key)
    return config.model_copy(
        update={"elasticsearch": es.model_copy(update={"api_key": SecretStr(value)})}
    )


def resolve_secret_files(config: Config, source: str) -> Config:
    """Read every configured ``*_file`` key into its secret, in :data:`SECRET_FILES` order
    (those of a section that is off are not read)."""
    config = _systemd_credential(config)
    for section, file_key, value_key in SECRET_FILES:
        settings = getattr(config, section)
        path = getattr(settings, file_key)
        if path is None or not section_on(config, section):
            continue
        in_header = value_key != "password"  # a password is base64-encoded or sent to Redis
        value = read_secret_file(path, f"{section}.{file_key}", source, in_header=in_header)
        secret = SecretStr(value)
        config = config.model_copy(
            update={section: settings.model_copy(update={value_key: secret})}
        )
    return config
