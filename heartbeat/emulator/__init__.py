"""The built-in Elasticsearch stand-in: the connector sync-job API on a loopback socket.

Owns an in-memory store of sync-job documents, the HTTP surface that serves them with
Elasticsearch's status codes, error envelopes and ``X-Elastic-Product`` header, a log of
every request that reached it, and scripted faults. It does not own anything the daemon
runs in production: only tests, the benchmark and ``heartbeat emulator`` import it.

Elasticsearch API (``X-Elastic-Product: Elasticsearch`` and JSON on every answer)::

    GET    /                                     cluster info: cluster_uuid (settable:
                                                 Emulator(cluster_uuid=...), heartbeat
                                                 emulator --cluster-uuid), cluster_name,
                                                 version.number, tagline
    POST   /_connector/_sync_job                 {"id": connector, "job_type"?} -> 201 {"id"}
    GET    /_connector/_sync_job?status=&connector_id=&job_type=&from=0&size=100
    GET    /_connector/_sync_job/<id>            the document, or 404
    DELETE /_connector/_sync_job/<id>            {"acknowledged": true}
    PUT    /_connector/_sync_job/<id>/_check_in  no body; sets last_seen, whatever the status
    PUT    /_connector/_sync_job/<id>/_claim     {"worker_hostname"}: in_progress
    PUT    /_connector/_sync_job/<id>/_cancel    pending/suspended -> canceled,
                                                 in_progress -> canceling, else 400
    PUT    /_connector/_sync_job/<id>/_error     {"error"}: status error

Routing works on the raw request target, as Elasticsearch's own router does: the path
(query string cut off) is split on ``/`` and only the job-id segment is percent-decoded,
so ``a%2Fb`` is the job ``a/b`` and ``%2E%2E`` the job ``..``. Nothing is normalised, and
a literal ``.`` or ``..`` segment never matches an endpoint (stricter than Elasticsearch,
which would take it as an id, because any proxy in between would resolve it). Unknown
paths answer 400 ``no handler found``, a known path with the wrong method 405.

Not modelled: connectors (any connector id is accepted), a missing sync-jobs index,
``_stats``, ``filter_path``. A raw non-ASCII byte in the request line is refused by
aiohttp's parser (plain-text 400, no product header) before it reaches this module.

Credentials (optional): ``Emulator(api_key=..., basic=(user, password), bearer=...)``;
when any is set, each request needs ``Authorization`` matching one of them exactly
(scheme case-insensitive), else 401 ``security_exception`` with ``WWW-Authenticate``.
``emu.privileges`` is ``"manage"`` (everything), ``"monitor"`` (only reads) or
``"none"``; a refused action answers 403 ``security_exception``.

Faults (``emu.faults``, or ``emu.script`` / ``emu.always``) apply to Elasticsearch API
requests whose action is in ``Fault.actions`` (default: check-ins only; ``"*"`` for
every routed request). They come before the credential check, as a proxy or a struggling
cluster would answer. Scripted faults are used once each, in order, those for the
request's job id before those for any job; a persistent fault answers until cleared.

Control API for an emulator in another process (no credentials, not logged, plain JSON)::

    POST   /_emulator/jobs               {"connector_id", "status", "worker_hostname",
                                          "job_type", "job_id", "started_at"} -> {"id"}
    GET    /_emulator/jobs/<id>          the document, or 404
    DELETE /_emulator/jobs/<id>
    PUT    /_emulator/jobs/<id>/claim    {"worker_hostname"}: as _claim (started_at now)
    PUT    /_emulator/jobs/<id>/status   {"status": "completed"}
    POST   /_emulator/faults             {"mode": "script"|"always", "job_id": null,
                                          "faults": [Fault.to_json(), ...]}
    DELETE /_emulator/faults             clears every fault
    GET    /_emulator/requests           {"total", "by_action", "check_ins": {id: n}}
    DELETE /_emulator/requests           forgets the request log
    PUT    /_emulator/auth               {"api_key"?, "privileges"?}

Layout (one module per concern; this package re-exports the public names)::

    wire       JSON encoding, product header, error envelopes, the early-answer Reject,
               RecordedRequest (an entry of the request log)
    faults     Fault, FaultPlan, and the answer a fault gives
    store      STATUSES, JOB_TYPES, the in-memory jobs and their Python API
    routing    decode_path and the router: raw request target -> (action, job id)
    auth       credential and privilege checks (401/403)
    api        the Elasticsearch sync-job endpoints
    control    the /_emulator control API (on the Controlled protocol, not on Emulator)
    handler    Emulator (settings, request log, fault plan)
    datafile   the --data file: checked at start, replaced atomically at exit
    server     serve() and run_emulator()
"""

from heartbeat.emulator.auth import Privileges
from heartbeat.emulator.datafile import DataFileError
from heartbeat.emulator.faults import Fault, FaultPlan
from heartbeat.emulator.handler import Emulator
from heartbeat.emulator.routing import decode_path
from heartbeat.emulator.server import ListenError, run_emulator, serve
from heartbeat.emulator.store import JOB_TYPES, STATUSES
from heartbeat.emulator.wire import RecordedRequest

__all__ = [
    "JOB_TYPES",
    "STATUSES",
    "DataFileError",
    "Emulator",
    "Fault",
    "FaultPlan",
    "ListenError",
    "Privileges",
    "RecordedRequest",
    "decode_path",
    "run_emulator",
    "serve",
]
