"""Fixtures shared by the dispatcher tests that fetch over loopback HTTP (fetch, yt-dlp)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dispatcher.media_server import MediaServer

# The real GRID clip (MPEG-1 + MP2) the fetch tests serve.
GRID_CLIP = "bbaf2n.mpg"


@pytest.fixture(scope="module")
def _module_media_server() -> Iterator[MediaServer]:
    with MediaServer() as srv:
        yield srv


@pytest.fixture
def server(_module_media_server: MediaServer) -> MediaServer:
    """The test module's loopback `MediaServer`, with no routes and an empty request log."""
    _module_media_server.routes.clear()
    _module_media_server.seen.clear()
    return _module_media_server


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> bytes:
    """The bytes of a real GRID clip."""
    return (media_dir / "grid" / GRID_CLIP).read_bytes()
