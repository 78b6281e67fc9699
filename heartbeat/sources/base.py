"""What a source of job ids is, and the narrow interface it gets to the watch list.

A source is handed a :class:`Feed`, never the daemon: it may watch ids under its own
name, release its claims, read which ids it claims (after a restart too: the claims come
back from the state file), wait until its changes are on disk, and read the clock. Its
own settings it gets from the configuration (its constructor and ``reload``). This is
the way uvicorn hands its protocols a small ``ServerState`` rather than the ``Server``:
a source cannot reach into the scheduler, the client or another source's claims.

:class:`heartbeat.daemon.Heartbeat` implements :class:`Feed` (and the wider feeds that
discovery and the control API declare beside their sources). This module imports no
other heartbeat module at run time: sources import it, and the daemon never imports
a source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from heartbeat.clock import Clock
    from heartbeat.config import Config


class Feed(Protocol):
    """The watch list as a source sees it. ``source`` is always the caller's own name."""

    @property
    def clock(self) -> Clock:
        """The scheduler's clock (injected in tests)."""

    def claim_valid(self, job_ids: Sequence[str], source: str, *, ttl: float | None = None) -> int:
        """Claim ``job_ids`` for ``source`` (a ``ttl`` makes the claims end unless
        renewed); how many were not watched before. The ids are valid: the source
        checked each one as it arrived (heartbeat.jobid), and the feed trusts them."""

    def release(self, job_id: str, *, source: str, reason: str) -> bool:
        """Withdraw ``source``'s claim on ``job_id``; True when the job is no longer
        watched (no other source wanted it), logged as ``job_removed`` with ``reason``."""

    def claimed(self, source: str) -> set[str]:
        """The ids ``source`` claims now."""

    def replace_valid_claims(
        self, source: str, wanted: Sequence[str], *, reason: str = "source"
    ) -> tuple[int, int]:
        """Make ``source``'s claims exactly ``wanted``; ``(claims added, withdrawn)``, a
        job no longer wanted by any source logged as removed for ``reason``."""

    async def persisted(self) -> None:
        """Return once every change so far is on disk (at once without ``[state] dir``)."""

    def watching(self) -> int:
        """How many jobs are watched, by every source."""


class Source(Protocol):
    """A source of job ids: started by the daemon after the saved watch list is loaded
    and before it reports ready; ``reload`` on SIGHUP."""

    name: str

    async def run(self, feed: Any, *, task_status: TaskStatus[Any]) -> None:
        """Call ``task_status.started()`` once serving; run until cancelled. ``feed`` is
        a :class:`Feed` (or the wider feed the source declares)."""

    async def reload(self, config: Config) -> None:
        """SIGHUP: pick up changed settings where that makes sense."""
