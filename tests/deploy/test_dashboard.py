"""The Grafana dashboard: valid PromQL (checked by promtool), the panels the design asks
for, and only the metrics dfd serves (tests/e2e/test_metrics.py checks those names
against the real processes' /metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import metric_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "dfd" / "files" / "grafana-dashboard.json"


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_metric_names_of_an_expression() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(dfd_stage_duration_seconds_bucket{stage="x"}'
        "[$__rate_interval]))) / ignoring(type) group_left sum(nv_inference_count) * 1e6 "
        "or vector(0) and on() up == 0"
    )
    assert metric_names(expr) == {"dfd_stage_duration_seconds_bucket", "nv_inference_count", "up"}


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run scripts/install-system-deps.sh (Debian: prometheus)")
    rules = [
        {"record": f"dfd:dashboard:query{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(expressions())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_panels_cover_what_the_design_asks_for() -> None:
    read = set().union(*(metric_names(e) for e in expressions()))
    assert {
        "dfd_job_latency_seconds_bucket",  # latency percentiles
        "dfd_queue_depth",
        "dfd_job_duration_seconds_count",  # throughput
        "dfd_workers",  # utilisation
        "dfd_stage_duration_seconds_bucket",  # per-stage time
        "nv_inference_request_duration_us",  # per-model time, Triton's own
        "dfd_job_attempt_failures_total",  # errors
        "dfd_http_requests_total",
    } <= read
    quantiles = [e for e in expressions() if "dfd_job_latency_seconds_bucket" in e]
    assert {q.split(",")[0] for q in quantiles} == {
        f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")
    }


def test_panels_are_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert doc["uid"] == "dfd-overview"
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    for panel in panels():
        assert panel["targets"] and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
