"""Where a running daemon's control API is, and one request to it, for ``heartbeat jobs``.

Owns finding the daemon (``--socket PATH``, else ``--url URL``, else ``[control]
socket`` of the configuration file, else its ``[control] listen`` with ``token_file``,
else ``/run/heartbeat/control.sock``) and turning a request into ``(status, JSON)`` or
a :class:`Failure` that says what went wrong in one line. What the verbs ask and how
they print it is :mod:`heartbeat.cli.jobs`.

Only the ``[control]`` section of the configuration is read: the rest (the
Elasticsearch credentials above all) may be unreadable to the operator running this.
A token (for ``--url``) comes from ``--token-file`` or ``$HEARTBEAT_CONTROL_TOKEN``,
never from the command line, where other users could read it in the process list.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartbeat.errors import ConfigError

DEFAULT_SOCKET = Path("/run/heartbeat/control.sock")
TOKEN_ENV = "HEARTBEAT_CONTROL_TOKEN"  # noqa: S105 (a variable name)
SOCKET_ENV = "HEARTBEAT_CONTROL__SOCKET"
TIMEOUT = 60.0


class Failure(Exception):
    """A failure to report on stderr with exit status 2."""


@dataclass(frozen=True)
class Target:
    """Where the daemon's control API is: a Unix socket, or a base URL with a token."""

    socket: Path | None
    url: str | None
    token: str | None

    def describe(self) -> str:
        return f"the control socket {self.socket}" if self.socket else f"{self.url}"


def shown(text: str) -> str:
    """``text`` as typed when it is printable, else its repr (an id, a URL)."""
    return text if text.isprintable() else repr(text)


def resolve_target(args: argparse.Namespace) -> Target:
    token = _token(args.token_file)
    if args.url is not None:
        return Target(socket=None, url=_checked_url(str(args.url)), token=token)
    if args.socket is not None:
        if not args.socket:
            raise Failure("--socket: the path is empty")
        return Target(socket=Path(args.socket), url=None, token=token)
    return configured_target(args.config, token)


def _checked_url(url: str) -> str:
    """``--url`` as the base of every request, or Failure naming what is wrong with it
    (never echoing a password it holds)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        raise Failure(f"--url: not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Failure(f"--url {shown(url)} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise Failure("--url must not hold credentials: give the token with --token-file")
    if not parts.hostname:
        raise Failure(f"--url {shown(url)} has no host")
    if parts.query or parts.fragment:
        raise Failure(f"--url {shown(url)}: give the base URL only, no ? or #")
    return url.rstrip("/")


def _token(path: str | None) -> str | None:
    if path:
        return _read_token(path, "--token-file")
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _read_token(path: str | Path, what: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise Failure(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Failure(f"{what}: {path} is not UTF-8 text") from None
    if not token:
        raise Failure(f"{what}: {path} is empty")
    return token


def configured_target(explicit: str | None, token: str | None) -> Target:
    """Where the configuration file says the daemon listens: ``[control] socket``; else,
    when only ``[control] listen`` is set, that address, with ``token_file`` (or
    ``token``) unless a token was given; else the default socket path.

    A missing file is only an error when it was asked for (``--config`` or
    ``$HEARTBEAT_CONFIG``)."""
    from pydantic import ValidationError

    from heartbeat import config as configuration

    if os.environ.get(SOCKET_ENV):
        return Target(socket=Path(os.environ[SOCKET_ENV]), url=None, token=token)
    path = configuration.config_path(explicit, os.environ)
    asked = bool(explicit or os.environ.get(configuration.ENV_PATH))
    try:
        data = configuration.read_file(path)
    except ConfigError:
        if asked:
            raise
        return Target(socket=DEFAULT_SOCKET, url=None, token=token)
    section = data.get("control") or {}
    if not isinstance(section, dict):
        raise ConfigError("expected a table", key="control", source=str(path))
    try:
        control = configuration.ControlSettings.model_validate(section)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(["control", *(str(part) for part in error["loc"])])
        raise ConfigError(str(error["msg"]), key=key, source=str(path)) from None
    address = control.address()
    if control.socket is not None or address is None:
        return Target(socket=control.socket or DEFAULT_SOCKET, url=None, token=token)
    host, port = address
    if port == 0:
        raise Failure(
            f"{path}: control.listen has port 0 (any free port): give --url with the "
            "address the daemon logged in control_listening"
        )
    # A wildcard address is reached over loopback.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if token is None and control.token_file is not None:
        token = _read_token(control.token_file, f"{path}: control.token_file")
    elif token is None and control.token is not None:
        token = control.token.get_secret_value()
    return Target(socket=None, url=url, token=token)


class ControlClient:
    """Requests to the control API at one :class:`Target`, over one session."""

    def __init__(self, session: Any, target: Target) -> None:
        self.session = session
        self.target = target
        self.base = target.url or "http://localhost"

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON) of one request; Failure for anything but an answer."""
        import aiohttp
        from yarl import URL

        # encoded=True: yarl must not resolve a "%2E%2E" or "%2F" in an id.
        url = URL(self.base + path, encoded=True)
        try:
            async with self.session.request(method, url, json=body) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise Failure(_cannot_connect(self.target, exc.os_error)) from None
        except aiohttp.ClientError as exc:
            raise Failure(f"{self.target.describe()}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise Failure(f"{self.target.describe()}: no answer within {TIMEOUT:g} s") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise Failure(f"{self.target.describe()}: HTTP {status}, not a JSON answer") from None
        if status == 401:
            raise Failure(
                f"{self.target.describe()}: 401, missing or wrong token "
                f"(--token-file PATH or ${TOKEN_ENV})"
            )
        if status >= 400 and status != 404:
            error = payload.get("error") if isinstance(payload, dict) else None
            raise Failure(f"{self.target.describe()}: HTTP {status}: {error or payload}")
        return status, payload


@asynccontextmanager
async def connected(target: Target) -> AsyncIterator[ControlClient]:
    """A :class:`ControlClient` for ``target``, its session closed on the way out."""
    import aiohttp

    connector = aiohttp.UnixConnector(path=str(target.socket)) if target.socket else None
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        yield ControlClient(session, target)


def _cannot_connect(target: Target, error: OSError) -> str:
    reason = error.strerror or str(error)
    if target.socket is None:
        return f"cannot connect to {target.url}: {reason}"
    hint = {
        "ENOENT": "no such socket: is heartbeat running, with [control] socket set?",
        "ECONNREFUSED": "nothing is listening: is heartbeat running?",
        "EACCES": "permission denied: run this as the daemon's user or root",
    }
    import errno

    name = errno.errorcode.get(error.errno or 0, "")
    return f"cannot connect to the control socket {target.socket}: {hint.get(name, reason)}"
