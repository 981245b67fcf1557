"""``dfd serve`` and ``dfd demo``: the whole stack started, checked and stopped for real.

Each test runs ``dfd serve`` as a child process on a temporary data folder with real
servers (valkey, Triton), waits for its ``ready`` line, looks at the process tree and
the gateway, stops it with a signal and checks that nothing it started is left. Others
kill what it started (a worker, Redis, Triton: each comes back, and jobs complete) or
kill it (``kill -9``: nothing is left, and the next serve starts on the same data).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from cli.local import repository_ready
from cli.stack import Endpoints, describe, gateway_url
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
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "serve",
                    "--port",
                    "0",
                    "--exporter-port",
                    "0",
                    *args,
                ],
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
        elif "cli.main exporter" in cmd:
            out.append("exporter")
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
    assert names.count("exporter") == 1

    assert httpx.get(f"{served.gateway}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{served.gateway}/readyz", timeout=10).json()
    assert ready["checks"]["redis"] == "ok"  # the gateway got the local Redis's URL
    assert (tmp_path / "data" / "redis" / "valkey.conf").is_file()
    assert "appendonly yes" in (tmp_path / "data" / "redis" / "valkey.conf").read_text()
    # The exporter reads the same Redis and sees both workers.
    metrics = _until_metric(served, 'dfd_workers{state="idle"} 2.0')
    assert "dfd_redis_up 1.0" in metrics

    served.process.send_signal(signum)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert _all_gone(tree) == []
    assert served.text().rstrip().endswith("dfd serve: stopped")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.gateway}/healthz", timeout=2)


def _children(served: Served, kind: str) -> list[psutil.Process]:
    """``dfd serve``'s own children of one kind (not their forks: rq's scheduler, work horses)."""
    return [p for p in psutil.Process(served.process.pid).children() if _names([p]) == [kind]]


def _metrics_url(served: Served) -> str:
    match = re.search(r"^  metrics\s+(http://\S+/metrics)  \(dfd exporter\)$", served.text(), re.M)
    assert match is not None, served.text()
    return match.group(1)


def _until_metric(served: Served, line: str, timeout_s: float = 30) -> list[str]:
    """The exporter's lines once ``line`` is among them."""
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        try:
            lines = httpx.get(_metrics_url(served), timeout=10).text.splitlines()
        except httpx.TransportError:
            lines = []
        if line in lines:
            return lines
        time.sleep(0.3)
    raise AssertionError(f"expected {line!r} from the exporter; got:\n" + "\n".join(lines))


def _nowhere() -> str:
    # An external Triton address nothing answers on: for tests about the supervisor.
    return f"127.0.0.1:{free_port()}"


@pytest.mark.integration
def test_a_killed_worker_is_restarted_and_serve_stays_ready(serve) -> None:
    served = serve("--workers", "2", DFD_TRITON_URL=_nowhere())
    workers = _children(served, "worker")
    assert len(workers) == 2
    killed, kept = workers

    killed.kill()

    match = _wait_for(served.output, r"^dfd serve: (worker-\d) restarted$", served.process, 30)
    name = match.group(1)
    assert f"{name} exited with status -9; restarting in 0.5 s" in served.text()
    assert served.process.poll() is None
    now = _children(served, "worker")
    assert len(now) == 2 and kept in now and killed not in now
    assert httpx.get(f"{served.gateway}/readyz", timeout=10).json()["checks"]["redis"] == "ok"
    # Counted by kind, not by name, and served by the exporter.
    metrics = _until_metric(served, 'dfd_supervisor_restarts_total{process="worker"} 1.0')
    assert not [line for line in metrics if 'process="gateway"' in line]

    tree = served.descendants()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert _all_gone(tree) == []


@pytest.mark.integration
def test_a_killed_exporter_comes_back_on_its_port_and_counts_its_restart(serve) -> None:
    served = serve("--workers", "1", DFD_TRITON_URL=_nowhere())
    url = _metrics_url(served)
    _until_metric(served, "dfd_redis_up 1.0")
    (exporter,) = _children(served, "exporter")
    # Triton's readiness too: the exporter got DFD_TRITON_URL (nothing answers there).
    assert "dfd_triton_ready 0.0" in httpx.get(url, timeout=10).text.splitlines()

    exporter.kill()

    _wait_for(served.output, r"^dfd serve: exporter restarted$", served.process, 30)
    _until_metric(served, 'dfd_supervisor_restarts_total{process="exporter"} 1.0')
    assert _metrics_url(served) == url  # the same address: Prometheus's target still holds
    (again,) = _children(served, "exporter")
    assert again.pid != exporter.pid
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0


