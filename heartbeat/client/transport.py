"""The session and one attempt on one host: the one place that converts ``aiohttp``.

Owns the process's single ``aiohttp.ClientSession`` (its connection pool, timeouts,
TLS policy and default headers: auth, ``Accept``, ``User-Agent``) and
:meth:`Transport.attempt`: one request to one host, read in full, as a
:class:`~heartbeat.client.responses.Response`, or every ``aiohttp`` and socket failure
mapped onto a :class:`~heartbeat.outcomes.Retryable` with whether it means the host
is dead. Which host, and what a response means, is :mod:`heartbeat.client`'s business.
"""

from __future__ import annotations

import base64
import platform
import ssl
from collections.abc import Sequence

import aiohttp
from yarl import URL

from heartbeat._version import __version__
from heartbeat.client.responses import Response
from heartbeat.config import ElasticsearchSettings
from heartbeat.config.tls import build_context
from heartbeat.outcomes import Retryable

ACCEPT = "application/vnd.elasticsearch+json; compatible-with=8"
USER_AGENT = (
    f"heartbeat/{__version__} (Python/{platform.python_version()}; aiohttp/{aiohttp.__version__})"
)
#: Responses larger than this are not read in full: we only need the error type.
MAX_BODY = 64 * 1024


def auth_header(settings: ElasticsearchSettings) -> str | None:
    """The ``Authorization`` header value for the configured credentials, if any."""
    if settings.api_key is not None:
        return f"ApiKey {settings.api_key.get_secret_value()}"
    if settings.username is not None and settings.password is not None:
        raw = f"{settings.username}:{settings.password.get_secret_value()}".encode()
        return f"Basic {base64.b64encode(raw).decode('ascii')}"
    if settings.bearer_token is not None:
        return f"Bearer {settings.bearer_token.get_secret_value()}"
    return None


def ssl_for(settings: ElasticsearchSettings) -> ssl.SSLContext | aiohttp.Fingerprint:
    """The TLS policy: verify by default, TLS 1.2 minimum, optional CA, client cert, pin.

    Raises ConfigError naming the key when a file it names cannot be used."""
    if settings.ssl_assert_fingerprint:
        # Pinning replaces chain verification, as in the official client.
        return aiohttp.Fingerprint(bytes.fromhex(settings.ssl_assert_fingerprint))
    return build_context(settings)


class Transport:
    """One session for every configured host; ``attempt`` sends to the host at ``index``."""

    def __init__(
        self,
        settings: ElasticsearchSettings,
        urls: Sequence[URL],
        names: Sequence[str],
        max_in_flight: int,
    ) -> None:
        self._settings = settings
        self._urls = list(urls)
        self._bases = [str(url).rstrip("/") for url in urls]
        self._names = list(names)  # what messages name: never credentials
        self._max_in_flight = max_in_flight
        self._session: aiohttp.ClientSession | None = None
        self.timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout,
            connect=min(settings.request_timeout, 10.0),
        )

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def open(self) -> None:
        if self._session is not None:
            return
        needs_tls = any(url.scheme == "https" for url in self._urls)
        connector = aiohttp.TCPConnector(
            # Our scheduler is the fair (FIFO) limit; the pool must never queue.
            limit=self._max_in_flight + 4,
            limit_per_host=0,
            ssl=ssl_for(self._settings) if needs_tls else False,
            ttl_dns_cache=60,
            keepalive_timeout=30,
        )
        headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
        auth = auth_header(self._settings)
        if auth is not None:
            headers["Authorization"] = auth
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=self.timeout,
            auto_decompress=True,
            raise_for_status=False,
            skip_auto_headers=("Content-Type",),
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def attempt(
        self,
        index: int,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        max_body: int,
    ) -> tuple[Response | Retryable, bool]:
        """One attempt on one host: the response, or the failure and whether it means
        the host is dead (cannot connect, timed out, lost the connection)."""
        assert self._session is not None
        # encoded=True: yarl must not re-normalise the path (".." or "%2F" in an id).
        url = URL(self._bases[index] + path, encoded=True)
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as response:
                raw = await response.content.read(max_body)
                found = response.headers
                return Response(
                    response.status,
                    found.get("X-Elastic-Product") == "Elasticsearch",
                    raw,
                    found.get("Retry-After"),
                ), False
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = f"TLS certificate verification failed: {exc.certificate_error}"
            return Retryable("tls", reason), False
        except aiohttp.ClientConnectorSSLError as exc:
            return Retryable("tls", f"TLS error: {exc.os_error}"), False
        except aiohttp.ServerFingerprintMismatch:
            reason = "server certificate does not match ssl_assert_fingerprint"
            return Retryable("tls", reason), False
        except aiohttp.ClientConnectorError as exc:
            reason = f"cannot connect to {self._names[index]}: {exc.os_error}"
            return Retryable("connection", reason), True
        except TimeoutError:
            reason = f"no answer within {self._settings.request_timeout:g} s"
            return Retryable("timeout", reason), True
        except aiohttp.ClientSSLError as exc:
            return Retryable("tls", f"TLS error: {exc}"), False
        except aiohttp.ClientPayloadError as exc:
            return Retryable("malformed", f"broken response body: {exc}"), False
        except aiohttp.ClientResponseError as exc:
            return Retryable("malformed", f"invalid HTTP response: {exc.message}"), False
        except aiohttp.ClientError as exc:
            return Retryable("connection", f"{type(exc).__name__}: {exc}".rstrip(": ")), True
        except (OSError, ValueError) as exc:
            return Retryable("connection", f"{type(exc).__name__}: {exc}"), False
