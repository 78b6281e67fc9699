"""What counts as a secret, and keeping it out of output.

Owns :data:`SECRET_KEYS` and :data:`SECRET_BEARING_KEYS` (values never echoed in an
error message or in ``heartbeat validate``), :func:`redact_url` (the only form of a
queue URL that may be logged), :func:`redacted` (the effective configuration for
``heartbeat validate``, secrets as ``"***"``), and the start-up warning's two tests:
:func:`holds_secret` (the parsed file has a secret in it) and :func:`world_readable`.

It does not own log-line scrubbing (heartbeat.logs), reading secrets
(heartbeat.config.secret_files), or wording error messages (heartbeat.config.loading,
which consults the key sets here).
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from heartbeat.config.fields import url_password
from heartbeat.config.model import Config

#: Keys whose values are never echoed in an error message or in ``validate``.
SECRET_KEYS = frozenset({"api_key", "password", "bearer_token", "token"})
#: Keys whose values may hold a secret inside them (``queue.url``, ``worker.health_url``):
#: never echoed either.
SECRET_BEARING_KEYS = frozenset({"url", "health_url"})
REDACTED = "***"


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
    # The hosts heartbeat will use: with cloud_id, the decoded one, not the default.
    data["elasticsearch"]["hosts"] = config.elasticsearch.urls()
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
