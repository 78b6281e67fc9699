"""What one check-in ended in: a typed value, never an exception.

The client (:mod:`heartbeat.client`) maps every answer and every transport failure
onto exactly one of these; the scheduler decides from the type alone what happens next.

========================  ===========================================================
``Success``               2xx from Elasticsearch: due again ``interval`` later
``NotFound``              genuine 404 ``resource_not_found_exception``: drop the job
``Rejected``              400 from Elasticsearch: drop the job
``Unauthorized``          401/403: keep the job, back off, tell the operator
``Misrouted``             a 404 (or other answer) that did not come from Elasticsearch:
                          keep the job, back off
``Retryable``             408/409/429/5xx, timeout, connection/TLS error, malformed
                          response: keep the job, back off (honouring Retry-After)
========================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Success:
    status: int


@dataclass(frozen=True, slots=True)
class NotFound:
    reason: str
    status: int = 404


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unauthorized:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Misrouted:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Retryable:
    """A failure worth retrying.

    ``error`` is a short machine-readable kind (``connection``, ``timeout``, ``tls``,
    ``http``, ``malformed``); ``status`` the HTTP status when there was one;
    ``retry_after`` the server's Retry-After in seconds, when given.
    ``job_specific`` is true when the failure says nothing about the cluster as a
    whole (a 409 version conflict on one document).
    """

    error: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    job_specific: bool = False


Outcome = Success | NotFound | Rejected | Unauthorized | Misrouted | Retryable

#: What the credentials need for a check-in: ``elasticsearch_unauthorized`` names it
#: when an ``Unauthorized`` comes back.
NEEDED_PRIVILEGES = (
    "cluster privilege manage_connector, and write on index .elastic-connectors-sync-jobs*"
)


def outcome_key(outcome: Outcome) -> str:
    """A short aggregation key for an outcome: ``http_503``, ``timeout``, ``misrouted``..."""
    match outcome:
        case Success():
            return "success"
        case NotFound():
            return "not_found"
        case Rejected():
            return "rejected"
        case Unauthorized(status=status):
            return f"unauthorized_{status}"
        case Misrouted():
            return "misrouted"
        case Retryable(error="http", status=status):
            return f"http_{status}"
        case Retryable(error=error):
            return error
