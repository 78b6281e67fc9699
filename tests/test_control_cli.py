"""``heartbeat jobs`` as a subprocess against a Heartbeat serving the control API in
this process: many ids in batches, and the daemon found from ``[control] listen``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from heartbeat.control import MAX_BODY, ControlSource
from tests.conftest import ES
from tests.helpers_control import QUIET, short_dir
from tests.support import heartbeat_cli, make_config, running

TOKEN = "t0ken-for-the-control-api"


@pytest.mark.parametrize(
    "ids",
    [
        [f"sync-job-{n:05}-{'x' * 24}" for n in range(5000)],  # ~210 KiB as one body
        [f"{n:05}" for n in range(20000)],  # short ids: the ", " between them counts
    ],
    ids=["5000-ids", "20000-short-ids"],
)
async def test_adding_many_ids_goes_in_batches_under_the_body_limit(es: ES, ids: list[str]) -> None:
    assert len(json.dumps({"ids": ids})) > 2.5 * MAX_BODY
    for job_id in ids:
        es.emu.create_job(job_id=job_id)  # not dropped by a 404 while the test looks
    with short_dir() as tmp, capture_logs():
        sock = tmp / "c.sock"
        config = make_config(es.url, QUIET, jobs={"ids": ids[:10]}, control={"socket": sock})
        async with running(config, "file", "control") as (hb, _):
            code, out, err = await heartbeat_cli("jobs", "--socket", str(sock), "add", *ids)
            watched = set(hb.scheduler.watchlist.claims())
    assert code == 0, err
    assert watched == set(ids)
    lines = out.splitlines()
    assert lines[: len(ids) - 10] == [f"added: {job_id}" for job_id in ids[10:]]
    assert lines[len(ids) - 10 :] == [f"already watched: {job_id}" for job_id in ids[:10]]
    reports = err.splitlines()
    batches = len(reports)
    assert batches >= 3
    first = int(reports[0].split(": ")[1].split()[0])
    assert reports[0] == f"batch 1/{batches}: {first} ids, {first - 10} added, 10 already watched"
    total = 0
    for number, line in enumerate(reports, 1):
        assert line.startswith(f"batch {number}/{batches}: "), line
        total += int(line.split(": ")[1].split()[0])
    assert total == len(ids)


async def test_jobs_finds_the_daemon_from_control_listen_and_token_file(
    es: ES, tmp_path: Path
) -> None:
    es.emu.create_job(job_id="by-listen")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = make_config(es.url, QUIET, control={"listen": "127.0.0.1:0", "token": TOKEN})
    with capture_logs():
        async with running(config, "file", "control") as (hb, sources):
            source = sources["control"]
            assert isinstance(source, ControlSource) and source.url is not None
            port = source.url.rsplit(":", 1)[1]
            file = tmp_path / "hb.toml"
            file.write_text(
                f"[control]\nsocket = ''\nlisten = '127.0.0.1:{port}'\n"
                f"token_file = '{token_file}'\n"
            )
            code, out, err = await heartbeat_cli("jobs", "--config", str(file), "add", "by-listen")
            assert (code, out, err) == (0, "added: by-listen\n", "")
            assert "by-listen" in hb.scheduler.watchlist.claims()
            # Without the token file, the daemon's 401 is reported, naming what to give.
            file.write_text(f"[control]\nlisten = '127.0.0.1:{port}'\n")
            code, _, err = await heartbeat_cli("jobs", "--config", str(file), "list")
            assert code == 2
            assert "401, missing or wrong token" in err
