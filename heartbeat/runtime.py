"""The process edge: ``heartbeat run`` around a :class:`~heartbeat.daemon.Heartbeat`.

Owns what only a process has: the start-up warnings logged once, the sources the
configuration asks for (started after the saved watch list is loaded, before READY=1),
the signals (SIGTERM/SIGINT stop, SIGHUP reloads through :mod:`heartbeat.reload`), and
when sd_notify(3) messages go out (READY=1, RELOADING=1, STATUS= every
:data:`STATUS_PERIOD` seconds, WATCHDOG=1 from the scheduler's loop, STOPPING=1 however
the daemon ends). A connector that embeds the library gets none of this: it owns its
own process. This module does not speak HTTP and does not decide what is watched.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import structlog

from heartbeat._version import __version__
from heartbeat.config import Config
from heartbeat.config.warnings import startup_warnings
from heartbeat.daemon import Heartbeat
from heartbeat.reload import reload
from heartbeat.sources import build_sources
from heartbeat.sources.base import Feed
from heartbeat.systemd import Notifier

__all__ = ["STATUS_PERIOD", "serve"]

log = structlog.get_logger("heartbeat")

#: Seconds between two STATUS= updates to systemd.
STATUS_PERIOD = 10.0
#: The source name of ``heartbeat run --job`` ids.
CLI = "cli"


async def serve(config: Config, *, path: Path | None, extra_ids: Sequence[str] = ()) -> int:
    """``heartbeat run``: check jobs in until SIGTERM/SIGINT; SIGHUP reloads."""
    for warning in startup_warnings(config, path):
        log.warning(warning.event, **warning.fields)
    notifier = Notifier.from_env()
    stopped_by = "signal"
    with (
        anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals,
        _stopping_on_exit(notifier),
    ):
        async with Heartbeat(config) as hb:
            feed: Feed = hb
            if extra_ids:
                feed.claim_valid(extra_ids, CLI)
            # Like the config file, the command line is the truth for its own ids: a
            # --job id restored from the state file but not given this time is released.
            feed.replace_valid_claims(CLI, extra_ids)
            sources = build_sources(config)
            for source in sources:
                await hb.start(source.run, feed, name=f"source {source.name}")
            watchdog = notifier.watchdog_interval()
            if watchdog is not None:
                # From the scheduler's own loop: a stuck loop trips systemd's watchdog.
                hb.scheduler.add_periodic(watchdog, lambda _now: notifier.watchdog())
            if notifier.enabled:
                hb.scheduler.add_periodic(STATUS_PERIOD, lambda _now: notifier.status(hb.summary()))
            log.info(
                "daemon_started",
                version=__version__,
                pid=os.getpid(),
                config=str(path) if path else None,
                hosts=config.elasticsearch.urls(),
                jobs=feed.watching(),
                interval=config.schedule.interval,
                # The file source also runs unconfigured (to release restored claims).
                sources=[s.name for s in sources if s.name != "file" or config.jobs.file],
            )
            notifier.ready(status=hb.summary())
            async for signum in signals:
                if signum == signal.SIGHUP:
                    notifier.reloading()
                    if await reload(hb, path, sources):
                        notifier.ready(status=hb.summary())
                    else:
                        notifier.ready(status=f"{hb.summary()}; reload failed, running config kept")
                    continue
                stopped_by = signal.Signals(signum).name
                notifier.stopping()
                log.info("daemon_stopping", signal=stopped_by, in_flight=hb.scheduler.in_flight)
                break
            jobs = feed.watching()
    log.info("daemon_stopped", reason=stopped_by, jobs=jobs)
    return 0


@contextlib.contextmanager
def _stopping_on_exit(notifier: Notifier) -> Iterator[None]:
    """STOPPING=1 however the daemon ends (a second one after a signal is harmless)."""
    try:
        yield
    finally:
        notifier.stopping()
