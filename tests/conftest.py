"""Shared test configuration: where the real weights and media are.

CI sets ``DFD_WEIGHTS_DIR`` and ``DFD_MEDIA_DIR`` (``.ci/run`` points them at
``../shared``); locally they default to the same place beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# Read once, before any test runs: the autouse fixture below hides DFD_* from the tests.
_SHARED_ENV = {name: os.environ.get(name) for name in ("DFD_WEIGHTS_DIR", "DFD_MEDIA_DIR")}


def _shared(env: str, sub: str) -> Path:
    value = _SHARED_ENV[env]
    return Path(value) if value else ROOT.parent / "shared" / sub


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no ``DFD_*`` variable of the shell that runs them.

    CI exports ``DFD_WEIGHTS_DIR``; a test that builds ``Settings()`` must get the
    defaults it was written against (e.g. weights that have to be downloaded), and pass
    the shared folders explicitly through the fixtures when it wants them.
    """
    for name in [n for n in os.environ if n.startswith("DFD_")]:
        monkeypatch.delenv(name)


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
    "tests.fixtures.tracing",
    "tests.fixtures.models",
    "tests.fixtures.browser",
    "tests.fixtures.webhook_receiver",
    "tests.fixtures.sbi",
]
