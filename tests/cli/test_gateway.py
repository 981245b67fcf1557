"""``dfd gateway``: serves the API, with a local Redis when none is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from dfd.ports import free_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gateway_command_starts_and_stops_its_own_redis(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.update({"DFD_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--port", str(port)], cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.2)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"redis": "ok"}
        redis_procs = [
            p for p in psutil.Process(process.pid).children(recursive=True) if "valkey" in p.name()
        ]
        assert redis_procs, "no local Redis under the gateway"
        accepted = httpx.post(
            f"http://127.0.0.1:{port}/api/analyze",
            json={"url": "http://93.184.216.34/a.mp4"},
            timeout=10,
        )
        assert accepted.status_code == 202
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    for proc in redis_procs:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_metrics_count_every_process_of_a_multi_process_gateway(redis_url, tmp_path) -> None:
    """Two uvicorn processes: /metrics counts the requests both served, whichever answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "DFD_DATA_DIR": str(tmp_path / "data"),
            "DFD_REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
        folders = {c.environ().get("PROMETHEUS_MULTIPROC_DIR") for c in children}
        folders.discard(None)
        assert len(folders) == 1, folders
        folder = Path(folders.pop())  # type: ignore[arg-type]
        for _ in range(40):  # a new connection each: the kernel spreads them over both
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        pids = {p.stem.rsplit("_", 1)[-1] for p in folder.glob("counter_*.db")}
        assert len(pids) == 2, f"one process answered everything: {pids}"
        for _ in range(4):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            served = [
                line
                for line in text.splitlines()
                if line.startswith("dfd_http_requests_total{")
                and 'route="/healthz"' in line
                and 'status="200"' in line
            ]
            assert len(served) == 1, served
            # The readiness loop's one answer plus the 40, not one process's share.
            assert float(served[0].rsplit(" ", 1)[1]) == 41
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert not folder.exists(), "the gateway left its metrics folder behind"
