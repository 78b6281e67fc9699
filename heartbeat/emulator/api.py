"""The Elasticsearch sync-job endpoints the emulator serves, over a :class:`JobStore`.

Owns what each routed action does once the request got past faults and credentials:
request validation (query parameters, ``compatible-with`` media types, body presence,
empty job ids) and the answers of ``info``, ``list``, ``post``, ``get``, ``delete``,
``check_in``, ``claim``, ``cancel`` and ``error``, with Elasticsearch's status codes and
error envelopes. It does not route (``routing``), check credentials (``auth``), apply
faults (``faults``) or record requests (``handler``). Not modelled: a missing sync-jobs
index, ``_stats``, ``filter_path`` (accepted, ignored).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from heartbeat.emulator.store import JOB_TYPES, STATUSES, JobStore, SyncJob
from heartbeat.emulator.wire import Reject, es_error, es_json, invalid, not_found

_GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace", "filter_path"})
_LIST_PARAMS = frozenset({"from", "size", "status", "connector_id", "job_type"})
_BODY_ACTIONS = frozenset({"post", "claim", "error"})


def check_request(
    request: web.BaseRequest, action: str, job_id: str | None, body: bytes, *, version: str
) -> None:
    """Return if the request is well-formed for ``action``; else Reject with the 400."""
    _check_params(request, action)
    _check_media_types(request, version)
    if body and action not in _BODY_ACTIONS:
        path = request.raw_path.split("?", 1)[0]
        reason = f"request [{request.method} {path}] does not support having a body"
        raise Reject(es_error(400, "illegal_argument_exception", reason))
    if action in _BODY_ACTIONS and not body:
        raise Reject(es_error(400, "parse_exception", "request body is required"))
    if job_id == "":
        raise invalid("[connector_sync_job_id] of the connector sync job cannot be null or empty.")


def execute(
    store: JobStore,
    request: web.BaseRequest,
    action: str,
    job_id: str | None,
    body: bytes,
    *,
    version: str,
    cluster: tuple[str, str] = ("emulator", "heartbeat-emulator"),
) -> web.Response:
    """Carry out a checked request on ``store``: the answer, or Reject with the error.
    ``cluster`` is ``(cluster_uuid, cluster_name)``, what ``GET /`` says."""
    if action == "info":
        return _info(version, cluster)
    if action == "list":
        return _list(store, request.query)
    if action == "post":
        return _post(store, body)
    assert job_id is not None  # every other action names a job
    job = store.record(job_id)
    if job is None:
        raise not_found(job_id)
    moment = store.now()
    if action == "get":
        return es_json(200, job.document())
    if action == "delete":
        store.delete_job(job_id)
        return es_json(200, {"acknowledged": True})
    if action == "check_in":
        job.last_seen = moment
    elif action == "claim":
        fields = _parse(body, "claim_connector_sync_job", {"worker_hostname", "sync_cursor"})
        if not isinstance(fields.get("worker_hostname"), str):
            raise invalid("[worker_hostname] of the connector sync job cannot be null.")
        job.worker_hostname = fields["worker_hostname"]
        job.status, job.started_at, job.last_seen = "in_progress", moment, moment
    elif action == "cancel":
        _cancel(store, job)
    elif action == "error":
        fields = _parse(body, "connector_sync_job_error_request", {"error"})
        if not isinstance(fields.get("error"), str) or not fields["error"]:
            raise invalid("[error] of the connector sync job cannot be null or empty")
        job.status, job.error = "error", fields["error"]
    return es_json(200, {"result": "updated"})


def _cancel(store: JobStore, job: SyncJob) -> None:
    if job.status in {"pending", "suspended"}:
        store.set_status(job.id, "canceled")
    elif job.status == "in_progress":
        store.set_status(job.id, "canceling")
    else:
        reason = (
            f"Invalid transition attempt from [{job.status}] to [canceling]. Such a "
            "ConnectorSyncStatus transition is not supported by the Connector Protocol."
        )
        raise Reject(es_error(400, "status_exception", reason))


def _info(version: str, cluster: tuple[str, str]) -> web.Response:
    cluster_uuid, cluster_name = cluster
    return es_json(
        200,
        {
            "name": "heartbeat-emulator",
            "cluster_name": cluster_name,
            "cluster_uuid": cluster_uuid,
            "version": {"number": version, "build_flavor": "default"},
            "tagline": "You Know, for Search",
        },
    )


def _list(store: JobStore, query: Mapping[str, str]) -> web.Response:
    start, size = _int_param(query, "from", 0), _int_param(query, "size", 100)
    status = query.get("status")
    if status is not None and status.lower() not in STATUSES:
        reason = f"Unknown ConnectorSyncStatus [{status}]."
        raise Reject(es_error(400, "illegal_argument_exception", reason))
    job_types = None
    if query.get("job_type"):
        job_types = set(query["job_type"].lower().split(","))
        for job_type in job_types - set(JOB_TYPES):
            reason = f"Unknown ConnectorSyncJobType [{job_type}]."
            raise Reject(es_error(400, "illegal_argument_exception", reason))
    connector_id = query.get("connector_id")
    matching = [
        job
        for job in store.records()
        if (status is None or job.status == status.lower())
        and (connector_id is None or job.connector_id == connector_id)
        and (job_types is None or job.job_type in job_types)
    ]
    matching.sort(key=lambda job: (job.created_at, job.seq), reverse=True)
    results = [job.document() for job in matching[start : start + size]]
    return es_json(200, {"count": len(matching), "results": results})


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        reason = f"Failed to parse int parameter [{name}] with value [{text}]"
        raise Reject(es_error(400, "illegal_argument_exception", reason)) from None
    if value < 0:
        raise invalid(f"[{name}] parameter cannot be negative, found [{value}]")
    return value


def _post(store: JobStore, body: bytes) -> web.Response:
    fields = _parse(body, "connector_sync_job_post_request", {"id", "job_type", "trigger_method"})
    if "id" not in fields:
        raise Reject(es_error(400, "illegal_argument_exception", "Required [id]"))
    if not isinstance(fields["id"], str) or not fields["id"]:
        raise invalid("[id] of the connector cannot be null or empty")
    job_type = fields.get("job_type") or "full"
    if job_type not in JOB_TYPES:
        reason = f"Unknown ConnectorSyncJobType [{job_type}]."
        raise Reject(es_error(400, "illegal_argument_exception", reason))
    job_id = store.create_job(connector_id=fields["id"], job_type=job_type, status="pending")
    if isinstance(fields.get("trigger_method"), str):
        job = store.record(job_id)
        assert job is not None  # just created
        job.trigger_method = fields["trigger_method"]
    return es_json(201, {"id": job_id})


def _parse(body: bytes, parser: str, allowed: set[str]) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = f"[{parser}] failed to parse request body: {exc}"
        raise Reject(es_error(400, "x_content_parse_exception", reason)) from None
    if not isinstance(fields, dict):
        reason = f"[{parser}] expected an object"
        raise Reject(es_error(400, "x_content_parse_exception", reason))
    for name in fields:
        if name not in allowed:
            reason = f"[{parser}] unknown field [{name}]"
            raise Reject(es_error(400, "x_content_parse_exception", reason))
    return fields


def _check_params(request: web.BaseRequest, action: str) -> None:
    allowed = _GLOBAL_PARAMS | (_LIST_PARAMS if action == "list" else frozenset())
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        path = request.raw_path.split("?", 1)[0]
        names = ", ".join(f"[{name}]" for name in unknown)
        noun = "parameter" if len(unknown) == 1 else "parameters"
        reason = f"request [{path}] contains unrecognized {noun}: {names}"
        raise Reject(es_error(400, "illegal_argument_exception", reason))


def _check_media_types(request: web.BaseRequest, version: str) -> None:
    major = int(version.split(".", 1)[0])
    for header in ("Accept", "Content-Type"):
        match = re.search(r"compatible-with=(\d+)", request.headers.get(header, ""))
        if match and int(match.group(1)) not in {major, major - 1}:
            reason = f"Invalid media-type value on headers [{header}]"
            raise Reject(es_error(400, "media_type_header_exception", reason))
