"""The TLS context for Elasticsearch, built from ``[elasticsearch]`` and its files.

Owns turning ``ca_certs``, ``verify_certs``, ``client_cert`` and ``client_key`` into an
``ssl.SSLContext`` (verification on by default, TLS 1.2 minimum), and the one-line
ConfigError naming the key when a file is missing, not a file, unreadable or not PEM.
It is called while a configuration is validated (``heartbeat validate``, the start of
``run`` and ``check-in``, every SIGHUP) as well as by the client, so a file that
``validate`` accepts is one the daemon can use.

It does not own certificate pinning (``ssl_assert_fingerprint``: heartbeat.client hands
aiohttp a fingerprint instead of this context) or when TLS is used at all.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from heartbeat.config.elasticsearch import ElasticsearchSettings
from heartbeat.errors import ConfigError

#: What each file must hold, for the error line.
_HOLDS = {
    "ca_certs": "PEM CA certificates",
    "client_cert": "a PEM certificate",
    "client_key": "a PEM private key",
}
#: A PEM file larger than this is not a certificate bundle.
MAX_PEM = 16 * 1024 * 1024


def _pem_text(path: Path, key: str, *, directory_ok: bool = False) -> str | None:
    """The file's text (None for an allowed directory), or ConfigError naming ``key``."""
    name = f"elasticsearch.{key}"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}", key=name) from None
    if stat.S_ISDIR(mode):
        if directory_ok:
            return None
        raise ConfigError(f"{path} is a directory, not a file", key=name)
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path} is not a regular file", key=name)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PEM + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", key=name) from None
    if len(raw) > MAX_PEM:
        raise ConfigError(f"{path} is larger than {MAX_PEM // 2**20} MiB", key=name)
    text = raw.decode("ascii", errors="replace")
    if "-----BEGIN " not in text:
        raise ConfigError(f"{path} does not hold {_HOLDS[key]}", key=name)
    return text


def build_context(settings: ElasticsearchSettings) -> ssl.SSLContext:
    """The context for ``https://`` hosts; every file it names is read now."""
    context = ssl.create_default_context()
    if settings.ca_certs is not None:
        text = _pem_text(settings.ca_certs, "ca_certs", directory_ok=True)
        try:
            if text is None:
                context.load_verify_locations(capath=str(settings.ca_certs))
            else:
                context.load_verify_locations(cadata=text)
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"{settings.ca_certs} does not hold {_HOLDS['ca_certs']}",
                key="elasticsearch.ca_certs",
            ) from None
    if not settings.verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.client_cert is not None:
        cert_text = _pem_text(settings.client_cert, "client_cert")
        assert cert_text is not None
        if "CERTIFICATE-----" not in cert_text:
            raise ConfigError(
                f"{settings.client_cert} does not hold {_HOLDS['client_cert']}",
                key="elasticsearch.client_cert",
            )
        key_path = settings.client_key or settings.client_cert
        key = "client_key" if settings.client_key is not None else "client_cert"
        key_text = _pem_text(key_path, key) if settings.client_key is not None else cert_text
        assert key_text is not None
        if "PRIVATE KEY-----" not in key_text:
            hint = "" if settings.client_key is not None else "; set client_key"
            raise ConfigError(
                f"{key_path} does not hold {_HOLDS['client_key']}{hint}",
                key=f"elasticsearch.{key}",
            )
        try:
            context.load_cert_chain(
                str(settings.client_cert),
                str(settings.client_key) if settings.client_key is not None else None,
                password=lambda: b"",  # an encrypted key fails here, never prompts on a TTY
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or "cannot be used"
            raise ConfigError(
                f"{key_path}: {str(reason).lower().replace('_', ' ')} "
                "(an encrypted key, or a key that does not match client_cert?)",
                key=f"elasticsearch.{key}",
            ) from None
    return context
