"""The alert rules and the dashboard in deploy/, checked with the real promtool and
against a real daemon's /metrics.

- ``promtool check rules`` and ``promtool test rules`` on deploy/prometheus/;
- every alert is unit-tested both firing and quiet, and carries a summary and a
  runbook that exists in docs/alerts.md;
- every PromQL expression of the Grafana dashboard is valid (checked by promtool as
  recording rules generated from it);
- every metric name the rules and the dashboard use is exported by ``heartbeat run``.

promtool comes from Debian's ``prometheus`` package (scripts/system-packages, run by
``make test``); without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from tests.conftest import ES
from tests.helpers_daemon import DAEMON, run_daemon
from tests.helpers_http import parse
from tests.support import toml, write_config

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "heartbeat-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "heartbeat-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "heartbeat-dashboard.json"
RUNBOOK = ROOT / "docs" / "alerts.md"

#: Grafana's variables, replaced by values PromQL accepts (as Grafana itself would).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": "heartbeat",
    "$instance": ".*",
}
#: Series Prometheus makes itself, not heartbeat.
PROMETHEUS_SERIES = {"up"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: run scripts/system-packages (package prometheus)"
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and the metric selectors
    of its ``label_values(...)`` variables, with Grafana's variables substituted."""
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: not label_values(selector, label)"
            queries.append(match.group(1))
    substituted = []
    for query in queries:
        for name, value in GRAFANA_VARIABLES.items():
            query = query.replace(name, value)
        assert "$" not in query, f"an unknown Grafana variable in {query!r}"
        substituted.append(query)
    return substituted


def metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression: heartbeat's (heartbeat_*, process_*) and up."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    return set(re.findall(r"\b(?:heartbeat_\w+|process_\w+|up)\b(?!\s*[=!~])", without_strings))


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the alert rules ---------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_the_alerts_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts():
        name = alert["alert"]
        fired = [c for c in cases if c["alertname"] == name and c.get("exp_alerts")]
        quiet = [c for c in cases if c["alertname"] == name and c.get("exp_alerts") == []]
        assert fired, f"{name}: no test shows it firing"
        assert quiet, f"{name}: no test shows it quiet"


def test_the_alerts_cover_what_operators_need() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert names >= {
        "HeartbeatJobsAtRisk",
        "HeartbeatElasticsearchDown",
        "HeartbeatCredentialsRefused",
        "HeartbeatWorkerDown",
        "HeartbeatEventLoopLagging",
        "HeartbeatDown",
        "HeartbeatAbsent",
        "HeartbeatCheckinsFailing",
    }
    expressions = {alert["alert"]: alert["expr"] for alert in alerts()}
    assert "absent(up" in expressions["HeartbeatAbsent"]
    assert re.search(r"\bup\{[^}]*\}\s*==\s*0", expressions["HeartbeatDown"])


def test_every_alert_has_a_summary_and_a_runbook_section() -> None:
    headings = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations.get("summary"), f"{alert['alert']}: no summary"
        assert alert["labels"].get("severity") in {"critical", "warning"}, alert["alert"]
        runbook = annotations.get("runbook_url", "")
        path, _, anchor = runbook.partition("#")
        assert path == "docs/alerts.md", f"{alert['alert']}: runbook {runbook!r}"
        assert anchor == alert["alert"].lower(), f"{alert['alert']}: runbook {runbook!r}"
        assert anchor in headings, f"{alert['alert']}: docs/alerts.md has no section #{anchor}"


# --- the dashboard -----------------------------------------------------------------------


def test_the_dashboard_shows_what_operators_need() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in board["panels"]}
    assert titles >= {
        "Check-ins per second by outcome",
        "Jobs at risk",
        "Oldest check-in age",
        "Elasticsearch up",
        "In flight",
        "Check-in latency",
        "Watched jobs",
        "Event-loop lag",
    }
    latency = next(p for p in board["panels"] if p["title"] == "Check-in latency")
    quantiles = {
        match.group(1)
        for target in latency["targets"]
        if (match := re.match(r"histogram_quantile\(([\d.]+),", target["expr"]))
    }
    assert quantiles == {"0.5", "0.9", "0.99"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    generated = tmp_path / "dashboard-rules.yaml"
    generated.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = promtool("check", "rules", str(generated))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


# --- what they use is what heartbeat exports ----------------------------------------------


@pytest.mark.timeout(60)
async def test_every_metric_the_rules_and_the_dashboard_use_is_exported(
    es: ES, tmp_path: Path
) -> None:
    used = set()
    for alert in alerts():
        used |= metric_names(alert["expr"])
    for query in dashboard_queries():
        used |= metric_names(query)
    used -= PROMETHEUS_SERIES
    assert len(used) >= 8, f"the metric name extraction found too little: {used}"

    job = es.emu.create_job(job_id="job-scraped")
    config = write_config(tmp_path / "hb.toml", toml(es.url, DAEMON, jobs={"ids": [job]}))
    # A [worker] probe, so that heartbeat_worker_up exists: the worker is this test's
    # own process, alive throughout.
    pid_file = tmp_path / "worker.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    with config.open("a") as file:
        file.write('[metrics]\nlisten = "127.0.0.1:0"\n')
        file.write(f"[worker]\npid_file = {json.dumps(str(pid_file))}\nprobe_interval = 0.5\n")
    async with run_daemon(config) as daemon:
        listening = await daemon.wait_for("metrics_listening")
        await daemon.wait_for("checkin_succeeded")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{listening['addresses'][0]}/metrics") as response,
        ):
            assert response.status == 200
            text = await response.text()
    samples = parse(text)
    exported = {name for name, _labels in samples}
    assert samples[("heartbeat_worker_up", frozenset())] == 1.0
    assert used <= exported, f"used by deploy/ but not exported: {sorted(used - exported)}"

    # And the exposition itself passes promtool's lint (names, suffixes, help texts).
    with anyio.fail_after(30):
        linted = await anyio.run_process(
            [shutil.which("promtool") or "promtool", "check", "metrics"],
            input=text.encode(),
            check=False,
        )
    assert linted.returncode == 0, (linted.stdout + linted.stderr).decode()
