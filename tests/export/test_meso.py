"""MesoNet: loads the authors' Keras weights, reproduces their verdicts, Grad-CAM in one pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.errors import ConfigurationError
from export.models import meso
from export.onnx_export import verify

pytestmark = pytest.mark.unit

# face_batch order: two deepfakes, then two real faces
IS_FAKE = np.array([True, True, False, False])


def _net(weights_dir: Path, checkpoint: str, file: str) -> meso.MesoNet:
    return meso.build(checkpoint, weights_dir / "mesonet" / file)


def _p_real(net: meso.MesoNet, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(faces))).numpy().reshape(-1)


def test_meso4_df_reproduces_the_published_verdicts(weights_dir, face_batch):
    p_real = _p_real(_net(weights_dir, "meso4_df", "Meso4_DF.h5"), face_batch)
    assert np.all(p_real[IS_FAKE] < 0.1), p_real
    assert np.all(p_real[~IS_FAKE] > 0.95), p_real


@pytest.mark.parametrize(
    ("checkpoint", "file"),
    [
        ("mesoinception_df", "MesoInception_DF.h5"),
        ("mesoinception_f2f", "MesoInception_F2F.h5"),
        ("meso4_f2f", "Meso4_F2F.h5"),
    ],
)
def test_other_checkpoints_load_and_give_probabilities(weights_dir, face_batch, checkpoint, file):
    p_real = _p_real(_net(weights_dir, checkpoint, file), face_batch)
    assert np.all((p_real >= 0) & (p_real <= 1))
    if checkpoint == "mesoinception_df":  # trained on the same kind of fakes: separates them
        assert p_real[IS_FAKE].max() < 0.5 < p_real[~IS_FAKE].min()


def test_wrong_architecture_for_the_file_is_refused(weights_dir):
    with pytest.raises(ConfigurationError, match="MesoInception_DF.h5"):
        meso.load_keras_h5(meso.Meso4(), weights_dir / "mesonet" / "MesoInception_DF.h5")


def test_serving_score_is_one_minus_p_real(weights_dir, face_batch):
    net = _net(weights_dir, "meso4_df", "Meso4_DF.h5")
    with torch.no_grad():
        score, heatmap = meso.VisualServing(net)(torch.from_numpy(face_batch))
    np.testing.assert_allclose(score.numpy().reshape(-1), 1 - _p_real(net, face_batch), atol=1e-6)
    assert score.shape == (4, 1) and heatmap.shape == (4, 8, 8)
    assert float(heatmap.min()) >= 0


def _autograd_cam(net: meso.MesoNet, faces: np.ndarray) -> np.ndarray:
    """Textbook Grad-CAM: backpropagate the manipulation logit to the last conv block."""
    a = net.features(torch.from_numpy(faces)).detach().requires_grad_(True)
    manipulation_logit = -net.head(a)
    (grad,) = torch.autograd.grad(manipulation_logit.sum(), a)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * a).sum(dim=1)).detach().numpy()


@pytest.mark.parametrize(
    ("checkpoint", "file"),
    [("meso4_df", "Meso4_DF.h5"), ("mesoinception_df", "MesoInception_DF.h5")],
)
def test_closed_form_heatmap_matches_autograd_grad_cam(weights_dir, face_batch, checkpoint, file):
    net = _net(weights_dir, checkpoint, file)
    with torch.no_grad():
        _, heatmap = meso.VisualServing(net)(torch.from_numpy(face_batch))
    reference = _autograd_cam(net, face_batch)
    for served, ref in zip(heatmap.numpy(), reference, strict=True):
        assert ref.std() > 0, "degenerate reference map"
        r = np.corrcoef(served.reshape(-1), ref.reshape(-1))[0, 1]
        assert r >= 0.99, r
        np.testing.assert_allclose(served, ref, rtol=1e-4, atol=1e-6)


def test_exported_visual_models_match_pytorch(model_settings, onnx_models, face_batch):
    for checkpoint in ("meso4_df", "mesoinception_df"):
        for batch in (face_batch[:1], face_batch):
            diffs = verify(
                checkpoint, model_settings, {"face": batch}, onnx_path=onnx_models[checkpoint]
            )
            assert max(diffs.values()) < 1e-4, diffs
