"""The emulator's credential and privilege checks for Elasticsearch API requests.

Owns :data:`Privileges` and :func:`check_credentials`: when any of an API key, basic
credentials or a bearer token is configured, ``Authorization`` must match one of them
exactly (scheme case-insensitive), else 401 ``security_exception`` with
``WWW-Authenticate``; then ``"manage"`` allows everything, ``"monitor"`` only reads and
``"none"`` nothing, a refused action answering 403 ``security_exception``. It does not
hold the credentials (the :class:`~heartbeat.emulator.Emulator` does, and the control API
changes them) and is never consulted for the ``/_emulator`` control API or for faults,
which answer before it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from aiohttp import web

from heartbeat.emulator.wire import Reject, es_error

Privileges = Literal["manage", "monitor", "none"]

_READ_ACTIONS = frozenset({"info", "get", "list"})
_ES_ACTIONS = {
    "info": "cluster:monitor/main",
    "list": "cluster:admin/xpack/connector/sync_job/list",
    "post": "cluster:admin/xpack/connector/sync_job/post",
    "get": "cluster:admin/xpack/connector/sync_job/get",
    "delete": "cluster:admin/xpack/connector/sync_job/delete",
    "check_in": "cluster:admin/xpack/connector/sync_job/check_in",
    "claim": "cluster:admin/xpack/connector/sync_job/claim",
    "cancel": "cluster:admin/xpack/connector/sync_job/cancel",
    "error": "cluster:admin/xpack/connector/sync_job/update_error",
}
_WWW_AUTHENTICATE = ('Basic realm="security", charset="UTF-8"', 'Bearer realm="security"', "ApiKey")


def check_credentials(
    request: web.BaseRequest,
    action: str,
    *,
    api_key: str | None,
    basic: tuple[str, str] | None,
    bearer: str | None,
    privileges: Privileges,
) -> None:
    """Return if ``request`` may perform ``action``; else Reject with the 401 or 403."""
    principal = "user [_anonymous]"
    if api_key is not None or basic is not None or bearer is not None:
        header = request.headers.get("Authorization")
        if header is None:
            path = request.raw_path.split("?", 1)[0]
            raise _unauthenticated(f"missing authentication credentials for REST request [{path}]")
        scheme, _, value = header.partition(" ")
        principal_or_none = _authenticate(scheme.lower(), value, api_key, basic, bearer)
        if principal_or_none is None:
            raise _unauthenticated(
                "unable to authenticate with provided credentials and anonymous access "
                "is not allowed for this request"
            )
        principal = principal_or_none
    if privileges == "manage" or (privileges == "monitor" and action in _READ_ACTIONS):
        return
    reason = (
        f"action [{_ES_ACTIONS[action]}] is unauthorized for {principal}, this action is "
        "granted by the cluster privileges [manage_connector,manage,all]"
    )
    raise Reject(es_error(403, "security_exception", reason))


def _authenticate(
    scheme: str,
    value: str,
    api_key: str | None,
    basic: tuple[str, str] | None,
    bearer: str | None,
) -> str | None:
    """The principal's description for 403 messages, or None if nothing matches."""
    if scheme == "apikey" and api_key is not None and value == api_key:
        try:
            key_id = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key_id = "unknown"
        return f"API key id [{key_id or 'unknown'}] of user [heartbeat]"
    if scheme == "basic" and basic is not None:
        expected = base64.b64encode(":".join(basic).encode()).decode()
        if value == expected:
            return f"user [{basic[0]}] with effective roles [heartbeat]"
    if scheme == "bearer" and bearer is not None and value == bearer:
        return "user [heartbeat] with effective roles [heartbeat]"
    return None


def _unauthenticated(reason: str) -> Reject:
    header = {"WWW-Authenticate": list(_WWW_AUTHENTICATE)}
    response = es_error(401, "security_exception", reason, header=header)
    for challenge in _WWW_AUTHENTICATE:
        response.headers.add("WWW-Authenticate", challenge)
    return Reject(response)
