"""The local valkey server: the one answering on its port, alone on its data folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cli.local_redis import LocalRedis, ping
from dfd.errors import ConfigurationError, UpstreamUnavailableError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_start_fails_when_another_server_holds_the_port(tmp_path: Path) -> None:
    """Ports are picked free a moment before the server binds; when another server took
    the port meanwhile, its PONG must not pass for ours (jobs would go to its data)."""
    with LocalRedis(tmp_path / "first", appendonly=False) as first:
        second = LocalRedis(tmp_path / "second", port=first.port, start_timeout_s=3.0)
        with pytest.raises(UpstreamUnavailableError, match="expected PONG"):
            second.start()
        assert not second.running
        assert first.running


@pytest.mark.integration
def test_a_second_server_on_a_held_data_folder_is_refused(tmp_path: Path) -> None:
    """Two servers appending to one AOF corrupt it."""
    with LocalRedis(tmp_path / "data") as first:
        second = LocalRedis(tmp_path / "data", start_timeout_s=3.0)
        with pytest.raises(
            ConfigurationError, match=rf"held by a running server \(pid {first.pid}"
        ):
            second.start()
        assert not second.running
        assert first.running and ping(first.host, first.port)
    # Stopped: the folder is free again.
    with LocalRedis(tmp_path / "data") as third:
        assert third.running


# Starts a server on argv[1] whose parent-death signal is turned off (as an older dfd,
# or a server started by hand, would leave it), writes a key, says its pid and waits.
ORPHAN_MAKER = """
import sys, time
import redis
import cli.local_redis as local_redis
local_redis.die_with_parent = list
server = local_redis.LocalRedis(sys.argv[1]).start()
redis.Redis.from_url(server.url).set("kept", "yes")
print(server.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.integration
def test_a_stale_server_left_by_a_killed_process_is_stopped_first(tmp_path: Path) -> None:
    import redis as redis_lib

    maker = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_MAKER, str(tmp_path / "data")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert maker.stdout is not None
    stale = psutil.Process(int(maker.stdout.readline()))
    maker.kill()  # kill -9: it cannot stop its server
    maker.wait()
    time.sleep(0.3)
    assert stale.is_running() and stale.status() != psutil.STATUS_ZOMBIE

    lines: list[str] = []
    with LocalRedis(tmp_path / "data", log=lines.append) as server:
        assert not stale.is_running() or stale.status() == psutil.STATUS_ZOMBIE
        assert lines == [
            f"stopping a stale redis (pid {stale.pid}) on {tmp_path / 'data'}: the dfd "
            f"process that started it (pid {maker.pid}) is gone"
        ]
        # It was stopped with SIGTERM, so its AOF was flushed and this server loads it.
        assert redis_lib.Redis.from_url(server.url).get("kept") == b"yes"


@pytest.mark.integration
def test_a_killed_server_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    import redis as redis_lib

    with LocalRedis(tmp_path / "data", fsync="always") as server:
        port = server.port
        redis_lib.Redis.from_url(server.url).set("k", "v")
        server._process.kill()  # type: ignore[union-attr]  # a crash, not kill()'s cleanup
        server._process.wait()  # type: ignore[union-attr]
        assert server.returncode == -9

        server.start()

        assert server.port == port and server.returncode is None
        assert redis_lib.Redis.from_url(server.url).get("k") == b"v"
