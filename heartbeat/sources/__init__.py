"""Where job ids come from, besides ``[jobs] ids`` and the library API.

Each source feeds the same watch list through a :class:`~heartbeat.sources.base.Feed`
(``feed.claim_valid(ids, NAME)``, ``feed.release(id, source=NAME, reason=...)``,
``feed.replace_valid_claims(NAME, ids)``), each id checked once by the source as it
arrives (heartbeat.jobid), and never touches the scheduler's timing. A source is a
:class:`~heartbeat.sources.base.Source`::

    name: str
    async def run(self, feed: Feed, *, task_status: TaskStatus[None]) -> None
        # call task_status.started() once the source is serving; run until cancelled
    async def reload(self, config: Config) -> None
        # SIGHUP: pick up changed settings where that makes sense

:func:`build_sources` returns the sources the configuration asks for; the runtime
(heartbeat.runtime) starts them after the saved watch list is loaded and before it
reports ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heartbeat.sources.base import Feed, Source

if TYPE_CHECKING:
    from heartbeat.config import Config

__all__ = ["Feed", "Source", "build_sources"]


def build_sources(config: Config) -> list[Source]:
    """The sources enabled by ``config``, in start order."""
    sources: list[Source] = []
    # Always built, even without [jobs] file: it then releases restored "file" claims,
    # and a SIGHUP that sets [jobs] file starts it watching.
    from heartbeat.sources.file import FileSource

    sources.append(FileSource(config.jobs.file))
    if config.queue.url is not None:
        # Imported here: redis is only loaded when a queue is configured.
        from heartbeat.sources.queue import QueueSource

        sources.append(QueueSource(config.queue, backoff_settings=config.backoff))
    if config.discovery.connector_ids:
        from heartbeat.sources.discovery import DiscoverySource

        sources.append(DiscoverySource(config.discovery))
    if config.control.socket is not None or config.control.listen is not None:
        # Last: it answers requests only once the other sources have started.
        from heartbeat.control import ControlSource

        sources.append(ControlSource(config.control))
    return sources
