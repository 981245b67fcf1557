"""The gateway imports no media or ML library (it enqueues by function path)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.gateway.conftest import ROOT

FORBIDDEN = ("torch", "av", "numpy", "onnx", "onnxruntime", "tritonclient", "PIL", "cv2")


@pytest.mark.unit
def test_gateway_app_pulls_in_no_media_or_ml_library() -> None:
    code = (
        "import sys, json\n"
        "import gateway.app, cli.gateway\n"
        "from dfd.settings import Settings\n"
        "gateway.app.create_app(Settings(redis_url='redis://127.0.0.1:1/0', data_dir='/tmp/dfd-import-test'))\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    assert "fastapi" in loaded  # the check itself sees imports
