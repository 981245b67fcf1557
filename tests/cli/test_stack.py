"""``dfd serve`` and ``dfd demo``: the whole stack started, checked and stopped for real.

Each test runs ``dfd serve`` as a child process on a temporary data folder with real
servers (valkey, Triton), waits for its ``ready`` line, looks at the process tree and
the gateway, stops it with a signal and checks that nothing it started is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from cli.stack import Endpoints, describe, gateway_url, repository_ready
from dfd.ports import free_port
from dfd.settings import Settings
from export.triton_repo import STAMP_FILE

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    output: Path
    gateway: str

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.update(DFD_DATA_DIR=str(data_dir), DFD_LOG_JSON="false", **extra)
    return env


def _wait_for(
    path: Path, pattern: str, process: subprocess.Popen[bytes], timeout_s: float
) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if match := re.search(pattern, text, re.M):
            return match
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"expected {pattern!r} within {timeout_s:.0f} s; output:\n{text[-4000:]}")


def _all_gone(processes: list[psutil.Process], timeout_s: float = 10.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts ``dfd serve`` with the given environment; kills whatever a failed test left."""
    started: list[Served] = []

    def start(*args: str, **env: str) -> Served:
        output = tmp_path / f"serve-{len(started)}.log"
        with output.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "--port", "0", *args],
                cwd=ROOT,
                env=_env(tmp_path / "data", **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        match = _wait_for(output, r"^  gateway\s+(http://\S+)", process, READY_TIMEOUT_S)
        served = Served(process, output, match.group(1))
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            leftovers = served.descendants()
            served.process.kill()
            served.process.wait()
            for p in leftovers:
                p.kill()


def _names(processes: list[psutil.Process]) -> list[str]:
    out = []
    for p in processes:
        cmd = " ".join(p.cmdline())
        if "valkey-server" in cmd:
            out.append("redis")
        elif "tritonserver" in cmd:
            out.append("triton")
        elif "cli.main worker" in cmd:
            out.append("worker")
        elif "cli.main gateway" in cmd:
            out.append("gateway")
    return out


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_serve_starts_redis_workers_gateway_and_stops_them_all(
    serve, tmp_path: Path, signum: int
) -> None:
    # An external Triton address: this test is about the supervisor, not inference.
    served = serve("--workers", "2", DFD_TRITON_URL=f"127.0.0.1:{free_port()}")
    tree = served.descendants()
    names = _names(tree)
    assert names.count("redis") == 1 and names.count("worker") >= 2 and names.count("gateway") == 1

    assert httpx.get(f"{served.gateway}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{served.gateway}/readyz", timeout=10).json()
    assert ready["checks"]["redis"] == "ok"  # the gateway got the local Redis's URL
    assert (tmp_path / "data" / "redis" / "valkey.conf").is_file()
    assert "appendonly yes" in (tmp_path / "data" / "redis" / "valkey.conf").read_text()

    served.process.send_signal(signum)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert _all_gone(tree) == []
    assert served.text().rstrip().endswith("dfd serve: stopped")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.gateway}/healthz", timeout=2)


@pytest.mark.integration
def test_serve_stops_everything_when_a_child_dies(serve) -> None:
    served = serve("--workers", "2", DFD_TRITON_URL=f"127.0.0.1:{free_port()}")
    tree = served.descendants()
    worker = next(p for p in tree if _names([p]) == ["worker"])

    worker.kill()

    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 1
    assert _all_gone(tree) == []
    assert re.search(r"worker-\d exited with status -9; stopping everything", served.text())


@pytest.mark.integration
def test_serve_uses_the_configured_redis_and_passes_it_down(serve, redis, redis_url: str) -> None:
    served = serve(
        "--workers", "1", DFD_REDIS_URL=redis_url, DFD_TRITON_URL=f"127.0.0.1:{free_port()}"
    )
    tree = served.descendants()
    assert "redis" not in _names(tree)  # nothing started: the configured one is used

    deadline = time.monotonic() + 20
    while not redis.smembers("rq:workers") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(redis.smembers("rq:workers")) == 1  # the worker registered in that Redis
    assert httpx.get(f"{served.gateway}/readyz", timeout=10).json()["checks"]["redis"] == "ok"

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert _all_gone(tree) == []
    assert redis.ping()  # an external Redis is not ours to stop


