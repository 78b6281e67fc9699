"""SIGHUP: re-read the configuration and apply it all or nothing.

Owns the order of a reload: read and validate the file (every file it names is read and
the TLS context built, in a worker thread so a slow disk never stalls check-ins), build
and open the new Elasticsearch client, and only when all of that succeeded swap the
running configuration, the client, the sources' settings and logging at once. Anything
that fails is one ``config_reload_failed`` line and the running configuration is kept:
a reload never stops the daemon. It also owns which settings are read only at start
(:func:`start_only_changes`): a change to one of them is held at its running value and
reported in ``control_restart_needed``, never reported as applied.

It does not own validation (heartbeat.config), what a source does with new settings
(heartbeat.sources), or the signal loop (heartbeat.runtime.serve).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import structlog

from heartbeat import config as configuration
from heartbeat import logs
from heartbeat.config import Config
from heartbeat.errors import ConfigError

if TYPE_CHECKING:
    from heartbeat.client import Client
    from heartbeat.sources.base import Source

log = structlog.get_logger("heartbeat")

#: Keys read when a listener or a source starts: ``[control]`` keys held at start.
CONTROL_START_ONLY = ("socket", "listen", "allow_remote")
METRICS_START_ONLY = ("listen", "allow_remote")
KEPT = "running configuration"


class Reloadable(Protocol):
    """What a reload changes: a :class:`~heartbeat.daemon.Heartbeat`, as far as the
    configuration goes (applied in place, the client prepared first)."""

    @property
    def config(self) -> Config: ...

    async def prepare_client(self, new: Config) -> Client | None: ...

    async def apply(self, new: Config, *, client: Client | None = None) -> list[str]: ...

    def watching(self) -> int: ...


def start_only_changes(old: Config, new: Config) -> list[str]:
    """Every start-only key whose value differs between ``old`` and ``new``."""
    changed = []
    if old.state.dir != new.state.dir:
        changed.append("state.dir")
    changed += [
        f"metrics.{key}"
        for key in METRICS_START_ONLY
        if getattr(old.metrics, key) != getattr(new.metrics, key)
    ]
    changed += [
        f"control.{key}"
        for key in CONTROL_START_ONLY
        if getattr(old.control, key) != getattr(new.control, key)
    ]
    if (old.queue.url is None) != (new.queue.url is None):
        changed.append("queue.url")
    if bool(old.discovery.connector_ids) != bool(new.discovery.connector_ids):
        changed.append("discovery.connector_ids")
    if old.worker.enabled != new.worker.enabled:
        # The probe starts with the daemon: switched on, it would not run; switched off,
        # a monitor without probes must not decide whether check-ins go out.
        changed += [
            f"worker.{key}"
            for key in ("pid_file", "health_url")
            if getattr(old.worker, key) != getattr(new.worker, key)
        ]
    return changed


def effective(old: Config, new: Config) -> Config:
    """``new``, with every start-only setting held at its running value in ``old``."""
    held = {key: getattr(old.control, key) for key in CONTROL_START_ONLY}
    if held["listen"] is not None and new.control.token is None:
        # The TCP listener keeps running: it must keep asking for its token.
        held["token"] = old.control.token
    update = {
        "state": old.state,
        "metrics": old.metrics,
        "control": new.control.model_copy(update=held),
    }
    if (old.queue.url is None) != (new.queue.url is None):
        update["queue"] = old.queue
    if bool(old.discovery.connector_ids) != bool(new.discovery.connector_ids):
        update["discovery"] = old.discovery
    if old.worker.enabled != new.worker.enabled:
        update["worker"] = old.worker
    return new.model_copy(update=update)


def _applied(changed: list[str], config: Config) -> list[str]:
    """The changed sections that something running applies (not a queue that is off)."""
    on = {
        "queue": config.queue.url is not None,
        "discovery": bool(config.discovery.connector_ids),
        "control": config.control.socket is not None or config.control.listen is not None,
        "worker": config.worker.enabled,
    }
    return [section for section in changed if on.get(section, True)]


async def reload(hb: Reloadable, path: Path | None, sources: Sequence[Source] = ()) -> bool:
    """Re-read ``path`` and apply it; False (running configuration kept) on any failure."""
    if path is None:
        log.warning("config_reload_failed", error="no configuration file to re-read", kept=KEPT)
        return False
    old = hb.config
    try:
        loaded = await anyio.to_thread.run_sync(partial(configuration.load, path, reloading=True))
        new = effective(old, loaded)
        client = await hb.prepare_client(new)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept=KEPT)
        return False
    except Exception as exc:
        # Not a configuration problem we know how to word: still never fatal.
        log.error(
            "config_reload_failed",
            error=f"{path}: cannot apply it: {type(exc).__name__}: {exc}",
            kept=KEPT,
        )
        return False
    # Everything that can fail has succeeded: from here on, only swaps.
    restart_needed = start_only_changes(old, loaded)
    if new.logging != old.logging:
        logs.configure(format=new.logging.format, level=new.logging.level)
    changed = _applied(await hb.apply(new, client=client), new)
    for source in sources:
        await source.reload(new)
    if restart_needed:
        log.warning("control_restart_needed", changed=restart_needed)
    log.info(
        "config_reloaded",
        path=str(path),
        changed=changed + restart_needed,
        restart_needed=restart_needed,
        jobs=hb.watching(),
    )
    return True
