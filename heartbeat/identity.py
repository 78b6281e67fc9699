"""Which Elasticsearch cluster heartbeat expects, and what each host turned out to be.

Another cluster (staging after a SIGHUP, a DNS or load-balancer change, a disaster
recovery site) answers with the product header and a genuine 404 for every job: the one
answer that drops a job. So a drop needs proof of the cluster:

* The expected cluster is ``[elasticsearch] cluster_uuid`` when set; otherwise the
  first one seen, remembered in the state file so that it survives restarts. A pinned
  one wins over a remembered one (and becomes the remembered one once seen).
* The client reads ``GET /`` (``cluster_uuid``, ``cluster_name``, ``version.number``)
  at first contact with each host and after a reconnection, and again before a 404
  may drop a job when the host's identity is older than :data:`CONFIRM_WINDOW`.
* A host of another cluster gets no check-ins and drops nothing: it is skipped like a
  dead host, logged once (``elasticsearch_cluster_mismatch``), and /readyz says so.
* A key without the ``monitor`` cluster privilege cannot read ``GET /``: that is
  logged once (``cluster_identity_unavailable``) and drops behave as before.

This module holds the shared, pure part: the expectation and the verdicts, and which
hosts mismatch. It does no I/O; :mod:`heartbeat.client` reads ``GET /``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

#: A 404 drops a job only if its host was confirmed as the expected cluster within this
#: many seconds; otherwise ``GET /`` is read again first.
CONFIRM_WINDOW = 60.0
#: The privilege ``GET /`` needs (named in ``cluster_identity_unavailable``).
IDENTITY_PRIVILEGE = "cluster privilege monitor (for GET /)"

Verdict = Literal["match", "mismatch"]


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What ``GET /`` says about the cluster behind a host."""

    uuid: str
    name: str | None
    version: str | None

    @classmethod
    def parse(cls, body: Any) -> ClusterInfo | None:
        """From ``GET /``'s JSON body; None when it is not Elasticsearch's answer."""
        if not isinstance(body, dict):
            return None
        uuid = body.get("cluster_uuid")
        if not isinstance(uuid, str) or not uuid or uuid == "_na_":
            return None  # "_na_": a node that has not joined a cluster yet
        name = body.get("cluster_name")
        version = body.get("version")
        number = version.get("number") if isinstance(version, dict) else None
        return cls(
            uuid=uuid,
            name=name if isinstance(name, str) else None,
            version=number if isinstance(number, str) else None,
        )


class ClusterIdentity:
    """The expected cluster, shared by every client of one Heartbeat (a reload builds
    a new client and keeps this)."""

    def __init__(
        self,
        pinned: str | None = None,
        remembered: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.pinned = pinned
        self.remembered = remembered
        self._on_change = on_change
        #: Hosts (as logged) that belong to another cluster, with what they said.
        self.mismatches: dict[str, str] = {}
        self.unavailable_logged = False
        #: The cluster each host was last logged as ``elasticsearch_connected`` to.
        self.connected: dict[str, str] = {}
        #: The hosts configured now (None: any); a retired client's late answer from
        #: a host no longer configured is not recorded.
        self.hosts: set[str] | None = None

    @property
    def expected(self) -> str | None:
        return self.pinned if self.pinned is not None else self.remembered

    def pin(self, pinned: str | None) -> None:
        """A new ``[elasticsearch] cluster_uuid`` (SIGHUP): every host is judged anew."""
        if pinned != self.pinned:
            self.pinned = pinned
            self.mismatches.clear()

    def judge(self, host: str, uuid: str) -> Verdict:
        """``GET /`` on ``host`` said ``uuid``: does it belong to the expected cluster?
        The first one seen becomes the expected one when none is pinned or remembered."""
        expected = self.expected
        if expected is None or expected == uuid:
            self.mismatches.pop(host, None)
            if self.remembered != uuid:
                self.remembered = uuid
                if self._on_change is not None:
                    self._on_change()
            return "match"
        return "mismatch"

    def mismatched(self, host: str, uuid: str) -> bool:
        """Note that ``host`` belongs to cluster ``uuid``; True the first time (log
        ``elasticsearch_cluster_mismatch`` once)."""
        if self.hosts is not None and host not in self.hosts:
            return False  # a request of the previous configuration, finishing late
        first = self.mismatches.get(host) != uuid
        self.mismatches[host] = uuid
        self.connected.pop(host, None)
        return first

    def connected_to(self, host: str, uuid: str) -> bool:
        """``host`` was confirmed as cluster ``uuid``; True when that is news (log
        ``elasticsearch_connected`` once per host, not after every reconnection)."""
        if self.connected.get(host) == uuid:
            return False
        self.connected[host] = uuid
        return True

    def forget(self, hosts: list[str]) -> None:
        """The hosts configured now (at start, and after a reload): mismatches of
        other hosts are forgotten, and no longer recorded."""
        self.hosts = set(hosts)
        for host in list(self.mismatches):
            if host not in hosts:
                del self.mismatches[host]
