"""Resemblyzer's GE2E voice encoder, our implementation, loading the wheel's ``pretrained.pt``.

Architecture (``resemblyzer/voice_encoder.py`` and ``hparams.py`` of Resemblyzer 0.1.4,
Apache-2.0): a 3-layer LSTM (40 mel bands -> 256, batch first), the last hidden state of
the top layer, Linear 256 -> 256, ReLU, L2 normalisation: one unit-length 256-d embedding
per 160-frame (1.6 s) partial. The utterance embedding is the normalised mean of its
partials' (``dfd.voice_features.mean_embedding``); the mel front end is
``dfd.voice_features.mel_spectrogram``.

The checkpoint is a dict ``{step, model_state, optimizer_state}``; ``model_state`` also
holds the GE2E loss's ``similarity_weight`` and ``similarity_bias`` (one number each,
unused at inference). The wheel loads it with ``strict=False``; we keep those two as
parameters so every key and shape must match.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from dfd.errors import ConfigurationError
from dfd.specs import VOICE_EMBEDDING, VOICE_MELS

HIDDEN = 256
LAYERS = 3


class VoiceEncoder(nn.Module):
    """mels (N, frames, 40) mel power -> (N, 256) unit embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(VOICE_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, VOICE_EMBEDDING)
        self.relu = nn.ReLU()
        # GE2E training-loss scale and offset: loaded for strictness, unused
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: Tensor) -> Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def build(path: Path) -> VoiceEncoder:
    """The encoder from the wheel's ``pretrained.pt``; every key and shape must match."""
    model = VoiceEncoder()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise ConfigurationError(
            f"Resemblyzer checkpoint {path.name}: expected a dict with 'model_state', got "
            f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}"
        )
    try:
        model.load_state_dict(checkpoint["model_state"], strict=True)
    except RuntimeError as exc:
        raise ConfigurationError(f"Resemblyzer checkpoint {path.name}: {exc}") from exc
    return model.eval()


class VoiceServing(nn.Module):
    """What Triton serves for the voice role: ``mels`` (N, 160, 40) -> ``embedding`` (N, 256)."""

    def __init__(self, net: VoiceEncoder) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, mels: Tensor) -> tuple[Tensor]:
        return (self.net(mels),)
