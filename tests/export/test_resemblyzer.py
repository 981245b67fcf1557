"""Resemblyzer's voice encoder: strict loading, the wheel's embeddings on GRID speech, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfd import voice_features as vf
from dfd.errors import ConfigurationError
from dfd.settings import Settings
from export.models import resemblyzer
from export.onnx_export import export_one, verify
from tests.fixtures.voice import grid_audio

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> resemblyzer.VoiceEncoder:
    return resemblyzer.build(weights_dir / "resemblyzer" / "pretrained.pt")


@pytest.fixture(scope="module")
def clips(media_dir):
    return grid_audio(media_dir)


def _embed(net, wav: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        partials = net(torch.from_numpy(vf.partial_mels(wav))).numpy()
    return vf.mean_embedding(partials)


@pytest.mark.slow  # importing the wheel JIT-compiles librosa (numba): ~10-40 s here
def test_embeddings_are_the_wheels_on_grid_speech(net, clips):
    wheel = pytest.importorskip("resemblyzer", reason="the Resemblyzer wheel (test extra)")
    encoder = wheel.VoiceEncoder(device="cpu", verbose=False)
    for name in ("bbaf2n", "pwij3p", "swiz3n"):
        wav = vf.normalize_volume(clips[name])
        want = encoder.embed_utterance(wav)
        got = _embed(net, wav)
        assert got.shape == (256,)
        np.testing.assert_allclose(got, want, atol=1e-5)
        # partials: unit length and non-negative (ReLU before the norm)
        with torch.no_grad():
            parts = net(torch.from_numpy(vf.partial_mels(wav))).numpy()
        np.testing.assert_allclose(np.linalg.norm(parts, axis=1), 1.0, atol=1e-5)
        assert parts.min() >= 0


def test_checkpoint_must_fit_the_architecture(tmp_path, weights_dir):
    checkpoint = torch.load(
        weights_dir / "resemblyzer" / "pretrained.pt", map_location="cpu", weights_only=True
    )
    state = checkpoint["model_state"]
    del state["lstm.bias_hh_l2"]
    bad = tmp_path / "partial.pt"
    torch.save({"model_state": state}, bad)
    with pytest.raises(ConfigurationError, match="(?s)partial.pt.*lstm.bias_hh_l2"):
        resemblyzer.build(bad)
    torch.save(state, bad)  # a bare state dict, not the wheel's checkpoint layout
    with pytest.raises(ConfigurationError, match="model_state"):
        resemblyzer.build(bad)


@pytest.mark.slow  # the TorchScript export of the LSTM: ~10-30 s on two loaded cores
def test_onnx_export_matches_pytorch_in_a_batch(tmp_path, weights_dir, net, clips):
    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir)
    path = export_one("resemblyzer", settings)
    mels = np.concatenate(
        [vf.partial_mels(vf.normalize_volume(clips[n])) for n in ("lbax4n", "sbwe5n")]
    )
    diffs = verify("resemblyzer", settings, {"mels": mels}, onnx_path=path, atol=1e-5)
    assert diffs["embedding"] < 1e-5
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (alone,) = session.run(None, {"mels": mels[:1]})
    (together,) = session.run(None, {"mels": mels})
    np.testing.assert_allclose(together[:1], alone, atol=1e-5)
