"""LocalTriton: the real server binary from nvidia-pytriton starts, answers, fails clearly, stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from cli.local_triton import SHM_PREFIX, LocalTriton, remove_stale_shm
from dfd.errors import ConfigurationError, UpstreamUnavailableError

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _small_repository(source: Path, dest: Path, models: tuple[str, ...] = ("vad",)) -> Path:
    for name in models:
        shutil.copytree(source / name, dest / name)
    return dest


def test_session_server_is_ready_on_its_urls(triton):
    assert _get(f"{triton.http_url}/v2/health/ready")[0] == 200
    status, metrics = _get(triton.metrics_url)
    assert status == 200 and "nv_inference_request_success" in metrics
    assert triton.client.is_ready()
    for model in ("face_detector", "vad", "visual", "audio", "lipsync", "deepfake_ensemble"):
        assert triton.client.is_ready(model), model
    # Start-up (five python-backend models with warm-up, the ensemble) must suit tests.
    print(f"Triton start-up: {triton.startup_s:.2f} s")
    assert triton.startup_s < 60


def test_start_then_stop_frees_the_ports_and_the_process(triton, tmp_path):
    repo = _small_repository(triton.repository, tmp_path / "repo")
    server = LocalTriton(triton.settings, repo, ready_timeout_s=60)
    with server:
        assert server.running
        assert _get(f"{server.http_url}/v2/health/ready")[0] == 200
        ports = (server.http_port, server.grpc_port, server.metrics_port)
    assert not server.running
    deadline = time.monotonic() + 5
    while any(_port_open(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_port_open(p) for p in ports)
    server.stop()  # idempotent


def test_config_that_disagrees_with_the_onnx_fails_naming_model_and_tensor(triton, tmp_path):
    repo = _small_repository(triton.repository, tmp_path / "repo", ("visual",))
    config = repo / "visual" / "config.pbtxt"
    text = config.read_text()
    assert 'name: "face"' in text
    config.write_text(
        text.replace('name: "face"', 'name: "crop"', 1).replace('key: "face"', 'key: "crop"')
    )
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailableError) as info:
        LocalTriton(triton.settings, repo, ready_timeout_s=60).start()
    message = str(info.value)
    assert "'visual'" in message and "'crop'" in message and "not in the ONNX graph" in message
    assert time.monotonic() - started < 60, "a broken repository must fail fast, not time out"


def test_folder_that_is_no_repository_is_refused(triton, tmp_path):
    with pytest.raises(ConfigurationError, match="dfd models build"):
        LocalTriton(triton.settings, tmp_path).start()


def test_a_port_taken_before_the_server_binds_it_is_retried(triton, tmp_path, monkeypatch):
    import cli.local_triton as local_triton

    repo = _small_repository(triton.repository, tmp_path / "repo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        handed: list[int] = []
        real = local_triton.free_port

        def free_port(host: str = "127.0.0.1") -> int:
            port = busy if len(handed) == 1 else real(host)  # the first gRPC port is taken
            handed.append(port)
            return port

        monkeypatch.setattr(local_triton, "free_port", free_port)
        with LocalTriton(triton.settings, repo, ready_timeout_s=60) as server:
            assert server.grpc_port != busy
            assert len(handed) == 6  # two launches of three ports each
            assert _get(f"{server.http_url}/v2/health/ready")[0] == 200


# Maps argv[1] shared, as a live server's stubs do, and waits.
MAPPER = (
    "import mmap, sys, time\n"
    "f = open(sys.argv[1], 'r+b')\n"
    "m = mmap.mmap(f.fileno(), 4096)\n"
    "f.close()\n"
    "print('mapped', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.unit
def test_only_our_regions_that_nobody_maps_are_removed(tmp_path):
    live, dead, other = (tmp_path / n for n in (f"{SHM_PREFIX}live", f"{SHM_PREFIX}dead", "x"))
    for path in (live, dead, other):
        path.write_bytes(b"\0" * 4096)
    mapper = subprocess.Popen([sys.executable, "-c", MAPPER, str(live)], stdout=subprocess.PIPE)
    try:
        assert mapper.stdout is not None and mapper.stdout.readline() == b"mapped\n"

        assert remove_stale_shm(tmp_path, SHM_PREFIX) == [dead]

        assert live.exists() and other.exists() and not dead.exists()
    finally:
        mapper.kill()
        mapper.wait()
    assert remove_stale_shm(tmp_path, SHM_PREFIX) == [live]


def _regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"{SHM_PREFIX}*")}


def test_a_killed_server_restarts_on_its_ports_and_leaves_no_shared_memory(triton, tmp_path):
    repo = _small_repository(triton.repository, tmp_path / "repo")
    with LocalTriton(triton.settings, repo, ready_timeout_s=60) as server:
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        # The server's own regions: its python stubs' shared memory.
        stubs = psutil.Process(server.pid).children()
        mine = {arg for stub in stubs for arg in stub.cmdline() if arg.startswith(SHM_PREFIX)}
        assert mine and mine <= _regions()

        os.kill(server.pid, signal.SIGKILL)  # a crash: its stubs and regions are left
        deadline = time.monotonic() + 10
        while server.returncode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.returncode == -9
        assert mine <= _regions()

        server.start()

        assert (server.http_port, server.grpc_port, server.metrics_port) == ports
        assert _get(f"{server.http_url}/v2/models/vad/ready")[0] == 200
        assert not mine & _regions(), "the killed server's regions are still in /dev/shm"
        assert not any(stub.is_running() and stub.status() != "zombie" for stub in stubs)
        now = {
            arg
            for stub in psutil.Process(server.pid).children()
            for arg in stub.cmdline()
            if arg.startswith(SHM_PREFIX)
        }
    assert not now & _regions(), "a clean stop leaves its regions behind"
