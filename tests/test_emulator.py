"""The emulator, exercised over real loopback HTTP with aiohttp's client (no mocks)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import pytest
import trustme
import yarl
from hypothesis import given
from hypothesis import strategies as st

from heartbeat.emulator import Emulator, Fault, decode_path, run_emulator, serve

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOSTILE_IDS = ["a/b?c#d é", "..", ".", "%", "%2F", "../../_security/user", " ", "x y+z", "日本"]


class Clock:
    """A settable `now` for the emulator."""

    def __init__(self) -> None:
        self.moment = T0

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> datetime:
        self.moment += timedelta(seconds=seconds)
        return self.moment


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def segment(job_id: str) -> str:
    """The id as one path segment, encoded the way the client and the official client do."""
    encoded = quote(job_id, safe=",*")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def at(base: str, path: str) -> yarl.URL:
    """A URL whose path yarl sends exactly as written (a plain string would be normalised)."""
    return yarl.URL(base + path, encoded=True)


def stored(emulator: Emulator, job_id: str) -> dict[str, Any]:
    """The job's document, which must exist."""
    document = emulator.job(job_id)
    assert document is not None, job_id
    return document


def job_url(base: str, job_id: str, suffix: str = "") -> yarl.URL:
    return at(base, f"/_connector/_sync_job/{segment(job_id)}{suffix}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> Emulator:
    """Overrides conftest's emulator: same thing, with a settable clock."""
    return Emulator(now=clock)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: yarl.URL | str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Status, parsed JSON body (or raw bytes if not JSON), and the response."""
    async with http.request(method, url, **kwargs) as response:
        raw = await response.read()
    try:
        return response.status, json.loads(raw), response
    except ValueError:
        return response.status, raw, response


def envelope(status: int, error_type: str, reason: str) -> dict[str, Any]:
    cause = {"type": error_type, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


# -- the sync-job API -------------------------------------------------------------------


async def test_create_then_get(
    emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    url = f"{emulator_url}/_connector/_sync_job"
    status, body, response = await call(http, "POST", url, json={"id": "c1", "job_type": "full"})
    assert status == 201
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    assert response.headers["Content-Type"] == "application/json"
    job_id = body["id"]
    assert len(job_id) == 20
    assert quote(job_id, safe="") == job_id  # url-safe as it stands

    status, doc, _ = await call(http, "GET", job_url(emulator_url, job_id))
    assert status == 200
    assert doc["id"] == job_id
    assert doc["status"] == "pending"
    assert doc["connector"] == {"id": "c1"}
    assert doc["job_type"] == "full"
    assert doc["last_seen"] == doc["created_at"] == iso(clock.moment)
    assert doc["worker_hostname"] is None
    assert doc["started_at"] is doc["completed_at"] is doc["error"] is None


async def test_create_refuses_a_missing_or_empty_connector_id(
    emulator_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{emulator_url}/_connector/_sync_job"
    status, body, _ = await call(http, "POST", url, json={"job_type": "full"})
    assert (status, body["error"]["type"]) == (400, "illegal_argument_exception")
    status, body, _ = await call(http, "POST", url, json={"id": ""})
    assert status == 400
    assert body["error"]["type"] == "action_request_validation_exception"
    status, body, _ = await call(http, "POST", url)
    assert (status, body["error"]["reason"]) == (400, "request body is required")
    status, body, _ = await call(http, "POST", url, json={"id": "c1", "bogus": 1})
    assert (status, body["error"]["type"]) == (400, "x_content_parse_exception")


async def test_list_is_newest_first_paginated_and_filtered(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    ids = []
    for n in range(5):
        clock.advance(1)
        status = "in_progress" if n % 2 == 0 else "completed"
        ids.append(emulator.create_job(connector_id=f"c{n % 2}", status=status))
    newest_first = ids[::-1]
    url = f"{emulator_url}/_connector/_sync_job"

    _, page, _ = await call(http, "GET", url, params={"from": "1", "size": "2"})
    assert page["count"] == 5
    assert [job["id"] for job in page["results"]] == newest_first[1:3]

    _, page, _ = await call(http, "GET", url, params={"status": "in_progress"})
    assert [job["id"] for job in page["results"]] == [ids[4], ids[2], ids[0]]
    _, page, _ = await call(http, "GET", url, params={"connector_id": "c1"})
    assert [job["id"] for job in page["results"]] == [ids[3], ids[1]]
    _, page, _ = await call(http, "GET", url, params={"status": "canceled"})
    assert page == {"count": 0, "results": []}


async def test_list_refuses_an_unknown_status_and_bad_paging(
    emulator_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{emulator_url}/_connector/_sync_job"
    status, body, response = await call(http, "GET", url, params={"status": "running"})
    assert status == 400
    assert body == envelope(
        400, "illegal_argument_exception", "Unknown ConnectorSyncStatus [running]."
    )
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    status, body, _ = await call(http, "GET", url, params={"from": "-1"})
    assert (status, body["error"]["type"]) == (400, "action_request_validation_exception")
    status, body, _ = await call(http, "GET", url, params={"size": "ten"})
    assert (status, body["error"]["type"]) == (400, "illegal_argument_exception")
    status, body, _ = await call(http, "GET", url, params={"sort": "asc"})
    assert status == 400
    assert body["error"]["reason"] == (
        "request [/_connector/_sync_job] contains unrecognized parameter: [sort]"
    )


async def test_check_in_sets_last_seen_and_answers_like_elasticsearch(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    job_id = emulator.create_job()
    later = clock.advance(42)
    async with http.put(job_url(emulator_url, job_id, "/_check_in")) as response:
        assert response.status == 200
        assert await response.read() == b'{"result":"updated"}'
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"
        assert response.headers["Content-Type"] == "application/json"
    job = emulator.job(job_id)
    assert job is not None
    assert job["last_seen"] == iso(later)
    assert job["status"] == "in_progress"
    assert len(emulator.checkins(job_id)) == 1


@pytest.mark.parametrize("status", ["completed", "canceled", "error", "pending"])
async def test_check_in_works_whatever_the_status(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, status: str
) -> None:
    job_id = emulator.create_job(status=status)
    code, body, _ = await call(http, "PUT", job_url(emulator_url, job_id, "/_check_in"))
    assert (code, body) == (200, {"result": "updated"})
    assert stored(emulator, job_id)["status"] == status


async def test_a_missing_job_answers_the_exact_404_envelope(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    emulator.delete_job(job_id)
    async with http.put(job_url(emulator_url, job_id, "/_check_in")) as response:
        raw = await response.read()
        assert response.status == 404
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    reason = f"connector sync job [{job_id}] not found"
    assert raw == (
        b'{"error":{"root_cause":[{"type":"resource_not_found_exception","reason":"'
        + reason.encode()
        + b'"}],"type":"resource_not_found_exception","reason":"'
        + reason.encode()
        + b'"},"status":404}'
    )
    status, body, _ = await call(http, "GET", job_url(emulator_url, job_id))
    assert (status, body) == (404, envelope(404, "resource_not_found_exception", reason))


async def test_check_in_refuses_a_body_parameters_and_an_empty_id(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    url = job_url(emulator_url, job_id, "/_check_in")
    status, body, _ = await call(http, "PUT", url, data=b"{}")
    assert status == 400
    assert body["error"]["reason"] == (
        f"request [PUT /_connector/_sync_job/{job_id}/_check_in] does not support having a body"
    )
    status, body, _ = await call(http, "PUT", url.with_query(refresh="true"))
    assert (status, body["error"]["type"]) == (400, "illegal_argument_exception")
    status, body, _ = await call(http, "PUT", at(emulator_url, "/_connector/_sync_job//_check_in"))
    assert status == 400
    assert body["error"]["type"] == "action_request_validation_exception"
    assert (
        "[connector_sync_job_id] of the connector sync job cannot be null or empty."
        in (body["error"]["reason"])
    )
    assert stored(emulator, job_id)["last_seen"] == stored(emulator, job_id)["created_at"]


async def test_claim_cancel_error_and_delete(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    job_id = emulator.create_job(status="pending")
    later = clock.advance(5)
    claim = job_url(emulator_url, job_id, "/_claim")
    status, body, _ = await call(http, "PUT", claim, json={"worker_hostname": "w1"})
    assert (status, body) == (200, {"result": "updated"})
    job = emulator.job(job_id)
    assert job is not None
    assert (job["status"], job["worker_hostname"]) == ("in_progress", "w1")
    assert job["started_at"] == job["last_seen"] == iso(later)
    status, _, _ = await call(http, "PUT", claim, json={})
    assert status == 400

    cancel = job_url(emulator_url, job_id, "/_cancel")
    assert (await call(http, "PUT", cancel))[:2] == (200, {"result": "updated"})
    assert stored(emulator, job_id)["status"] == "canceling"
    status, body, _ = await call(http, "PUT", cancel)  # canceling -> canceling is no transition
    assert (status, body["error"]["type"]) == (400, "status_exception")

    pending = emulator.create_job(status="pending")
    await call(http, "PUT", job_url(emulator_url, pending, "/_cancel"))
    assert stored(emulator, pending)["status"] == "canceled"

    error = job_url(emulator_url, job_id, "/_error")
    status, body, _ = await call(http, "PUT", error, json={"error": "disk full"})
    assert (status, body) == (200, {"result": "updated"})
    assert stored(emulator, job_id)["status"] == "error"
    assert stored(emulator, job_id)["error"] == "disk full"
    assert (await call(http, "PUT", error, json={"error": ""}))[0] == 400

    status, body, _ = await call(http, "DELETE", job_url(emulator_url, job_id))
    assert (status, body) == (200, {"acknowledged": True})
    assert emulator.job(job_id) is None
    assert (await call(http, "DELETE", job_url(emulator_url, job_id)))[0] == 404


async def test_set_status_completes_a_job(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    job_id = emulator.create_job(worker_hostname="w1")
    done = clock.advance(9)
    emulator.set_status(job_id, "completed")
    _, doc, _ = await call(http, "GET", job_url(emulator_url, job_id))
    assert (doc["status"], doc["completed_at"], doc["worker_hostname"]) == (
        "completed",
        iso(done),
        "w1",
    )
    with pytest.raises(ValueError, match="unknown status"):
        emulator.set_status(job_id, "done")


async def test_unknown_paths_and_wrong_methods(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    status, body, response = await call(http, "GET", job_url(emulator_url, job_id, "/_check_in"))
    assert status == 405
    assert body == {
        "error": f"Incorrect HTTP method for uri [/_connector/_sync_job/{job_id}/_check_in] "
        "and method [GET], allowed: [PUT]",
        "status": 405,
    }
    assert response.headers["Allow"] == "PUT"
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    status, body, _ = await call(http, "PUT", at(emulator_url, "/_connector/_syncjob/x/_check_in"))
    assert status == 400
    assert body == {
        "error": "no handler found for uri [/_connector/_syncjob/x/_check_in] and method [PUT]",
        "status": 400,
    }
    status, body, _ = await call(http, "GET", emulator_url + "/")
    assert (status, body["tagline"]) == (200, "You Know, for Search")


async def test_compatible_with_header_follows_the_server_major(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    url = job_url(emulator_url, job_id, "/_check_in")
    accept = "application/vnd.elasticsearch+json; compatible-with={}"
    assert (await call(http, "PUT", url, headers={"Accept": accept.format(8)}))[0] == 200
    emulator.version = "8.15.0"
    status, body, _ = await call(http, "PUT", url, headers={"Accept": accept.format(9)})
    assert (status, body["error"]["type"]) == (400, "media_type_header_exception")


async def test_requests_are_recorded_as_they_arrived(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    before = time.monotonic()
    url = job_url(emulator_url, job_id, "/_check_in")
    await call(http, "PUT", url, headers={"Authorization": "ApiKey k", "User-Agent": "hb/1"})
    await call(http, "GET", emulator_url + "/nowhere")
    checkin, stray = emulator.requests
    assert (checkin.method, checkin.raw_path, checkin.job_id) == ("PUT", url.raw_path, job_id)
    assert (checkin.action, checkin.status, checkin.body) == ("check_in", 200, b"")
    assert checkin.headers["authorization"] == "ApiKey k"
    assert checkin.headers["User-Agent"] == "hb/1"
    assert before <= checkin.at <= stray.at <= time.monotonic()
    assert (stray.action, stray.job_id, stray.status) == (None, None, 400)
    assert emulator.checkins() == [checkin]


# -- credentials ------------------------------------------------------------------------


async def test_api_key_is_required_when_configured(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    emulator.api_key = "aWQxOnNlY3JldA=="  # base64("id1:secret")
    job_id = emulator.create_job()
    url = job_url(emulator_url, job_id, "/_check_in")

    status, body, response = await call(http, "PUT", url)
    assert status == 401
    assert body["error"]["type"] == "security_exception"
    assert body["error"]["reason"] == (
        f"missing authentication credentials for REST request "
        f"[/_connector/_sync_job/{job_id}/_check_in]"
    )
    assert response.headers.getall("WWW-Authenticate") == [
        'Basic realm="security", charset="UTF-8"',
        'Bearer realm="security"',
        "ApiKey",
    ]
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"

    wrong = {"Authorization": "ApiKey aWQxOndyb25n"}
    assert (await call(http, "PUT", url, headers=wrong))[0] == 401
    right = {"Authorization": "ApiKey aWQxOnNlY3JldA=="}
    assert (await call(http, "PUT", url, headers=right))[:2] == (200, {"result": "updated"})
    assert (await call(http, "PUT", url, headers={"Authorization": "Basic eDp5"}))[0] == 401

    emulator.privileges = "monitor"
    status, body, _ = await call(http, "PUT", url, headers=right)
    assert status == 403
    assert body["error"]["type"] == "security_exception"
    assert body["error"]["reason"].startswith(
        "action [cluster:admin/xpack/connector/sync_job/check_in] is unauthorized for "
        "API key id [id1]"
    )
    assert (await call(http, "GET", job_url(emulator_url, job_id), headers=right))[0] == 200
    emulator.privileges = "none"
    assert (await call(http, "GET", job_url(emulator_url, job_id), headers=right))[0] == 403


async def test_basic_and_bearer_credentials(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    emulator.basic = ("elastic", "changeme")
    emulator.bearer = "tok"
    url = job_url(emulator_url, emulator.create_job(), "/_check_in")
    good = {"Authorization": aiohttp.encode_basic_auth("elastic", "changeme")}
    assert (await call(http, "PUT", url, headers=good))[0] == 200
    bad = {"Authorization": aiohttp.encode_basic_auth("elastic", "nope")}
    assert (await call(http, "PUT", url, headers=bad))[0] == 401
    assert (await call(http, "PUT", url, headers={"Authorization": "Bearer tok"}))[0] == 200
    assert (await call(http, "PUT", url, headers={"Authorization": "Bearer tok2"}))[0] == 401


# -- faults -----------------------------------------------------------------------------


async def test_scripted_faults_answer_in_order_then_the_real_thing(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id, other = emulator.create_job(), emulator.create_job()
    emulator.script([Fault(status=503), Fault(status=429, retry_after="7")], job_id=job_id)
    url = job_url(emulator_url, job_id, "/_check_in")

    status, body, response = await call(http, "PUT", url)
    assert (status, body["error"]["type"]) == (503, "unavailable_shards_exception")
    assert body["status"] == 503
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    assert (await call(http, "PUT", job_url(emulator_url, other, "/_check_in")))[0] == 200
    status, body, response = await call(http, "PUT", url)
    assert (status, body["error"]["type"]) == (429, "es_rejected_execution_exception")
    assert response.headers["Retry-After"] == "7"
    assert (await call(http, "PUT", url))[:2] == (200, {"result": "updated"})
    assert emulator.faults.pending(job_id) == 0
    assert [r.status for r in emulator.checkins(job_id)] == [503, 429, 200]
    # faults only touch check-ins by default
    emulator.script([Fault(status=503)])
    assert (await call(http, "GET", job_url(emulator_url, job_id)))[0] == 200
    assert (await call(http, "PUT", url))[0] == 503


async def test_persistent_fault_until_cleared_and_for_every_action(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    emulator.always(Fault(status=409, actions=frozenset({"*"})))
    for _ in range(3):
        status, body, _ = await call(http, "PUT", job_url(emulator_url, job_id, "/_check_in"))
        assert (status, body["error"]["type"]) == (409, "version_conflict_engine_exception")
    assert (await call(http, "GET", f"{emulator_url}/_connector/_sync_job"))[0] == 409
    emulator.always(None)
    assert (await call(http, "PUT", job_url(emulator_url, job_id, "/_check_in")))[0] == 200


async def test_delay_fault_holds_the_answer(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    url = job_url(emulator_url, emulator.create_job(), "/_check_in")
    emulator.script([Fault(delay=0.2)])
    started = time.monotonic()
    assert (await call(http, "PUT", url))[0] == 200
    assert time.monotonic() - started >= 0.2

    emulator.script([Fault(delay=2.0)])
    with pytest.raises(asyncio.TimeoutError):
        await call(http, "PUT", url, timeout=aiohttp.ClientTimeout(total=0.1))
    assert emulator.checkins()[-1].status is None  # never answered


async def test_reset_fault_cuts_the_connection(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = emulator.create_job()
    url = job_url(emulator_url, job_id, "/_check_in")
    emulator.script([Fault(reset=True), Fault(reset=True)])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, "PUT", url)
    # aiohttp's client silently resends an idempotent request (PUT included) once after a
    # disconnect, so one client call met both resets; a single reset goes unnoticed.
    assert [r.status for r in emulator.checkins()] == [None, None]
    emulator.script([Fault(reset=True)])
    assert (await call(http, "PUT", url))[0] == 200
    assert [r.status for r in emulator.checkins()] == [None, None, None, 200]
    # POST is not idempotent: no resend, the error surfaces at once
    emulator.script([Fault(reset=True, actions=frozenset({"post"}))])
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, "POST", f"{emulator_url}/_connector/_sync_job", json={"id": "c1"})


async def test_proxy_answers_have_no_product_header(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    url = job_url(emulator_url, emulator.create_job(), "/_check_in")
    emulator.script(
        [
            Fault(product_header=False),
            Fault(
                status=404,
                product_header=False,
                body=b"<html><body>404 Not Found</body></html>",
                content_type="text/html",
            ),
            Fault(status=502, product_header=False, body=b"Bad Gateway", content_type="text/plain"),
        ]
    )
    status, body, response = await call(http, "PUT", url)
    assert (status, body) == (200, {"result": "updated"})
    assert "X-Elastic-Product" not in response.headers
    status, body, response = await call(http, "PUT", url)
    assert (status, body) == (404, b"<html><body>404 Not Found</body></html>")
    assert response.headers["Content-Type"] == "text/html"
    assert "X-Elastic-Product" not in response.headers
    status, body, response = await call(http, "PUT", url)
    assert (status, body, response.content_type) == (502, b"Bad Gateway", "text/plain")


def test_fault_json_round_trip() -> None:
    fault = Fault(status=503, retry_after="2", delay=0.5, body=b"x", actions=frozenset({"*"}))
    assert Fault.from_json(json.loads(json.dumps(fault.to_json()))) == fault
    assert Fault.from_json({}) == Fault()
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"code": 503})


# -- job ids that try to escape their segment --------------------------------------------


async def test_hostile_ids_reach_exactly_their_job(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, clock: Clock
) -> None:
    for job_id in [*HOSTILE_IDS, "user", "_security", "b"]:
        emulator.create_job(job_id=job_id)
    for job_id in HOSTILE_IDS:
        later = clock.advance(1)
        url = job_url(emulator_url, job_id, "/_check_in")
        assert (await call(http, "PUT", url))[:2] == (200, {"result": "updated"}), job_id
        assert stored(emulator, job_id)["last_seen"] == iso(later)
        _, doc, _ = await call(http, "GET", job_url(emulator_url, job_id))
        assert doc["id"] == job_id
    assert [r.job_id for r in emulator.checkins()] == HOSTILE_IDS
    for untouched in ("user", "_security", "b"):
        assert stored(emulator, untouched)["last_seen"] == iso(T0)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/_connector/_sync_job/../../_security/user/_check_in",
        "/_connector/_sync_job/../_check_in",
        "/_connector/_sync_job/./_check_in",
        "/_connector/_sync_job/a/b/_check_in",
    ],
)
async def test_unencoded_paths_reach_no_job(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession, raw_path: str
) -> None:
    for job_id in ["..", ".", "../../_security/user", "user", "a/b", "a", "b"]:
        emulator.create_job(job_id=job_id)
    status, body, _ = await call(http, "PUT", at(emulator_url, raw_path))
    assert status == 400
    assert body["error"].startswith("no handler found for uri")
    assert emulator.checkins() == []
    assert emulator.requests[-1].raw_path == raw_path
    assert emulator.requests[-1].job_id is None


async def test_malformed_escape_in_an_id_is_refused(
    emulator_url: str, http: aiohttp.ClientSession
) -> None:
    for raw in ["%zz", "%", "%C3"]:
        url = at(emulator_url, f"/_connector/_sync_job/{raw}/_check_in")
        status, body, _ = await call(http, "PUT", url)
        assert (status, body["error"]["type"]) == (400, "illegal_argument_exception"), raw


def test_yarl_normalises_a_plain_string_url() -> None:
    """Why the tests build URLs with encoded=True: yarl resolves %2E%2E from a plain string."""
    plain = yarl.URL("http://h/_connector/_sync_job/%2E%2E/_check_in")
    assert plain.raw_path == "/_connector/_check_in"
    exact = yarl.URL("http://h/_connector/_sync_job/%2E%2E/_check_in", encoded=True)
    assert exact.raw_path == "/_connector/_sync_job/%2E%2E/_check_in"


@given(st.text(min_size=1, max_size=40))
def test_any_id_decodes_back_from_its_segment(job_id: str) -> None:
    path = f"/_connector/_sync_job/{segment(job_id)}/_check_in?x=1"
    segments = decode_path(path)
    assert segments is not None
    assert len(segments) == 4
    assert segments[3] == "_check_in"
    assert unquote(segments[2], errors="strict") == job_id


# -- control API and running it ---------------------------------------------------------


async def test_control_api(
    emulator: Emulator, emulator_url: str, http: aiohttp.ClientSession
) -> None:
    emulator.api_key = "k"  # the control API needs none
    control = f"{emulator_url}/_emulator"
    status, body, _ = await call(
        http, "POST", f"{control}/jobs", json={"job_id": "a/b", "worker_hostname": "w"}
    )
    assert (status, body) == (200, {"id": "a/b"})
    assert stored(emulator, "a/b")["worker_hostname"] == "w"
    status, body, _ = await call(
        http, "PUT", at(control, "/jobs/a%2Fb/status"), json={"status": "completed"}
    )
    assert (status, body["status"]) == (200, "completed")
    assert (await call(http, "PUT", at(control, "/jobs/nope/status"), json={}))[0] == 404

    faults = {"mode": "script", "job_id": "a/b", "faults": [Fault(status=503).to_json()]}
    assert (await call(http, "POST", f"{control}/faults", json=faults))[0] == 200
    assert emulator.faults.pending("a/b") == 1
    always = {"mode": "always", "faults": [{"status": 500}]}
    assert (await call(http, "POST", f"{control}/faults", json=always))[0] == 200
    bad = {"mode": "always", "faults": [{"status": 500}, {"status": 503}]}
    assert (await call(http, "POST", f"{control}/faults", json=bad))[0] == 400
    assert (await call(http, "POST", f"{control}/faults", json={"faults": [{"x": 1}]}))[0] == 400

    key = {"Authorization": "ApiKey k"}
    url = job_url(emulator_url, "a/b", "/_check_in")
    assert (await call(http, "PUT", url, headers=key))[0] == 503
    assert (await call(http, "PUT", url, headers=key))[0] == 500
    assert (await call(http, "DELETE", f"{control}/faults"))[0] == 200
    assert (await call(http, "PUT", url, headers=key))[0] == 200

    status, summary, _ = await call(http, "GET", f"{control}/requests")
    assert summary == {"total": 3, "by_action": {"check_in": 3}, "check_ins": {"a/b": 3}}
    assert (await call(http, "PUT", f"{control}/auth", json={"privileges": "none"}))[0] == 200
    assert (await call(http, "PUT", url, headers=key))[0] == 403
    assert (await call(http, "PUT", f"{control}/auth", json={"privileges": "root"}))[0] == 400
    assert (await call(http, "DELETE", f"{control}/requests"))[0] == 200
    assert emulator.requests == []
    assert (await call(http, "GET", f"{control}/nothing"))[0] == 404


async def test_es_fixture_bundles_emulator_and_url(
    es: tuple[Emulator, str], http: aiohttp.ClientSession
) -> None:
    emu, url = es
    job_id = emu.create_job()
    assert (await call(http, "PUT", job_url(url, job_id, "/_check_in")))[0] == 200
    assert len(emu.checkins(job_id)) == 1


async def test_serve_over_tls() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    emulator = Emulator()
    job_id = emulator.create_job()
    async with (
        serve(emulator, host="localhost", ssl_context=server_context) as url,
        aiohttp.ClientSession() as http,
    ):
        assert url.startswith("https://localhost:")
        status, body, _ = await call(
            http, "PUT", job_url(url, job_id, "/_check_in"), ssl=client_context
        )
        assert (status, body) == (200, {"result": "updated"})


async def test_run_emulator_prints_its_url_and_serves(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_emulator("127.0.0.1", 0, "k"))
    try:
        output = ""
        while "url=" not in output:
            await asyncio.sleep(0.01)
            output += capsys.readouterr().out
        url = output.split("url=", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            assert (await call(http, "GET", url + "/"))[0] == 401
            assert (await call(http, "GET", url + "/", headers={"Authorization": "ApiKey k"}))[
                0
            ] == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
