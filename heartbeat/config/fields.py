"""Shared field types, and the pure parsers behind them.

Owns the base of every section's model (:class:`Section`), the annotated types that
more than one section uses (:data:`PositiveFloat`,
:data:`FilePath`, :data:`ListenAddress`, :data:`Secret`, :data:`HeaderSecret`) and the
string parsers that the rest of the daemon also calls at run time: ``host:port``
(:func:`parse_listen`, :func:`is_loopback`), ``k/N`` shards (:func:`parse_shard`), the
password inside a Redis URL (:func:`url_password`), Elastic Cloud IDs
(:func:`decode_cloud_id`), a base URL (:func:`base_url_problem`) and what makes a
secret's value unusable (:func:`secret_problem`).

Each parser is a pure function of its argument that raises ``ValueError`` with a short
problem: it does not read files or the environment, does not know which section or key
it serves, and does not word the operator's error line (heartbeat.config.loading does).
Redacting a URL for output lives in heartbeat.config.redact.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import partial
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr


class Section(BaseModel):
    """The model of one ``[section]``: unknown keys refused, frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: A finite number above 0 (``inf`` and ``nan`` are refused).
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _no_nul(path: Path) -> Path:
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL byte")
    return path


def _not_empty(value: object) -> object:
    # Path("") is ".", the working directory: never what an empty value meant.
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty; leave the key out to leave it unset")
    return value


#: A filesystem path; refused early when the OS could never open it.
FilePath = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_no_nul)]


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


def secret_problem(value: str, *, in_header: bool) -> str | None:
    """What is wrong with a secret's value, never quoting it; None when it is usable.

    ``in_header``: sent as is in an HTTP header (an API key, a bearer token), so it must
    be ASCII as well."""
    if not value:
        return "is empty"
    if any(not char.isprintable() and char != " " for char in value):
        return "holds a control character (a line break?); it would break every request"
    if in_header and not value.isascii():
        return "holds a non-ASCII character, which an HTTP header cannot carry"
    return None


def _usable(value: SecretStr, *, in_header: bool) -> SecretStr:
    problem = secret_problem(value.get_secret_value(), in_header=in_header)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A secret: not empty, no control character (the message never quotes it).
Secret = Annotated[SecretStr, AfterValidator(partial(_usable, in_header=False))]
#: A secret sent as is in an HTTP header: ASCII as well.
HeaderSecret = Annotated[SecretStr, AfterValidator(partial(_usable, in_header=True))]


def base_url_problem(url: str) -> str | None:
    """What keeps ``url`` from being an ``http(s)://`` base URL; None when it is one."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "is not a valid URL (check the host and port)"
    if not parts.hostname:
        return "has no host name"
    return None


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
    url = f"https://{parts[1]}.{host}:{port}"
    if any(not char.isprintable() or char.isspace() for char in url) or base_url_problem(url):
        raise ValueError("cloud_id does not decode to a valid host name and port")
    return url
