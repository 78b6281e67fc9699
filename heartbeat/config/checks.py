"""Checks that span sections, or that need a secret read from its file first.

Owns the rules no single section can enforce alone: ``schedule.interval`` (with jitter),
``elasticsearch.request_timeout`` and ``discovery.interval`` below
``schedule.idle_after``, ``schedule.drop_confirm_after`` below half of it, the floors of
the two intervals, of
``schedule.status_check_interval`` and of ``schedule.ramp_rate``, ``backoff.max`` not below
``backoff.initial``, a decodable ``elasticsearch.cloud_id``, certificate files that
exist and parse (the TLS context is built here when one is named, as the client will
build it), loopback-only ``metrics.listen`` and ``control.listen`` unless ``allow_remote``, and a
usable control token. A section's rules apply only while it is on (``[discovery]`` with
``connector_ids``; ``[queue]``'s password file is read only with ``url``). They run on a built
:class:`~heartbeat.config.Config` and raise ConfigError naming the key.

It does not own per-key validation (heartbeat.config.sections), reading secrets
(heartbeat.config.secret_files), or the order checks run in (heartbeat.config.loading).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from heartbeat.config.fields import decode_cloud_id, is_loopback
from heartbeat.config.model import Config
from heartbeat.config.tls import build_context
from heartbeat.errors import ConfigError

MIN_TOKEN_LENGTH = 16
#: The ``[elasticsearch]`` keys that name a file the TLS context reads.
TLS_FILES = ("ca_certs", "client_cert", "client_key")


def usable_token(token: str) -> bool:
    """Long enough to guess at no better than chance, and sendable in an HTTP header."""
    printable = token.isascii() and token.isprintable() and " " not in token
    return printable and len(token) >= MIN_TOKEN_LENGTH


#: The shortest ``schedule.interval`` a file may set: below a second a check-in is a
#: request storm, not a heartbeat (the idle rule is 300 s).
MIN_INTERVAL = 1.0
#: The shortest ``discovery.interval``: each listing reads every page of the job list.
MIN_DISCOVERY_INTERVAL = 1.0
#: The shortest ``schedule.status_check_interval`` (other than 0, off): each round reads
#: every watched job once.
MIN_STATUS_CHECK_INTERVAL = 10.0
#: The slowest ``schedule.ramp_rate``: new jobs wait for their first check-in in line,
#: one every 1 / ramp_rate seconds, and must not wait out the idle rule.
MIN_RAMP_RATE = 10.0


#: ``(key, problem)`` for each rule a configuration breaks, in the order they are
#: checked: the first is the one reported.
Problems = Iterator[tuple[str | None, str]]


def cross_checks(config: Config, source: str) -> None:
    """ConfigError, naming the key, for the first cross-section rule ``config`` breaks."""
    _first(_cross_problems(config), source)


def control_checks(config: Config, source: str) -> None:
    """ConfigError, naming the key, for the first ``[control]`` rule ``config`` breaks."""
    _first(_control_problems(config), source)


def _first(problems: Problems, source: str) -> None:
    found = next(problems, None)
    if found is not None:
        key, problem = found
        raise ConfigError(problem, key=key, source=source)


def _floor(key: str, value: float, floor: float, unit: str, why: str) -> Problems:
    if value < floor:
        yield key, f"{value:g} is below the floor of {floor:g} {unit}{why}"


def _below_idle(key: str, value: float, idle_after: float, why: str = "") -> Problems:
    if value >= idle_after:
        yield key, f"{value:g} must be less than schedule.idle_after ({idle_after:g}){why}"


def _cross_problems(config: Config) -> Problems:
    """The rules that span sections."""
    s = config.schedule
    idle = s.idle_after
    yield from _floor(
        "schedule.interval",
        s.interval,
        MIN_INTERVAL,
        "s",
        f": a check-in keeps a job alive for schedule.idle_after ({idle:g} s)",
    )
    yield from _below_idle("schedule.interval", s.interval, idle)
    if s.interval * (1 + s.jitter) >= idle:
        yield (
            "schedule.interval",
            (
                f"{s.interval:g} with jitter {s.jitter:g} can reach "
                f"{s.interval * (1 + s.jitter):g}, which must be less than "
                f"schedule.idle_after ({idle:g})"
            ),
        )
    if s.status_check_interval > 0:  # 0: the reads are off
        yield from _floor(
            "schedule.status_check_interval",
            s.status_check_interval,
            MIN_STATUS_CHECK_INTERVAL,
            "s",
            " (each round reads every watched job; 0 turns the reads off)",
        )
    yield from _floor(
        "schedule.ramp_rate",
        s.ramp_rate,
        MIN_RAMP_RATE,
        "jobs per second",
        ": a batch of new jobs waits in line for its first check-in",
    )
    if s.drop_confirm_after >= idle / 2:
        # A job with a passing 404 is not checked in again before this: it must not
        # come near the idle rule.
        yield (
            "schedule.drop_confirm_after",
            (
                f"{s.drop_confirm_after:g} must be less than half of schedule.idle_after "
                f"({idle / 2:g}): a job with a passing 404 waits this long for its "
                "next check-in"
            ),
        )
    # One hung request must not outlast the idle rule: the job would fail before a retry.
    yield from _below_idle(
        "elasticsearch.request_timeout",
        config.elasticsearch.request_timeout,
        idle,
        ", or one unanswered request outlasts the idle rule",
    )
    discovery = config.discovery
    if discovery.connector_ids:  # the [discovery] rules only apply when it is on
        yield from _floor(
            "discovery.interval",
            discovery.interval,
            MIN_DISCOVERY_INTERVAL,
            "s",
            " (each listing reads every page of the job list)",
        )
        # A job claimed just after a listing must be found before it goes idle.
        yield from _below_idle("discovery.interval", discovery.interval, idle)
    b = config.backoff
    if b.max < b.initial:
        yield "backoff.max", f"{b.max:g} must not be less than backoff.initial ({b.initial:g})"
    yield from _elasticsearch_problems(config)
    metrics = config.metrics.address()
    if metrics is not None and not config.metrics.allow_remote and not is_loopback(metrics[0]):
        yield (
            "metrics.listen",
            (
                f"{config.metrics.listen!r} is not a loopback address, and /metrics, /livez and "
                "/readyz have no authentication; set metrics.allow_remote = true to listen on it"
            ),
        )


def _elasticsearch_problems(config: Config) -> Problems:
    es = config.elasticsearch
    if es.cloud_id:
        try:
            decode_cloud_id(es.cloud_id)
        except ValueError as exc:
            yield "elasticsearch.cloud_id", str(exc)
    if es.ssl_assert_fingerprint and es.client_cert is not None:
        # aiohttp pins a fingerprint or uses a context, not both: the certificate
        # would silently never be sent.
        yield (
            "elasticsearch.client_cert",
            (
                "cannot be combined with ssl_assert_fingerprint (the certificate would not be "
                "sent); use ca_certs to trust the server instead"
            ),
        )
    tls_files = [key for key in TLS_FILES if getattr(es, key) is not None]
    for key in tls_files:
        path = getattr(es, key)
        if not Path(path).exists():
            yield f"elasticsearch.{key}", f"{path} does not exist"
    if tls_files:
        try:
            # Every file TLS names is read and parsed now, as the client will: a file that
            # passes validate is one the daemon can use. Without one a context cannot
            # fail, and is not built twice: loading the system's CA bundle costs tens of ms
            # and ~1 MB (the client builds its own, for https:// hosts only).
            build_context(es)
        except ConfigError as exc:
            yield exc.key, exc.message


def _control_problems(config: Config) -> Problems:
    control = config.control
    token = control.token.get_secret_value() if control.token is not None else None
    if token is not None and not usable_token(token):
        yield (
            "control.token_file" if control.token_file else "control.token",
            (f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters, no spaces"),
        )
    address = control.address()
    if address is None:
        return
    if token is None:
        yield (
            "control.listen",
            (f"{control.listen!r}: the API over TCP needs control.token or control.token_file"),
        )
    if not control.allow_remote and not is_loopback(address[0]):
        yield (
            "control.listen",
            (
                f"{control.listen!r} is not a loopback address; set control.allow_remote = true "
                "to serve the control API on it"
            ),
        )
