"""The local valkey server: it must be the one answering on its port."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.local_redis import LocalRedis
from dfd.errors import UpstreamUnavailableError


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
