"""Gateway test helpers: settings on a temporary folder, an in-process client, and a
real uvicorn server in a subprocess for the tests that need real sockets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dfd.ports import free_port
from dfd.settings import Settings
from tests.fixtures.redis import settings_env

ROOT = Path(__file__).resolve().parents[2]

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def grid_clip(media_dir: Path) -> Path:
    return media_dir / "grid" / "id2_vcd_swwp2s.mpg"


@pytest.fixture(scope="session")
def small_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-second clips in several containers, made with ffmpeg."""
    out = tmp_path_factory.mktemp("videos")
    recipes = {
        "mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
        "webm": ["-c:v", "libvpx", "-deadline", "realtime"],
        "mkv": ["-c:v", "libx264", "-preset", "ultrafast"],
        "ts": ["-c:v", "mpeg2video"],
        "avi": ["-c:v", "mpeg4"],
    }
    paths = {}
    for ext, codec in recipes.items():
        path = out / f"clip.{ext}"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=64x48:rate=5",
                "-t",
                "1",
                *codec,
                "-an",
                str(path),
            ],
            check=True,
            timeout=60,
        )
        paths[ext] = path
    return paths


class GatewayServer:
    """``dfd gateway`` (uvicorn, httptools with the head limits) in a subprocess on a free port."""

    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> GatewayServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=ROOT,
            env=settings_env(self.settings),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway did not answer on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def gateway_server(make_settings: SettingsFactory) -> Iterator[Callable[..., GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(workers: int = 1, **overrides: Any) -> GatewayServer:
        server = GatewayServer(make_settings(**overrides), workers=workers).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
