"""Where job ids come from, besides ``[jobs] ids`` and the library API.

Each source feeds the same watch list (``hb.watch_many(ids, source=NAME)`` and
``hb.scheduler.unwatch(id, reason=..., source=NAME)``), through the same id
validation, and never touches the scheduler's timing. A source is an object with::

    name: str
    async def run(self, hb: Heartbeat, *, task_status: TaskStatus[None]) -> None
        # call task_status.started() once the source is serving; run until cancelled
    async def reload(self, config: Config) -> None
        # SIGHUP: pick up changed settings where that makes sense

:func:`build_sources` returns the sources the configuration asks for; the daemon
starts them after the saved watch list is loaded and before it reports ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from heartbeat.config import Config
    from heartbeat.daemon import Heartbeat


class Source(Protocol):
    name: str

    async def run(self, hb: Heartbeat, *, task_status: TaskStatus[Any]) -> None: ...

    async def reload(self, config: Config) -> None: ...


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

        sources.append(QueueSource(config.queue))
    if config.discovery.connector_ids:
        from heartbeat.sources.discovery import DiscoverySource

        sources.append(DiscoverySource(config.discovery))
    if config.control.socket is not None or config.control.listen is not None:
        # Last: it answers requests only once the other sources have started.
        from heartbeat.control import ControlSource

        sources.append(ControlSource(config.control))
    return sources
