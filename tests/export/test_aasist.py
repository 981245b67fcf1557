"""AASIST: strict loading of the official checkpoints and the ASVspoof reference verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfd.errors import ConfigurationError
from export.models import aasist
from export.onnx_export import verify

pytestmark = pytest.mark.unit

MARGIN_LOGITS = 3.0  # the authors' model separates every file by several logits


@pytest.mark.parametrize("stem", ["AASIST", "AASIST-L"])
def test_every_asvspoof_file_is_classified_with_a_margin(weights_dir, asvspoof_batch, stem):
    waves, labels = asvspoof_batch
    net = aasist.build(
        weights_dir / "aasist" / f"{stem}.pth", weights_dir / "aasist" / f"{stem}.conf"
    )
    with torch.no_grad():
        score, logits = aasist.AudioServing(net)(torch.from_numpy(waves))
    spoof, bonafide = logits.numpy().T
    margin = np.where(np.array(labels) == "spoof", spoof - bonafide, bonafide - spoof)
    assert sorted(set(labels)) == ["bonafide", "spoof"]
    assert np.all(margin > MARGIN_LOGITS), dict(zip(labels, margin.round(2), strict=True))
    expected = torch.softmax(logits, dim=1)[:, 0]
    np.testing.assert_allclose(score.numpy().reshape(-1), expected.numpy(), atol=1e-6)


def test_checkpoint_and_conf_must_agree(weights_dir):
    with pytest.raises(ConfigurationError, match="AASIST.pth"):
        aasist.build(
            weights_dir / "aasist" / "AASIST.pth", weights_dir / "aasist" / "AASIST-L.conf"
        )


def test_batch_items_are_independent(weights_dir, asvspoof_batch):
    waves, _ = asvspoof_batch
    net = aasist.build(
        weights_dir / "aasist" / "AASIST-L.pth", weights_dir / "aasist" / "AASIST-L.conf"
    )
    with torch.no_grad():
        together = net(torch.from_numpy(waves[:2]))
        alone = torch.cat([net(torch.from_numpy(waves[i : i + 1])) for i in range(2)])
    np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-4)


def test_exported_audio_models_match_pytorch(model_settings, onnx_models, asvspoof_batch):
    waves, _ = asvspoof_batch
    for checkpoint, batches in (("aasist", (waves[:1], waves[2:4])), ("aasist_l", (waves[1:3],))):
        for batch in batches:
            diffs = verify(
                checkpoint, model_settings, {"waveform": batch}, onnx_path=onnx_models[checkpoint]
            )
            assert max(diffs.values()) < 1e-4, diffs
