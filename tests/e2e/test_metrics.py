"""Every new metric, read from the real processes after real jobs ran.

A real Redis, Triton, ``dfd worker``, a two-process ``dfd gateway`` and ``dfd exporter``:
one GRID clip that completes and one truncated video that fails go in by upload, one
request is refused, and then the exporter's, the gateway's and Triton's ``/metrics``
must report them, and every metric the dashboard and the alert rules name must be among
what these processes serve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dfd.ports import free_port
from tests.deploy.promql import metric_names, served_names
from tests.fixtures.redis import ROOT, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHART_FILES = ROOT / "helm" / "dfd" / "files"
CLIP = "grid/id2_vcd_swwp2s.mpg"


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f.type for f in text_string_to_metric_families(text)}
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the series ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        # prometheus-client's parser names a counter's samples <name>_total even where the
        # server (Triton) writes them without the suffix.
        names = {name, f"{name}_total"}
        return sum(
            s.value for s in self.samples if s.name in names and want <= set(s.labels.items())
        )


def scrape(url: str) -> Scrape:
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200, url
    return Scrape(answer.text)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"{process.args} exited"
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def running(
    make_settings, worker_process, triton, weights_dir, tmp_path
) -> Iterator[dict[str, str]]:
    settings = make_settings(
        triton_url=triton.grpc_url, weights_dir=weights_dir, job_retries=0, log_json=False
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = settings_env(settings)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "processes.log"
    exporter_port, gateway_port = free_port(), free_port()
    processes = []
    try:
        # The exporter first: it counts the jobs that end after it started.
        processes.append(start(["exporter", "--port", str(exporter_port)], env, log))
        exporter = f"http://127.0.0.1:{exporter_port}/metrics"
        wait_up(exporter, processes[-1])
        gateway_args = ["gateway", "--port", str(gateway_port), "--workers", "2"]
        processes.append(start(gateway_args, env, log))
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_up(f"{gateway}/healthz", processes[-1])
        worker_process(settings)
        yield {"exporter": exporter, "gateway": gateway, "triton": triton.metrics_url}
    finally:
        for process in processes:
            stop(process)


def submit(gateway: str, name: str, body: bytes) -> str:
    answer = httpx.post(f"{gateway}/api/upload", files={"file": (name, body)}, timeout=60)
    assert answer.status_code == 202, answer.text
    return answer.json()["jobId"]


def wait_done(gateway: str, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        view = httpx.get(f"{gateway}/api/job/{job_id}", timeout=10).json()
        if view["status"] in ("completed", "failed"):
            return view
        assert time.monotonic() < deadline, f"job {job_id} still {view}"
        time.sleep(0.2)


def test_a_job_shows_in_every_new_metric_of_the_real_processes(running, media_dir) -> None:
    gateway = running["gateway"]
    clip = (media_dir / CLIP).read_bytes()
    truncated = (media_dir / "c2pa" / "video1.mp4").read_bytes()[:4096]
    good = submit(gateway, "clip.mpg", clip)
    bad = submit(gateway, "cut.mp4", truncated)
    refused = httpx.post(f"{gateway}/api/analyze", json={"url": "ftp://example.org/a.mp4"})
    assert refused.status_code >= 400
    assert wait_done(gateway, good)["status"] == "completed"
    failed = wait_done(gateway, bad)
    assert failed["status"] == "failed"

    # The worker reports itself idle a moment after its last job ended.
    deadline = time.monotonic() + 15
    while (exporter := scrape(running["exporter"])).total("dfd_workers", state="idle") != 1:
        assert time.monotonic() < deadline, "the worker never showed as idle"
        time.sleep(0.5)
    count = "dfd_job_duration_seconds_count"
    assert exporter.total(count, outcome="completed", kind="upload") == 1
    assert exporter.total(count, outcome="failed", kind="upload") == 1
    assert exporter.total("dfd_job_latency_seconds_count") == 2
    for stage in ("probe", "decode", "faces", "inference", "evidence"):
        assert exporter.total("dfd_stage_duration_seconds_count", stage=stage) == 1, stage
    error = failed["error"]
    assert exporter.total("dfd_job_failures_total", type=error["type"]) == 1
    assert exporter.total("dfd_job_attempt_failures_total", type=error["type"]) == 1
    assert exporter.total("dfd_job_retries_total") == 0
    assert exporter.total("dfd_job_models_total", role="visual") == 1
    assert exporter.total("dfd_queue_depth") == 0
    assert exporter.total("dfd_queue_oldest_job_age_seconds") == 0
    assert exporter.total("dfd_jobs_in_registry", registry="finished") == 1
    assert exporter.total("dfd_jobs_in_registry", registry="failed") == 1
    assert exporter.total("dfd_workers", state="busy") == 0
    assert exporter.total("dfd_redis_up") == 1
    assert exporter.total("dfd_triton_ready") == 1
    assert exporter.total("dfd_redis_connection_errors_total") == 0

    # Summed over both uvicorn processes, whichever answers the scrape.
    gateway_metrics = [scrape(f"{gateway}/metrics") for _ in range(3)]
    for answer in gateway_metrics:
        assert answer.total("dfd_jobs_enqueued_total", source="upload") == 2
        assert answer.total("dfd_upload_bytes_total") == len(clip) + len(truncated)
        assert answer.total("dfd_requests_rejected_total") == 1
        assert answer.total("dfd_http_requests_total", route="/api/upload", status="202") == 2

    triton = scrape(running["triton"])
    assert triton.total("nv_inference_request_success") > 0

    served = set().union(
        *(served_names(s.families) for s in (exporter, gateway_metrics[0], triton))
    )
    dashboard = json.loads((CHART_FILES / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in metric_names(target["expr"])
    }
    rules = yaml.safe_load((CHART_FILES / "prometheus-rules.yml").read_text())
    alerted = {n for g in rules["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
    assert queried - served == set(), "the dashboard queries metrics nothing serves"
    assert alerted - served == set(), "the alerts read metrics nothing serves"
