"""Logging: structlog's production chain, JSON lines or a console renderer.

Owns the processor chain and the last line of defence for secrets: every string
value of every event is scrubbed of the secrets registered with
:func:`register_secret` (the configured API key, password, tokens), so a secret that
slipped into an error message from a library still never reaches a log line.
It does not decide *what* is logged: modules log events with fields, as
``log.warning("job_dropped", job_id=..., reason=...)``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

_secrets: set[str] = set()
REDACTED = "***"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_debug = True  # until configure() says otherwise (tests, embedding without configure)


def debug_enabled() -> bool:
    """Whether debug events are kept: lets hot paths skip building them at all."""
    return _debug


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in a log line (short values are ignored)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    scrubbed: str = _scrub_value(text)
    return scrubbed


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(item) for item in value)
    if isinstance(value, dict):
        return {key: _scrub_value(item) for key, item in value.items()}
    return value


def scrub_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace registered secrets in every field."""
    if _secrets:
        for key, value in event_dict.items():
            event_dict[key] = _scrub_value(value)
    return event_dict


def configure(
    *,
    format: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process.

    ``auto`` means console output when ``stream`` is a TTY, JSON lines otherwise.
    """
    global _debug
    _debug = LEVELS.get(level, logging.INFO) <= logging.DEBUG
    out = stream if stream is not None else sys.stdout
    use_json = format == "json" or (format == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_secrets,
        _order_fields if use_json else _identity,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Not cached: SIGHUP may change the level, and cached loggers would keep the old one.
        cache_logger_on_first_use=False,
    )


def _identity(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict


def _order_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """JSON lines start with ``event``, ``level``, ``timestamp``, then the fields."""
    ordered: dict[str, Any] = {}
    for key in ("event", "level", "timestamp"):
        if key in event_dict:
            ordered[key] = event_dict.pop(key)
    ordered.update(event_dict)
    return ordered
