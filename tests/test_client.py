"""The client against the emulator over loopback: the request on the wire and every
row of the outcomes table. No mocked HTTP."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr

from heartbeat.client import Client
from heartbeat.config import ElasticsearchSettings
from heartbeat.emulator import Emulator, Fault, serve
from heartbeat.errors import InvalidJobId
from heartbeat.outcomes import (
    Misrouted,
    NotFound,
    Outcome,
    Rejected,
    Retryable,
    Success,
    Unauthorized,
)
from tests.conftest import ES
from tests.strategies import job_ids
from tests.support import free_port


def settings_for(url: str | list[str], **extra: Any) -> ElasticsearchSettings:
    hosts = [url] if isinstance(url, str) else url
    return ElasticsearchSettings(hosts=hosts, **extra)


async def check_in(url: str | list[str], job_id: str, **extra: Any) -> Outcome:
    async with Client(settings_for(url, **extra)) as client:
        return await client.check_in(job_id)


# -- the request ------------------------------------------------------------------------


async def test_the_request_matches_the_official_client(es: ES) -> None:
    es.emu.api_key = "ZW5jb2RlZDprZXk="
    job = es.emu.create_job(job_id="my-job")
    outcome = await check_in(es.url, job, api_key=SecretStr("ZW5jb2RlZDprZXk="))
    assert outcome == Success(200)
    [request] = es.emu.checkins()
    assert request.method == "PUT"
    assert request.raw_path == "/_connector/_sync_job/my-job/_check_in"
    assert request.headers["Authorization"] == "ApiKey ZW5jb2RlZDprZXk="
    assert request.headers["Accept"] == "application/vnd.elasticsearch+json; compatible-with=8"
    assert request.headers["User-Agent"].startswith("heartbeat/0.1.0 (Python/")
    assert request.body == b""
    assert "Content-Type" not in request.headers
    assert es.emu.job(job)["last_seen"] != es.emu.job(job)["created_at"]  # type: ignore[index]


async def test_basic_auth(es: ES) -> None:
    es.emu.basic = ("heartbeat", "pa55word")
    job = es.emu.create_job()
    outcome = await check_in(es.url, job, username="heartbeat", password=SecretStr("pa55word"))
    assert outcome == Success(200)
    expected = base64.b64encode(b"heartbeat:pa55word").decode()
    assert es.emu.checkins()[0].headers["Authorization"] == f"Basic {expected}"


async def test_bearer_auth(es: ES) -> None:
    es.emu.bearer = "tok-123"
    job = es.emu.create_job()
    assert await check_in(es.url, job, bearer_token=SecretStr("tok-123")) == Success(200)
    assert es.emu.checkins()[0].headers["Authorization"] == "Bearer tok-123"


async def test_hostile_ids_reach_only_their_own_check_in_endpoint(es: ES) -> None:
    for job_id in ["../../_security/user", "a/b?c#d é", "..", ".", "%2F", "_check_in"]:
        es.emu.create_job(job_id=job_id)
        assert await check_in(es.url, job_id) == Success(200), job_id
    # Each new client reads GET / first (the cluster's identity), then the check-in.
    assert {r.raw_path for r in es.emu.requests if r.action == "info"} == {"/"}
    reached = [(r.action, r.job_id) for r in es.emu.requests if r.action != "info"]
    assert reached == [
        ("check_in", i)
        for i in ["../../_security/user", "a/b?c#d é", "..", ".", "%2F", "_check_in"]
    ]
    assert es.emu.checkins()[1].raw_path == "/_connector/_sync_job/a%2Fb%3Fc%23d%20%C3%A9/_check_in"
    assert es.emu.checkins()[2].raw_path == "/_connector/_sync_job/%2E%2E/_check_in"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(job_id=job_ids)
async def test_any_id_reaches_exactly_its_check_in_endpoint(es: ES, job_id: str) -> None:
    if es.emu.job(job_id) is None:
        es.emu.create_job(job_id=job_id)
    before = len(es.emu.requests)
    assert await check_in(es.url, job_id) == Success(200)
    [request] = [r for r in es.emu.requests[before:] if r.action != "info"]
    assert (request.method, request.action, request.job_id) == ("PUT", "check_in", job_id)
    segments = request.raw_path.split("/")
    assert len(segments) == 5 and segments[4] == "_check_in"


@pytest.mark.parametrize("bad", ["", "x" * 513, "a\nb", "tab\there"])
async def test_invalid_ids_are_refused_before_any_request(es: ES, bad: str) -> None:
    with pytest.raises(InvalidJobId):
        await check_in(es.url, bad)
    assert es.emu.requests == []


# -- the outcomes table -----------------------------------------------------------------


async def test_404_from_elasticsearch_is_not_found(es: ES) -> None:
    outcome = await check_in(es.url, "gone")
    assert outcome == NotFound("connector sync job [gone] not found")


async def test_404_without_product_header_is_misrouted(es: ES) -> None:
    job = es.emu.create_job()
    page = b"<html><body><h1>404 Not Found</h1>nginx</body></html>"
    es.emu.always(Fault(status=404, product_header=False, body=page, content_type="text/html"))
    outcome = await check_in(es.url, job)
    assert isinstance(outcome, Misrouted)
    assert "404 Not Found" in outcome.reason


async def test_404_with_another_error_type_is_misrouted(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=404, error_type="index_not_found_exception", reason="no such index"))
    assert isinstance(await check_in(es.url, job), Misrouted)


async def test_wrong_path_prefix_is_misrouted(es: ES) -> None:
    es.emu.create_job(job_id="job")
    # A base URL with a path prefix that the server does not know: a 400/404 that is not
    # about the job must never drop it.
    outcome = await check_in(es.url + "/kibana", "job")
    assert not isinstance(outcome, (NotFound, Rejected, Success))


@pytest.mark.parametrize("status", [401, 403])
async def test_unauthorized(es: ES, status: int) -> None:
    job = es.emu.create_job()
    if status == 401:
        es.emu.api_key = "right-key"
        outcome = await check_in(es.url, job, api_key=SecretStr("wrong-key"))
    else:
        es.emu.privileges = "monitor"
        outcome = await check_in(es.url, job)
    assert isinstance(outcome, Unauthorized)
    assert outcome.status == status


async def test_400_from_elasticsearch_is_rejected(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=400, error_type="illegal_argument_exception", reason="bad id"))
    assert await check_in(es.url, job) == Rejected(400, "bad id")


async def test_400_without_product_header_is_misrouted(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(
        Fault(status=400, product_header=False, body=b"Bad Request", content_type="text/plain")
    )
    assert isinstance(await check_in(es.url, job), Misrouted)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses(es: ES, status: int) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=status))
    outcome = await check_in(es.url, job)
    assert isinstance(outcome, Retryable)
    assert (outcome.error, outcome.status) == ("http", status)
    assert outcome.job_specific == (status == 409)


async def test_retry_after_seconds_and_date(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.script([Fault(status=429, retry_after="17")], job_id=job)
    first = await check_in(es.url, job)
    assert isinstance(first, Retryable) and first.retry_after == 17.0
    es.emu.script(
        [Fault(status=503, retry_after=email.utils.formatdate(time.time() + 120, usegmt=True))]
    )
    second = await check_in(es.url, job)
    assert isinstance(second, Retryable)
    assert second.retry_after is not None and 100 < second.retry_after <= 120


async def test_2xx_without_product_header_is_not_a_success(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=200, product_header=False, body=b'{"result":"updated"}'))
    assert isinstance(await check_in(es.url, job), Misrouted)


async def test_2xx_with_garbage_body_is_malformed(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=200, body=b"<html>surprise", content_type="text/html"))
    outcome = await check_in(es.url, job)
    assert isinstance(outcome, Retryable) and outcome.error == "malformed"


@pytest.mark.parametrize(
    ("body", "succeeded"),
    [
        (b'{"result":"updated"}', True),  # what Elasticsearch answers: not even parsed
        (b'{\n  "result" : "updated"\n}', True),  # ?pretty, or a proxy re-encoding it
        (b'{"result":"noop"}', True),
        (b"", True),
        (b'{"result":"updated"', False),  # cut short
        (b'{"result":"updated"}garbage', False),
    ],
)
async def test_a_2xx_body_must_be_json(es: ES, body: bytes, succeeded: bool) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(status=200, body=body))
    outcome = await check_in(es.url, job)
    if succeeded:
        assert outcome == Success(200)
    else:
        assert isinstance(outcome, Retryable) and outcome.error == "malformed", outcome


async def test_timeout(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(delay=5.0))
    outcome = await check_in(es.url, job, request_timeout=0.3)
    assert isinstance(outcome, Retryable) and outcome.error == "timeout"


async def test_connection_reset(es: ES) -> None:
    job = es.emu.create_job()
    es.emu.always(Fault(reset=True))
    outcome = await check_in(es.url, job)
    assert isinstance(outcome, Retryable) and outcome.error == "connection"


async def test_connection_refused() -> None:
    outcome = await check_in(f"http://127.0.0.1:{free_port()}", "job")
    assert isinstance(outcome, Retryable) and outcome.error == "connection"


async def test_next_host_is_tried_on_connection_error(es: ES) -> None:
    job = es.emu.create_job()
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client(settings_for([dead, es.url])) as client:
        assert await client.check_in(job) == Success(200)
        assert client.base_url == es.url
        assert await client.check_in(job) == Success(200)
    assert len(es.emu.checkins()) == 2


async def test_get_job(es: ES) -> None:
    job = es.emu.create_job(status="completed")
    async with Client(settings_for(es.url)) as client:
        document = await client.get_job(job)
        assert isinstance(document, dict) and document["status"] == "completed"
        assert isinstance(await client.get_job("missing"), NotFound)


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_es(ca: trustme.CA) -> AsyncIterator[tuple[Emulator, str, bytes]]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    emulator = Emulator()
    async with serve(emulator, ssl_context=context) as url:
        yield emulator, url, der


async def test_tls_is_verified_by_default(tls_es: tuple[Emulator, str, bytes]) -> None:
    emulator, url, _ = tls_es
    job = emulator.create_job()
    outcome = await check_in(url, job)
    assert isinstance(outcome, Retryable) and outcome.error == "tls"
    assert emulator.checkins() == []


async def test_tls_with_ca_certs(
    tls_es: tuple[Emulator, str, bytes], ca: trustme.CA, tmp_path: Path
) -> None:
    emulator, url, _ = tls_es
    job = emulator.create_job()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    assert await check_in(url, job, ca_certs=ca_file) == Success(200)


async def test_tls_with_fingerprint(tls_es: tuple[Emulator, str, bytes]) -> None:
    emulator, url, der = tls_es
    job = emulator.create_job()
    good = hashlib.sha256(der).hexdigest()
    assert await check_in(url, job, ssl_assert_fingerprint=good) == Success(200)
    wrong = hashlib.sha256(b"another certificate").hexdigest()
    outcome = await check_in(url, job, ssl_assert_fingerprint=wrong)
    assert isinstance(outcome, Retryable) and outcome.error == "tls"
