"""The prepared GPU checks: the scripts parse, and gpu-pack.sh packs what the checks load."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dfd.settings import Settings
from dfd.specs import spec

pytestmark = pytest.mark.unit

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("name", ["gpu-pack.sh", "gpu-checks.sh"])
def test_script_parses(name: str):
    subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True, timeout=30)


def test_pack_carries_the_weights_of_the_default_models():
    text = (SCRIPTS / "gpu-pack.sh").read_text()
    match = re.search(r"^CHECKPOINTS=\(([^)]*)\)", text, re.M)
    assert match, "CHECKPOINTS=(...) not found in gpu-pack.sh"
    packed = set(match.group(1).split())
    settings = Settings()
    needed = {
        weight
        for checkpoint in (settings.visual_model, settings.audio_model, settings.lipsync_model)
        for weight in spec(checkpoint).weights
    }
    assert packed == needed
