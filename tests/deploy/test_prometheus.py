"""A real Prometheus (Debian's prometheus) scraping a real ``dfd exporter`` with dfd's
rules loaded: the rules evaluate without error on live data, and the backlog alert goes
pending once more than 100 jobs wait (it fires 5 minutes later, which promtool's unit
tests cover)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from dfd.jobid import new_job_id
from dfd.ports import free_port
from dfd.schemas import JobPayload, JobSource
from gateway.queue import JobQueue
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = ROOT / "helm" / "dfd" / "files" / "prometheus-rules.yml"


def until(check: Callable[[], Any], what: str, timeout_s: float = 40) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.5)


def test_prometheus_scrapes_the_exporter_and_evaluates_the_rules(
    make_settings, redis, redis_url, tmp_path
) -> None:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus not found: run scripts/install-system-deps.sh (Debian: prometheus)")
    settings = make_settings()
    queue = JobQueue(redis, None, settings)  # type: ignore[arg-type]
    for _ in range(120):
        source = JobSource(kind="url", url="http://93.184.216.34/a.mp4")
        queue.enqueue(JobPayload(job_id=new_job_id(), source=source))

    exporter_port, prometheus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.update({"DFD_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "DFD_LOG_JSON": "false"})
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "dfd-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    exporter = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "exporter", "--port", str(exporter_port)],
        cwd=ROOT,
        env=env,
    )
    prometheus = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:

        def depth() -> float | None:
            answer = httpx.get(f"{api}/query", params={"query": "sum(dfd_queue_depth)"}, timeout=5)
            result = answer.json()["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        assert until(depth, "Prometheus reads the queue depth") == 120

        def evaluated() -> list[dict[str, Any]] | None:
            groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return (
                rules
                if rules
                and all(
                    r.get("lastEvaluation", "").startswith("2") and r["evaluationTime"] > 0
                    for r in rules
                )
                else None
            )

        rules = until(evaluated, "every rule evaluated")
        names = {r["name"] for r in rules}
        assert names == {
            r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        }
        assert [r["name"] for r in rules if r["health"] != "ok"] == []

        def backlog() -> list[dict[str, Any]]:
            alerts = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "DfdQueueBacklog"]

        pending = until(backlog, "DfdQueueBacklog pending")
        assert pending[0]["state"] == "pending"
        # Redis answers, Triton is not asked, the exporter is scraped: nothing else is active.
        active = {
            a["labels"]["alertname"] for a in httpx.get(f"{api}/alerts").json()["data"]["alerts"]
        }
        assert active == {"DfdQueueBacklog", "DfdNoWorkers"}
    finally:
        for process in (prometheus, exporter):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