def _redis_url(served: Served) -> str:
    match = re.search(r"^  redis\s+(redis://\S+)", served.text(), re.M)
    assert match is not None
    return match.group(1)


@pytest.mark.integration
def test_a_killed_local_redis_comes_back_on_its_port_with_its_data(serve) -> None:
    import redis as redis_lib

    served = serve("--workers", "1", DFD_TRITON_URL=_nowhere())
    url = _redis_url(served)
    client = redis_lib.Redis.from_url(url)
    client.set("kept", "yes")
    time.sleep(1.5)  # appendfsync everysec: on disk within a second
    (server,) = _children(served, "redis")

    server.kill()

    _wait_for(served.output, r"^dfd serve: redis restarted$", served.process, 30)
    assert "redis exited with status -9; restarting in 0.5 s" in served.text()
    assert client.get("kept") == b"yes"  # same URL: the children's DFD_REDIS_URL still holds
    deadline = time.monotonic() + 10  # counted just after the restart line
    while not client.hget("dfd:metrics:supervisor_restarts", "redis"):
        assert time.monotonic() < deadline, "redis's restart was not counted"
        time.sleep(0.1)
    assert client.hget("dfd:metrics:supervisor_restarts", "redis") == b"1"
    client.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = httpx.get(f"{served.gateway}/readyz", timeout=10).json()
        if ready["checks"]["redis"] == "ok":
            break
        time.sleep(0.5)
    assert ready["checks"]["redis"] == "ok"
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0


@pytest.mark.integration
@pytest.mark.parametrize("how", ["sigkill", "sigterm-then-sigkill"])
def test_serve_killed_leaves_nothing_and_starts_again_on_its_data(serve, how: str) -> None:
    """``kill -9``, or what a process manager does on a slow stop (SIGTERM, SIGKILL a
    second later): every process serve started goes, the local Redis with its AOF flushed,
    and the next serve on the same data folder starts cleanly."""
    import redis as redis_lib

    served = serve("--workers", "1", DFD_TRITON_URL=_nowhere())
    client = redis_lib.Redis.from_url(_redis_url(served))
    client.set("kept", "yes")
    client.close()
    tree = served.descendants()
    assert sorted(set(_names(tree))) == ["exporter", "gateway", "redis", "worker"]
    assert any("cli.supervisor --watchdog" in " ".join(p.cmdline()) for p in tree)

    if how == "sigterm-then-sigkill":
        served.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
    served.process.kill()
    served.process.wait()

    left = _all_gone(tree, timeout_s=20)
    assert left == [], f"left running: {[' '.join(p.cmdline()) for p in left]}"

    again = serve("--workers", "1", DFD_TRITON_URL=_nowhere())
    assert "stale" not in again.text()
    client = redis_lib.Redis.from_url(_redis_url(again))
    assert client.get("kept") == b"yes"
    client.close()
    assert httpx.get(f"{again.gateway}/readyz", timeout=10).json()["checks"]["redis"] == "ok"
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(timeout=STOP_TIMEOUT_S) == 0


@pytest.mark.integration
def test_repeated_fast_crashes_stop_everything_with_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.stack import Stack
    from cli.supervisor import GaveUp, RestartPolicy

    monkeypatch.setenv("DFD_LOG_JSON", "false")
    lines: list[str] = []
    stack_log = (tmp_path / "children.log").open("wb")
    stack = Stack(
        Settings(data_dir=tmp_path / "data", triton_url=_nowhere()),
        port=0,
        workers=1,
        child_output=stack_log,
        log=lines.append,
        restart_policy=RestartPolicy(max_crashes=1, window_s=60, backoff_initial_s=0.1),
    )
    killed: list[int] = []

    def crash_the_worker_twice() -> None:
        # The worker is killed as soon as it (or its restart) is up.
        deadline = time.monotonic() + 60
        while len(killed) < 2 and time.monotonic() < deadline:
            pid = stack.group.pid("worker-1")
            if stack.group.running("worker-1") and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.1)

    with stack_log, stack:
        started = [stack.watchdog.pid, *stack.group.pids().values()]
        assert stack.redis is not None and stack.redis.pid is not None
        tree = [psutil.Process(pid) for pid in [*started, stack.redis.pid]]
        tree += [child for p in tree for child in p.children(recursive=True)]
        killer = threading.Thread(target=crash_the_worker_twice)
        killer.start()
        gave_up = stack.supervise(poll_s=0.05)
        killer.join()
    assert gave_up == GaveUp("worker-1", -9, crashes=2, window_s=60)
    assert str(gave_up) == (
        "worker-1 crashed 2 times within 60 s (last exit status -9); "
        "giving up and stopping everything"
    )
    assert [line for line in lines if "worker-1" in line] == [
        "worker-1 exited with status -9; restarting in 0.1 s (crash 1 of 1 allowed within 60 s)",
        "worker-1 restarted",
    ]
    assert _all_gone(tree) == []


