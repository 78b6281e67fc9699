"""The :class:`Emulator`: one aiohttp request handler in front of the job store.

Owns the emulator's settings (credentials, privileges, version), its request log
(:class:`RecordedRequest`), its fault plan, and the order a request goes through in
:meth:`Emulator.handle`: ``/_emulator`` to the control API; anything else is routed,
recorded, given its fault (delay, reset or scripted answer; before the credential
check, as a proxy or a struggling cluster would answer), then checked and answered. The
steps themselves live in the sibling modules (``routing``, ``faults``, ``auth``,
``api``, ``control``); the jobs in ``store``, which :class:`Emulator` extends; a
:class:`~heartbeat.emulator.wire.RecordedRequest` in ``wire``. It does not open sockets:
``server`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from heartbeat.emulator import api
from heartbeat.emulator.auth import Privileges, check_credentials
from heartbeat.emulator.control import handle_control
from heartbeat.emulator.faults import Fault, FaultPlan, fault_response
from heartbeat.emulator.routing import decode_path, route
from heartbeat.emulator.store import JobStore, utcnow
from heartbeat.emulator.wire import PRODUCT, RecordedRequest, Reject


class Emulator(JobStore):
    """The sync-job store, its HTTP handler, the request log and the fault plan."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        privileges: Privileges = "manage",
        version: str = "9.1.0",
        cluster_uuid: str = "emulator",
        cluster_name: str = "heartbeat-emulator",
        now: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(now)
        self.api_key = api_key
        self.basic = basic
        self.bearer = bearer
        self.privileges: Privileges = privileges
        self.version = version
        #: What ``GET /`` says (heartbeat checks it before trusting a 404).
        self.cluster_uuid = cluster_uuid
        self.cluster_name = cluster_name
        self.requests: list[RecordedRequest] = []
        self.faults = FaultPlan()
        self._monotonic = monotonic

    def __repr__(self) -> str:  # credentials stay out of reprs
        return f"<Emulator jobs={len(self.records())} requests={len(self.requests)}>"

    # -- Python API (the jobs' own is inherited from JobStore) --------------------------

    def checkins(self, job_id: str | None = None) -> list[RecordedRequest]:
        """Recorded check-in requests, all of them or those naming ``job_id``."""
        return [
            record
            for record in self.requests
            if record.action == "check_in" and (job_id is None or record.job_id == job_id)
        ]

    def script(self, faults: Iterable[Fault], job_id: str | None = None) -> None:
        self.faults.script(faults, job_id)

    def always(self, fault: Fault | None, job_id: str | None = None) -> None:
        self.faults.always(fault, job_id)

    # -- HTTP -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The one request handler: control API, or record, fault and answer."""
        segments = decode_path(request.raw_path)
        if segments and segments[0] == "_emulator":
            return await handle_control(self, request, segments[1:])
        body = await request.read()
        action: str | None = None
        job_id: str | None = None
        answer: web.Response | None = None
        try:
            action, job_id = route(request.method, request.raw_path, segments)
        except Reject as rejected:
            answer = rejected.response
        record = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            job_id=job_id,
            action=action,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            at=self._monotonic(),
        )
        self.requests.append(record)
        fault = None if action is None else self.faults.take(action, job_id)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.reset:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault is not None and (fault.status is not None or fault.body is not None):
            answer = fault_response(fault, job_id)
        elif action is not None:
            answer = self._answer(request, action, job_id, body)
        assert answer is not None  # routed, or the router's rejection
        if fault is not None:
            if fault.retry_after is not None:
                answer.headers["Retry-After"] = fault.retry_after
            if not fault.product_header:
                answer.headers.popall(PRODUCT, None)
        record.status = answer.status
        return answer

    def _answer(
        self, request: web.BaseRequest, action: str, job_id: str | None, body: bytes
    ) -> web.Response:
        try:
            check_credentials(
                request,
                action,
                api_key=self.api_key,
                basic=self.basic,
                bearer=self.bearer,
                privileges=self.privileges,
            )
            api.check_request(request, action, job_id, body, version=self.version)
            return api.execute(
                self,
                request,
                action,
                job_id,
                body,
                version=self.version,
                cluster=(self.cluster_uuid, self.cluster_name),
            )
        except Reject as rejected:
            return rejected.response
