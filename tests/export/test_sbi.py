"""SBI: our EfficientNet-B4 takes the authors' checkpoint layout strictly and computes what
``efficientnet-pytorch`` computes; score and Grad-CAM in one pass; ONNX equals PyTorch;
served by Triton once the user's weights are where ``dfd models pull sbi`` puts them.

The real checkpoint is research-only and not here, so the reference is the package the
authors build it with (``EfficientNet.from_name("efficientnet-b4", num_classes=2)``, the
architecture ``from_pretrained`` fills), with random weights saved in their format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError
from export.models import sbi
from export.random_weights import randomised_efficientnet

pytestmark = pytest.mark.unit

efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")


class _TheirDetector(nn.Module):
    """Their ``Detector``: the package's network as ``self.net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b4", num_classes=2)

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def theirs() -> _TheirDetector:
    return randomised_efficientnet(_TheirDetector())


@pytest.fixture(scope="module")
def checkpoint(theirs, tmp_path_factory) -> Path:
    """Saved as their training script saves it: a dict with the state dict under "model"."""
    path = tmp_path_factory.mktemp("sbi") / "sbi.tar"
    torch.save({"model": theirs.state_dict(), "optimizer": {"state": {}}, "epoch": 99}, path)
    return path


@pytest.fixture(scope="module")
def crops(media_dir) -> np.ndarray:
    """Two real faces (a deepfake and a real one, the MesoNet authors' crops) as SBI is
    served them: RGB uint8 380 x 380, NCHW."""
    from PIL import Image

    files = sorted((media_dir / "mesonet_faces").glob("*/*.jpg"))
    faces = [
        np.asarray(
            Image.open(files[i]).convert("RGB").resize((380, 380), Image.Resampling.BILINEAR)
        )
        for i in (0, 3)
    ]
    return np.stack(faces).transpose(0, 3, 1, 2).copy()


def _to_380(crops: np.ndarray) -> torch.Tensor:
    """Their input: ``torch.tensor(faces).float() / 255`` (inference_image.py)."""
    return torch.from_numpy(crops).float() / 255


@pytest.fixture(scope="module")
def reference(theirs, crops) -> tuple[torch.Tensor, torch.Tensor]:
    """Their last block's activations and logits on the crops at 380 px (one pass)."""
    with torch.no_grad():
        features = theirs.net.extract_features(_to_380(crops))
        logits = theirs(_to_380(crops))
    return features, logits


def test_the_state_dict_has_their_keys_and_shapes(theirs):
    mine = sbi.Detector().state_dict()
    ref = theirs.state_dict()
    assert list(mine) == list(ref)  # same names, same order
    assert all(mine[k].shape == ref[k].shape for k in ref)
    assert "net._blocks.31._se_expand.weight" in mine and len(mine) == 706


@pytest.mark.slow
def test_their_checkpoint_loads_strictly_and_computes_what_theirs_does(
    checkpoint, crops, reference
):
    features, logits = reference
    mine = sbi.load_checkpoint(checkpoint)
    with torch.no_grad():
        got = mine.net.features(_to_380(crops))
    # informative: the two faces' activations differ far beyond the tolerance
    assert (features[0] - features[1]).abs().max() > 0.1
    torch.testing.assert_close(got, features, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        got_logits = mine.net._fc(got.mean(dim=(2, 3)))
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    torch.testing.assert_close(got_logits, logits, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_serving_gives_their_fake_probability_and_the_grad_cam_of_one_pass(
    theirs, checkpoint, crops, reference
):
    features, logits = reference
    serving = sbi.build(checkpoint)
    with torch.no_grad():
        score, heatmap = serving(torch.from_numpy(crops))  # uint8, as the dispatcher sends
    torch.testing.assert_close(score, logits.softmax(1)[:, 1:2], atol=1e-5, rtol=1e-4)
    assert heatmap.shape == (2, sbi.HEATMAP_SIZE, sbi.HEATMAP_SIZE) and heatmap.min() >= 0
    # the closed form is Grad-CAM: autograd through their pool and head says the same,
    # for the head as it is and turned round (random weights may leave one map all zero)
    head = theirs.net._fc.weight.detach()
    for fc in (head, head.flip(0)):
        a = features.clone().requires_grad_(True)
        out = a.mean(dim=(2, 3)) @ fc.T
        (out[:, 1] - out[:, 0]).sum().backward()
        assert a.grad is not None
        cam = F.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)).detach()
        closed = sbi.fake_grad_cam(features, fc)
        torch.testing.assert_close(closed, cam, atol=1e-5, rtol=1e-4)
    assert max(float(sbi.fake_grad_cam(features, w).max()) for w in (head, head.flip(0))) > 0
    torch.testing.assert_close(heatmap, sbi.fake_grad_cam(features, head), atol=1e-4, rtol=1e-4)


def test_a_file_that_is_not_their_checkpoint_is_refused(tmp_path):
    page = tmp_path / "page.tar"
    page.write_bytes(b"<html>Google Drive - quota exceeded</html>")
    with pytest.raises(ConfigurationError, match="not a PyTorch checkpoint"):
        sbi.load_checkpoint(page)
    bare = tmp_path / "bare.tar"
    torch.save(sbi.Detector().state_dict(), bare)  # no "model" key
    with pytest.raises(ConfigurationError, match="key 'model'"):
        sbi.load_checkpoint(bare)
    other = tmp_path / "other.tar"
    sd = sbi.Detector().state_dict()
    sd.pop("net._fc.bias")
    torch.save({"model": sd}, other)
    with pytest.raises(ConfigurationError, match="does not fit EfficientNet-B4"):
        sbi.load_checkpoint(other)
