"""Shared test configuration: where the real weights and media are.

CI sets ``DFD_WEIGHTS_DIR`` and ``DFD_MEDIA_DIR`` (``.ci/run`` points them at
``../shared``); locally they default to the same place beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared(env: str, sub: str) -> Path:
    value = os.environ.get(env)
    return Path(value) if value else ROOT.parent / "shared" / sub


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    path = _shared("DFD_WEIGHTS_DIR", "weights")
    if not path.is_dir():
        pytest.fail(f"weights folder {path} not found: set DFD_WEIGHTS_DIR")
    return path


@pytest.fixture(scope="session")
def media_dir() -> Path:
    path = _shared("DFD_MEDIA_DIR", "media")
    if not path.is_dir():
        pytest.fail(f"media folder {path} not found: set DFD_MEDIA_DIR")
    return path


# Server and media fixtures live one module each under tests/fixtures/.
pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.triton",
    "tests.fixtures.s3",
    "tests.fixtures.media",
    "tests.fixtures.models",
]
