"""RawGAT-ST: strict loading of the authors' checkpoint, their reference logits, ONNX and batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.errors import ConfigurationError
from export.models import rawgat_st
from export.models.aasist import AudioServing
from export.onnx_export import export_one, verify

pytestmark = pytest.mark.unit

# shared/weights/rawgat_st/ORIGIN.txt: logit[1] (bonafide) of the authors' class on the five
# ASVspoof 2019 LA files, to the one decimal ORIGIN quotes
BONAFIDE_RANGE = (3.9, 6.6)
SPOOF_RANGE = (-13.4, -7.6)


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> rawgat_st.RawGatST:
    folder = weights_dir / "rawgat_st"
    return rawgat_st.build(folder / "RawGAT_ST_mul.pth", folder / "model_config_RawGAT_ST.yaml")


@pytest.fixture(scope="module")
def served(net, asvspoof_batch) -> tuple[np.ndarray, np.ndarray]:
    """Score (5, 1) and logits (5, 2) of each ASVspoof window run on its own."""
    waves, _ = asvspoof_batch
    serving = AudioServing(net)
    with torch.no_grad():
        outs = [serving(torch.from_numpy(w[None])) for w in waves]
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


@pytest.fixture(scope="module")
def alone(served) -> np.ndarray:
    return served[1]


def test_reproduces_the_reference_logit_ranges(alone, asvspoof_batch):
    _, labels = asvspoof_batch
    bonafide = alone[:, 1]
    for label, (lo, hi) in (("bonafide", BONAFIDE_RANGE), ("spoof", SPOOF_RANGE)):
        got = bonafide[np.array(labels) == label]
        assert len(got) >= 2, label
        assert round(float(got.min()), 1) == lo, (label, got)
        assert round(float(got.max()), 1) == hi, (label, got)
    # logits are [spoof, bonafide]: each file's verdict is the larger one
    assert list(np.where(alone[:, 0] > alone[:, 1], "spoof", "bonafide")) == labels


def test_score_is_the_spoof_probability(served):
    score, logits = served
    assert score.shape == (5, 1)
    expected = torch.softmax(torch.from_numpy(logits), dim=1)[:, :1].numpy()
    np.testing.assert_allclose(score, expected, atol=1e-6)


def test_a_batch_of_two_equals_one_at_a_time(net, alone, asvspoof_batch):
    waves, _ = asvspoof_batch
    with torch.no_grad():
        together = net(torch.from_numpy(waves[1:3])).numpy()
    np.testing.assert_allclose(together, alone[1:3], atol=1e-4)


def test_checkpoint_must_fit_the_architecture(tmp_path, weights_dir):
    # the add/cat variants are other graphs; one tensor off is refused, not half-loaded
    state = torch.load(
        weights_dir / "rawgat_st" / "RawGAT_ST_mul.pth", map_location="cpu", weights_only=True
    )
    del state["proj_node.bias"]
    bad = tmp_path / "partial.pth"
    torch.save(state, bad)
    with pytest.raises(ConfigurationError, match="(?s)partial.pth.*proj_node.bias"):
        rawgat_st.build(bad, weights_dir / "rawgat_st" / "model_config_RawGAT_ST.yaml")


def test_a_config_without_the_model_block_is_refused(tmp_path):
    conf = tmp_path / "model_config.yaml"
    conf.write_text("optimizer: Adam\n")
    with pytest.raises(ConfigurationError, match="model_config.yaml"):
        rawgat_st.RawGatConfig.from_yaml(conf)


def test_exported_model_matches_pytorch(model_settings, asvspoof_batch):
    # one window: the batch axis is checked by test_onnx_export's dynamic-batch test
    waves, _ = asvspoof_batch
    path = export_one("rawgat_st", model_settings)
    diffs = verify("rawgat_st", model_settings, {"waveform": waves[3:4]}, onnx_path=path)
    assert max(diffs.values()) < 1e-4, diffs
