"""The README's gRPC examples run as written against the real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Calling Triton from an internal service (gRPC)"

pytestmark = pytest.mark.integration


def _snippets() -> list[str]:
    text = DOC.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_doc_has_both_examples():
    snippets = _snippets()
    assert len(snippets) == 2
    assert '"deepfake_ensemble"' in snippets[0] and '"visual"' in snippets[0]
    assert "TritonClient" in snippets[1]


@pytest.mark.parametrize("index", [0, 1], ids=["tritonclient", "dfd-client"])
def test_snippet_runs_against_triton(triton, index):
    root = DOC.parent
    env = dict(os.environ, TRITON_URL=triton.grpc_url, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-c", _snippets()[index]],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if index == 0:
        spoof = re.search(r"P\(spoof\) per audio window: \[([^\]]*)\]", done.stdout)
        assert spoof is not None, done.stdout
        assert all(0.0 <= float(x) <= 1.0 for x in spoof.group(1).split())
        assert len(spoof.group(1).split()) == 2  # one per window
        assert "heatmaps: (4, 8, 8)" in done.stdout
    else:
        assert "visual scores:" in done.stdout and "heatmaps: (2, 8, 8)" in done.stdout
