"""LRNet (Sun et al., CVPR 2021): a landmark-sequence deepfake video detector, in PyTorch.

Loads the authors' ``g1.pth`` / ``g2.pth`` (``../shared/weights/lrnet/{ffpp,dfo}/``) with
``strict=True``: the module names below (``hidden_state``, ``gru``, ``dense.1.fn.net.{0,3}``,
``dense.3``) are the keys of their state dict. Each stream is

    (B, T, 136) -> bidirectional GRU(136 -> 32, learned initial hidden state)
    -> concat(final forward, final backward) (64)
    -> Residual[Linear 64->64, ReLU, Linear 64->64] -> Linear 64->2 -> softmax

with column 1 = P(fake). ``g1`` reads a clip of 30 frames of 68 landmarks (x1, y1, ...,
x68, y68, normalised to [-1, 1] in a 400x400 face crop); ``g2`` reads the 29 frame-to-frame
differences. The clip score is the mean of the two P(fake). The dropouts of training
(landmark dropout, fc dropout) are identities at inference and hold no weights, so they
are left out; ``Sequential`` indices keep their places so that the keys still match.

The landmarks and their calibration live in ``benchmarks/lrnet_landmarks.py``: LRNet was
tried, not shipped (README, "LRNet (tried, not shipped)").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dfd.errors import ConfigurationError

FEATURES = 136  # 68 landmarks x (x, y)
HIDDEN = 32
CLIP_FRAMES = 30  # BLOCK_SIZE of the authors' demo and training


class _FeedForward(nn.Module):
    """Linear -> ReLU -> (dropout) -> Linear; ``net.0`` and ``net.3`` hold the weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Identity(), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class LRNetStream(nn.Module):
    """One stream (g1 or g2): landmark sequences (B, T, 136) -> probabilities (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        # (directions, 1, hidden): learned, broadcast over the batch
        self.hidden_state = nn.Parameter(torch.zeros(2, 1, HIDDEN))
        self.gru = nn.GRU(FEATURES, HIDDEN, num_layers=1, batch_first=True, bidirectional=True)
        self.dense = nn.Sequential(
            nn.Identity(),  # dropout in training
            _Residual(_FeedForward(2 * HIDDEN)),
            nn.Identity(),  # dropout in training
            nn.Linear(2 * HIDDEN, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[2] != FEATURES:
            raise ValueError(f"lrnet: expected landmarks (B, T, {FEATURES}), got {tuple(x.shape)}")
        h0 = self.hidden_state.expand(-1, x.shape[0], -1).contiguous()
        _, h_n = self.gru(x, h0)  # (2, B, 32): final forward state, final backward state
        features = torch.cat([h_n[0], h_n[1]], dim=1)
        return torch.softmax(self.dense(features), dim=1)


class LRNet(nn.Module):
    """Both streams: positions (B, 30, 136) -> clip P(fake) (B,), the mean of g1 and g2."""

    def __init__(self, g1: LRNetStream, g2: LRNetStream) -> None:
        super().__init__()
        self.g1 = g1
        self.g2 = g2

    def forward(self, positions: Tensor) -> Tensor:
        p1, p2 = self.stream_scores(positions)
        return (p1 + p2) / 2

    def stream_scores(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """P(fake) of g1 (positions) and of g2 (frame differences), each (B,)."""
        diffs = positions[:, 1:] - positions[:, :-1]
        return self.g1(positions)[:, 1], self.g2(diffs)[:, 1]


def load_stream(path: Path) -> LRNetStream:
    """One of the authors' state dicts, loaded strictly (every key, every shape)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ConfigurationError(f"lrnet: cannot read {path}: {exc}") from exc
    stream = LRNetStream()
    try:
        stream.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigurationError(f"lrnet: {path} is not an LRNet stream: {exc}") from exc
    return stream.eval()


def build(weights_dir: Path) -> LRNet:
    """``weights_dir`` holds ``g1.pth`` and ``g2.pth`` (e.g. ``.../lrnet/dfo``)."""
    return LRNet(load_stream(weights_dir / "g1.pth"), load_stream(weights_dir / "g2.pth")).eval()


def clips(landmarks: np.ndarray, length: int = CLIP_FRAMES) -> np.ndarray:
    """Non-overlapping clips (N, length, 136) of a video's landmarks (T, 136), as the demo.

    The authors' loop is ``range(0, T - length, length)``: a tail shorter than a clip is
    dropped, and so is the last full clip when ``T`` is an exact multiple of ``length``.
    """
    if landmarks.ndim != 2 or landmarks.shape[1] != FEATURES:
        raise ValueError(f"lrnet: expected landmarks (T, {FEATURES}), got {landmarks.shape}")
    starts = range(0, landmarks.shape[0] - length, length)
    if not starts:
        return np.zeros((0, length, FEATURES), np.float32)
    return np.stack([landmarks[s : s + length] for s in starts]).astype(np.float32)
