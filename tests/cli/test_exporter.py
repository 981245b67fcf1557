"""``dfd exporter``: serves the job system's metrics from Redis, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from cli.main import main
from dfd.ports import free_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_exporter_serves_the_metrics_and_stops_on_sigterm(redis_url, redis) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.update({"DFD_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "DFD_LOG_JSON": "false"})
    redis.rpush("rq:queue:high", "not-a-job")  # a waiting id: depth counts it
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "exporter", "--port", str(port)], cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "exporter did not start"
                assert process.poll() is None, "exporter exited"
                time.sleep(0.2)
        assert answer.status_code == 200
        lines = answer.text.splitlines()
        assert "dfd_redis_up 1.0" in lines
        assert 'dfd_queue_depth{priority="high"} 1.0' in lines
        assert redis.llen("rq:queue:high") == 1, "the exporter changed the queue"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_exporter_without_redis_says_so(capsys) -> None:
    assert main(["exporter"]) == 1
    assert "exporter: expected DFD_REDIS_URL" in capsys.readouterr().err