@pytest.mark.integration
@pytest.mark.slow
def test_serve_starts_a_local_triton_on_the_built_repository(serve, triton, tmp_path: Path) -> None:
    # Reuse the session's built cpu repository instead of exporting the models again.
    repository = tmp_path / "data" / "model_repository" / "cpu"
    repository.parent.mkdir(parents=True)
    repository.symlink_to(triton.repository, target_is_directory=True)

    served = serve("--workers", "1")
    tree = served.descendants()
    assert _names(tree).count("triton") == 1
    http = re.search(r"^  triton\s+grpc \S+, http (http://\S+)\s+\(local\)", served.text(), re.M)
    assert http is not None
    assert httpx.get(f"{http.group(1)}/v2/health/ready", timeout=5).status_code == 200
    assert (
        httpx.get(f"{http.group(1)}/v2/models/deepfake_ensemble/ready", timeout=5).status_code
        == 200
    )

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    # Triton's python-backend stubs are its children: they must be gone too.
    assert _all_gone(tree) == []


@pytest.mark.unit
def test_repository_ready_needs_a_stamp_naming_the_models(tmp_path: Path) -> None:
    # The full check (models, threads, files) is tested on a real build in
    # tests/export/test_triton_repo.py; a stamp alone is not enough any more.
    settings = Settings(data_dir=tmp_path)
    folder = settings.repository_dir("cpu")
    folder.mkdir(parents=True)
    assert not repository_ready(settings, "cpu")
    (folder / STAMP_FILE).write_text(json.dumps({"digest": "x", "target": "cpu"}))
    assert not repository_ready(settings, "cpu")
    assert not repository_ready(settings, "gpu")


@pytest.mark.unit
def test_describe_lists_every_endpoint(tmp_path: Path) -> None:
    endpoints = Endpoints(
        gateway="http://127.0.0.1:8000",
        redis="redis://127.0.0.1:6379/0",
        triton_grpc="127.0.0.1:8001",
        triton_http="http://127.0.0.1:8002",
        evidence_dir=tmp_path,
        redis_local=True,
        triton_local=False,
    )
    text = "\n".join(describe(endpoints, 3))
    assert "http://127.0.0.1:8000" in text and "redis://127.0.0.1:6379/0  (local)" in text
    assert (
        "grpc 127.0.0.1:8001, http http://127.0.0.1:8002" in text
        and "(local)" not in text.split("triton")[1].split("\n")[0]
    )
    assert "workers   3" in text and str(tmp_path) in text
    assert "page      http://127.0.0.1:8000/  " in text
    assert "console   http://127.0.0.1:8000/console" in text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),  # an IPv6 literal needs brackets in a URL
        ("localhost", "http://localhost:8000"),
    ],
)
def test_gateway_url_of_the_bound_host(host: str, url: str) -> None:
    assert gateway_url(host, 8000) == url
    assert httpx.URL(gateway_url(host, 8000)).port == 8000


@pytest.mark.unit
def test_stack_on_an_ipv6_loopback_picks_a_free_port(tmp_path: Path) -> None:
    from cli.stack import Stack

    stack = Stack(Settings(data_dir=tmp_path), host="::1", port=0, log=lambda line: None)
    assert stack.port > 0
    assert free_port("::1") > 0


@pytest.mark.unit
def test_a_gateway_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Another server on the port would answer /healthz and pass for our gateway."""
    import socket

    from cli.stack import Stack
    from dfd.errors import ConfigurationError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        stack = Stack(Settings(data_dir=tmp_path), port=port, log=lambda line: None)
        with pytest.raises(ConfigurationError, match=f"port {port} .* in use"):
            stack.start()
    assert stack.group.names == []
    assert not (tmp_path / "redis").exists()
