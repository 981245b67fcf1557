"""LRNet: the authors' four state dicts load strictly; the forward matches a numpy GRU by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.errors import ConfigurationError
from export.models import lrnet

pytestmark = pytest.mark.unit

FILES = [("ffpp", "g1"), ("ffpp", "g2"), ("dfo", "g1"), ("dfo", "g2")]


def _path(weights_dir: Path, training: str, stream: str) -> Path:
    return weights_dir / "lrnet" / training / f"{stream}.pth"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _gru_direction(x: np.ndarray, h: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """The GRU equations of the PyTorch docs, gates stacked (reset, update, new), one step at a time."""
    hid = h.shape[0]
    for x_t in x:
        gi = w_ih @ x_t + b_ih
        gh = w_hh @ h + b_hh
        r = _sigmoid(gi[:hid] + gh[:hid])
        z = _sigmoid(gi[hid : 2 * hid] + gh[hid : 2 * hid])
        n = np.tanh(gi[2 * hid :] + r * gh[2 * hid :])
        h = (1 - z) * n + z * h
    return h


def _numpy_stream(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(fake) of one sequence (T, 136) from the raw tensors of the authors' file."""
    fwd = _gru_direction(
        x,
        state["hidden_state"][0, 0],
        *(state[f"gru.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
    )
    bwd = _gru_direction(
        x[::-1],
        state["hidden_state"][1, 0],
        *(state[f"gru.{k}_l0_reverse"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
    )
    f = np.concatenate([fwd, bwd])
    hidden = np.maximum(state["dense.1.fn.net.0.weight"] @ f + state["dense.1.fn.net.0.bias"], 0)
    f = f + state["dense.1.fn.net.3.weight"] @ hidden + state["dense.1.fn.net.3.bias"]
    logits = state["dense.3.weight"] @ f + state["dense.3.bias"]
    e = np.exp(logits - logits.max())
    return (e / e.sum())[1]


def _raw(path: Path) -> dict[str, np.ndarray]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.double().numpy() for k, v in state.items()}


@pytest.mark.parametrize(("training", "stream"), FILES)
def test_each_authors_file_loads_strictly_into_the_stream(weights_dir, training, stream):
    net = lrnet.load_stream(_path(weights_dir, training, stream))
    raw = _raw(_path(weights_dir, training, stream))
    assert set(net.state_dict()) == set(raw)
    assert sum(p.numel() for p in net.parameters()) == 41_154  # ORIGIN.txt: per file
    np.testing.assert_array_equal(net.hidden_state.detach().double().numpy(), raw["hidden_state"])


@pytest.mark.parametrize(("training", "stream"), FILES)
def test_forward_matches_a_numpy_gru_computed_from_the_raw_tensors(weights_dir, training, stream):
    path = _path(weights_dir, training, stream)
    net = lrnet.load_stream(path)
    raw = _raw(path)
    rng = np.random.default_rng(7)
    frames = lrnet.CLIP_FRAMES if stream == "g1" else lrnet.CLIP_FRAMES - 1
    # landmark-like inputs: positions in [-1, 1] for g1, small steps for g2
    scale = 0.8 if stream == "g1" else 0.02
    x = (rng.uniform(-1, 1, (3, frames, lrnet.FEATURES)) * scale).astype(np.float32)
    with torch.no_grad():
        probs = net(torch.from_numpy(x)).numpy()
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    expected = np.array([_numpy_stream(raw, seq.astype(np.float64)) for seq in x])
    np.testing.assert_allclose(probs[:, 1], expected, atol=2e-5)
    assert np.ptp(expected) > 1e-4  # the inputs are not all scored alike: the check bites


def test_two_stream_score_is_the_mean_of_g1_on_positions_and_g2_on_differences(weights_dir):
    net = lrnet.build(weights_dir / "lrnet" / "dfo")
    raw1 = _raw(weights_dir / "lrnet" / "dfo" / "g1.pth")
    raw2 = _raw(weights_dir / "lrnet" / "dfo" / "g2.pth")
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(0, 0.01, (2, lrnet.CLIP_FRAMES, lrnet.FEATURES)), axis=1)
    positions = (rng.uniform(-0.7, 0.7, (2, 1, lrnet.FEATURES)) + walk).astype(np.float32)
    with torch.no_grad():
        score = net(torch.from_numpy(positions)).numpy()
    expected = [
        (_numpy_stream(raw1, p.astype(np.float64)) + _numpy_stream(raw2, np.diff(p, axis=0))) / 2
        for p in positions
    ]
    assert score.shape == (2,)
    np.testing.assert_allclose(score, expected, atol=2e-5)


def test_a_state_dict_of_another_shape_is_refused_naming_the_file(weights_dir, tmp_path):
    state = torch.load(_path(weights_dir, "dfo", "g1"), map_location="cpu", weights_only=True)
    state["dense.3.weight"] = torch.zeros(3, 64)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ConfigurationError, match="bad.pth"):
        lrnet.load_stream(path)
    del state["hidden_state"]
    torch.save(state, path)
    with pytest.raises(ConfigurationError, match="hidden_state"):
        lrnet.load_stream(path)


def test_wrong_input_shape_is_a_clear_error(weights_dir):
    net = lrnet.load_stream(_path(weights_dir, "ffpp", "g1"))
    with pytest.raises(ValueError, match=r"expected landmarks \(B, T, 136\)"):
        net(torch.zeros(1, 30, 68, 2))


def test_clips_follow_the_authors_loop():
    # range(0, T - 30, 30): 75 frames (a GRID clip) -> starts 0 and 30; 60 frames -> start 0 only
    seq = np.arange(75 * 136, dtype=np.float32).reshape(75, 136)
    got = lrnet.clips(seq)
    assert got.shape == (2, 30, 136)
    np.testing.assert_array_equal(got[1], seq[30:60])
    assert lrnet.clips(seq[:60]).shape == (1, 30, 136)
    assert lrnet.clips(seq[:30]).shape == (0, 30, 136)