CLIP = "grid/bbaf2n.mpg"
JOB_TIMEOUT_S = 300.0


def _submit(gateway: str, clip: Path, count: int = 1) -> list[str]:
    from cli.demo import JobClient

    with httpx.Client(base_url=gateway, timeout=60) as http:
        return [JobClient(http).submit(str(clip)) for _ in range(count)]


def _wait_jobs(gateway: str, job_ids: list[str]) -> list[dict]:
    from cli.demo import JobClient

    with httpx.Client(base_url=gateway, timeout=60) as http:
        client = JobClient(http)
        return [client.wait(job_id, timeout_s=JOB_TIMEOUT_S, poll_s=0.5) for job_id in job_ids]


@pytest.mark.integration
@pytest.mark.slow
def test_a_job_submitted_after_a_worker_was_killed_completes(serve, triton, media_dir) -> None:
    served = serve("--workers", "1", DFD_TRITON_URL=triton.grpc_url)
    _children(served, "worker")[0].kill()
    _wait_for(served.output, r"^dfd serve: worker-1 restarted$", served.process, 30)

    (view,) = _wait_jobs(served.gateway, _submit(served.gateway, media_dir / CLIP))

    assert view["status"] == "completed", view
    assert served.process.poll() is None
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_triton_comes_back_and_the_jobs_in_flight_complete(
    serve, triton, tmp_path: Path, media_dir
) -> None:
    repository = tmp_path / "data" / "model_repository" / "cpu"
    repository.parent.mkdir(parents=True)
    repository.symlink_to(triton.repository, target_is_directory=True)
    # Retries enough to span a Triton start-up on a loaded machine (5 + 10 + 20 + 40 s).
    served = serve("--workers", "1", DFD_JOB_RETRIES="4")
    (server,) = _children(served, "triton")
    http = re.search(r"^  triton\s+grpc \S+, http (http://\S+)", served.text(), re.M)
    assert http is not None

    job_ids = _submit(served.gateway, media_dir / CLIP, count=2)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=served.gateway, timeout=10) as client:
        while time.monotonic() < deadline:  # kill Triton once a job is being worked on
            if client.get(f"/api/job/{job_ids[0]}").json()["status"] == "active":
                break
            time.sleep(0.1)
    server.kill()
    killed = time.monotonic()

    _wait_for(served.output, r"^dfd serve: triton restarted$", served.process, 180)
    print(f"triton back {time.monotonic() - killed:.1f} s after the kill")
    assert "triton exited with status -9; restarting" in served.text()
    views = _wait_jobs(served.gateway, job_ids)

    assert [v["status"] for v in views] == ["completed", "completed"], (views, served.text())
    assert max(v["attempt"] for v in views) >= 2  # the kill hit them: they were retried
    # The same address as before: the workers' DFD_TRITON_URL is still right.
    assert httpx.get(f"{http.group(1)}/v2/health/ready", timeout=5).status_code == 200
    assert served.process.poll() is None
    tree = served.descendants()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert _all_gone(tree) == []


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
    assert "metrics" not in text  # no exporter: no line
    with_exporter = describe(
        dataclasses.replace(endpoints, exporter="http://127.0.0.1:9120/metrics"), 3
    )
    assert "  metrics   http://127.0.0.1:9120/metrics  (dfd exporter)" in with_exporter
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


@pytest.mark.unit
def test_an_exporter_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import socket

    from cli.stack import Stack
    from dfd.errors import ConfigurationError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        stack = Stack(
            Settings(data_dir=tmp_path), port=0, exporter_port=port, log=lambda line: None
        )
        with pytest.raises(ConfigurationError, match=f"port {port} .* exporter.*--no-exporter"):
            stack.start()
    assert stack.group.names == []
    with pytest.raises(ConfigurationError, match="exporter port from 0 to 65535, got -1"):
        Stack(Settings(data_dir=tmp_path), port=0, exporter_port=-1, log=lambda line: None)
