"""The drop rule: when a genuine 404 may drop a job.

A small pure object, events in and verdicts out (no clock, no loop, no logging); the
scheduler feeds it every genuine 404 (``resource_not_found_exception`` from the
expected cluster: the client sees to that) and every clearing of a pending mark.

* **Two genuine 404s.** A first one marks the job as pending a drop: it is checked in
  again ``drop_confirm_after`` seconds later, and only a second one drops it. A success
  in between clears the mark. A 404 that lasts a moment costs nothing.
* **A storm waits for idle_after.** While at least :data:`STORM_MIN_JOBS` jobs are
  pending a drop at the same time and they are more than half of the watch list (a
  sync-jobs index missing during a restore, a cluster answering for jobs it never
  had), nothing is dropped: the pending jobs are checked in every interval as usual,
  and one is dropped only once its 404s have lasted ``idle_after`` (by then a job that
  exists anywhere would have been failed as idle anyway).
* **Seen early.** Jobs are spread over the interval, so when every job starts to
  404, only ``drop_confirm_after / interval`` of the list is pending by the time the
  first confirmation comes. The storm therefore also counts against the jobs that
  have *answered* since the first pending mark (the "wave"): more than half of those
  pending, at least :data:`STORM_MIN_JOBS` of them, is a storm too. A connector
  deleted with its jobs may look like one: it costs a few minutes of extra requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: A storm needs at least this many jobs pending a drop at once...
STORM_MIN_JOBS = 10
#: ...and more than this fraction of the watch list.
STORM_FRACTION = 0.5

Verdict = Literal["pending", "defer", "drop"]


def is_storm(pending: int, watched: int, answered: int | None = None) -> bool:
    """Pure: whether ``pending`` jobs pending a drop are a storm, out of ``watched``
    jobs of which ``answered`` answered since the first pending mark."""
    if pending < STORM_MIN_JOBS:
        return False
    if pending > watched * STORM_FRACTION:
        return True
    return answered is not None and pending > answered * STORM_FRACTION


@dataclass(slots=True)
class DropRule:
    #: Jobs pending a drop (a first genuine 404, not yet confirmed or cleared).
    pending: int = 0
    #: Whether the current storm has been logged (``drop_storm_deferred``, once).
    storm_logged: bool = False
    #: Jobs that answered since the first pending mark (while any job is pending).
    wave: set[str] = field(default_factory=set)

    def answered(self, job_id: str) -> None:
        """Any answer from the cluster for ``job_id`` while a job is pending a drop."""
        if self.pending:
            self.wave.add(job_id)

    def not_found(
        self,
        job_id: str,
        pending_since: float | None,
        now: float,
        *,
        watched: int,
        idle_after: float,
    ) -> Verdict:
        """A genuine 404 for a job pending a drop since ``pending_since`` (None: not
        pending): ``pending`` (mark it, confirm later), ``defer`` (a storm: keep
        checking it in as usual) or ``drop``."""
        if pending_since is None:
            self.pending += 1
            self.wave.add(job_id)
            return "pending"
        storm = is_storm(self.pending, watched, len(self.wave))
        if storm and now - pending_since < idle_after:
            return "defer"
        return "drop"

    def cleared(self, *, watched: int) -> None:
        """A pending job answered with a success, or left the watch list."""
        self.pending = max(0, self.pending - 1)
        if not self.pending:
            self.wave.clear()
        if not is_storm(self.pending, watched, len(self.wave)):
            self.storm_logged = False

    def log_storm(self) -> bool:
        """True the first time a storm defers a drop (log ``drop_storm_deferred``)."""
        if self.storm_logged:
            return False
        self.storm_logged = True
        return True
