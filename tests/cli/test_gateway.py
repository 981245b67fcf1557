"""``dfd gateway``: serves the API, with a local Redis when none is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
