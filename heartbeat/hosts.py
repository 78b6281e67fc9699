"""Which Elasticsearch host a request goes to: the host pool.

A small pure object (no I/O, no logging; the caller passes ``now`` and logs the
transitions it returns), modelled on elastic-transport's ``NodePool``
(``elastic_transport/_node_pool.py``):

* A host that refuses connections or does not answer within ``request_timeout`` is
  marked dead and skipped. It is tried again once its dead time has passed:
  ``DEAD_BACKOFF_FACTOR * 2 ** (failures - 1)`` seconds, at most ``MAX_DEAD_BACKOFF``
  (the official client's defaults, 1 s and 30 s).
* Unlike ``NodePool``, a host whose dead time is over gets *one* trial request at a
  time; the other requests keep skipping it until the trial answers. So a host that
  accepts connections and never answers costs one timeout per dead period, not one per
  request, and a request whose attempt failed on one host goes to the next live host
  at once.
* When every host is dead, the one due back first is used anyway (``NodePool``'s
  forced resurrection): a request is never refused for want of a host.
* Requests stay on one host while it works (the first one, at start) and move on only
  when it fails, as heartbeat always did; a single host is never marked dead (as
  ``SingleNodePool``): the outage rule covers that case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Seconds a host stays dead after its first failure; doubled for each further one...
DEAD_BACKOFF_FACTOR = 1.0
#: ...up to this.
MAX_DEAD_BACKOFF = 30.0


def dead_time(failures: int) -> float:
    """Pure: seconds a host stays dead after ``failures`` consecutive failures."""
    if failures < 1:
        return 0.0
    return min(MAX_DEAD_BACKOFF, DEAD_BACKOFF_FACTOR * 2.0 ** min(failures - 1, 30))


@dataclass(slots=True, eq=False)
class Host:
    """One configured base URL and what the pool knows about it."""

    index: int
    url: str  # as configured, credentials never included (the config refuses them)
    failures: int = 0  # consecutive failures; 0 while alive
    dead_until: float = -math.inf
    trial: bool = False  # a request is testing whether the host is back
    #: What ``GET /`` said (heartbeat.identity): None (not read since the last
    #: connection), ``confirmed``, ``mismatch``, ``unavailable`` (refused), ``unknown``.
    identity: str | None = None
    identity_at: float = -math.inf  # when it was last confirmed (monotonic)

    @property
    def dead(self) -> bool:
        return self.failures > 0


class HostPool:
    """The hosts, which one is current, and which are dead."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("no hosts")
        self.hosts = [Host(index, url) for index, url in enumerate(urls)]
        self._current = 0

    @property
    def current(self) -> Host:
        return self.hosts[self._current]

    def pick(self, now: float, tried: frozenset[int] = frozenset()) -> tuple[Host, bool] | None:
        """``(host, trial)`` for the next attempt of a request that already tried
        ``tried`` (indexes), or None when no host is left to try. ``trial`` is true
        when this attempt tests a dead host: pass it back to :meth:`failed`,
        :meth:`answered` or :meth:`released`.

        A dead host whose dead time is over comes first, as a trial (one request at a
        time), so that it is found again once it is back; then the current host, then
        the others in order; when every host is dead, the one due back first."""
        count = len(self.hosts)
        order = [self.hosts[(self._current + step) % count] for step in range(count)]
        untried = [host for host in order if host.index not in tried]
        for host in untried:
            if host.dead and not host.trial and host.dead_until <= now:
                host.trial = True
                return host, True
        for host in untried:
            if not host.dead:
                return host, False
        if tried or not untried:
            return None  # the hosts left are dead: this request has had its attempt
        return min(untried, key=lambda host: host.dead_until), False

    def failed(self, host: Host, now: float, *, trial: bool) -> bool:
        """An attempt on ``host`` could not connect or timed out. True when this marks
        it dead (it was alive): log ``elasticsearch_host_down`` once.

        Only a live host's failure or a trial's counts: requests that were already
        under way when the host was marked dead, or forced onto it, change nothing."""
        if trial:
            host.trial = False
        count = len(self.hosts)
        if count == 1:
            # Never dead, but read GET / again once it answers: who answers after a
            # reconnection may be another cluster (a DNS or load-balancer change).
            if host.identity != "mismatch":
                host.identity = None
            return False
        if host.dead and not trial:
            return False
        was_alive = not host.dead
        host.failures += 1
        host.dead_until = now + dead_time(host.failures)
        if host.identity != "mismatch":
            host.identity = None  # read again after the reconnection
        if host is self.current:
            for step in range(1, count):
                candidate = self.hosts[(host.index + step) % count]
                if not candidate.dead:
                    self._current = candidate.index
                    break
        return was_alive

    def answered(self, host: Host, *, trial: bool) -> bool:
        """An attempt on ``host`` got an HTTP answer (any status). True when this
        brings it back (it was dead): log ``elasticsearch_host_up`` once."""
        if trial:
            host.trial = False
        if not host.dead:
            return False
        host.failures = 0
        host.dead_until = -math.inf
        if self.current.dead:
            self._current = host.index
        return True

    def released(self, host: Host, *, trial: bool) -> None:
        """An attempt on ``host`` ended without telling whether it is alive (a TLS
        error, a cancelled request): a trial it held is free again."""
        if trial:
            host.trial = False
