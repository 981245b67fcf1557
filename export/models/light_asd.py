"""Light-ASD (Liao et al., CVPR 2023): lightweight audio-visual active speaker detection.

Loads the authors' ``pretrain_AVA_CVPR.model`` (AVA-ActiveSpeaker) exactly: its keys are
``model.*`` (encoders and the bidirectional GRU) and ``lossAV.*`` / ``lossV.*`` (the
audio-visual and visual-only classifier heads). dfd uses the audio-visual head: per
video frame, P(the visible face is speaking the audio). A face that does not move in
step with the speech in its own soundtrack is the lip-sync signal.

Shapes: video (B, T, 112, 112) grey 0..255 at 25 fps; MFCC (B, 4T, 13) at 100 Hz.
The audio encoder halves the MFCC rate twice, so both streams meet at T steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError

# grey-level normalisation used in training (mean and std of 0..1 pixels)
_PIXEL_MEAN = 0.4161
_PIXEL_STD = 0.1688
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3


class _VisualBlock(nn.Module):
    """Two (2+1)D branches, 3x3 then 3-tap and 5x5 then 5-tap, summed and mixed by 1x1x1."""

    def __init__(self, cin: int, cout: int, downsample: bool = False) -> None:
        super().__init__()
        stride = (1, 2, 2) if downsample else (1, 1, 1)
        self.s_3 = nn.Conv3d(cin, cout, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)
        self.bn_s_3 = nn.BatchNorm3d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.t_3 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = nn.BatchNorm3d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.s_5 = nn.Conv3d(cin, cout, (1, 5, 5), stride=stride, padding=(0, 2, 2), bias=False)
        self.bn_s_5 = nn.BatchNorm3d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.t_5 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = nn.BatchNorm3d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.last = nn.Conv3d(cout, cout, 1, bias=False)
        self.bn_last = nn.BatchNorm3d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x3 = F.relu(self.bn_t_3(self.t_3(F.relu(self.bn_s_3(self.s_3(x))))))
        x5 = F.relu(self.bn_t_5(self.t_5(F.relu(self.bn_s_5(self.s_5(x))))))
        return F.relu(self.bn_last(self.last(x3 + x5)))


class _AudioBlock(nn.Module):
    """The audio counterpart over (MFCC, time): k-tap along MFCC then k-tap along time."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.m_3 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.t_3 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.m_5 = nn.Conv2d(cin, cout, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.t_5 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.last = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_last = nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x3 = F.relu(self.bn_t_3(self.t_3(F.relu(self.bn_m_3(self.m_3(x))))))
        x5 = F.relu(self.bn_t_5(self.t_5(F.relu(self.bn_m_5(self.m_5(x))))))
        return F.relu(self.bn_last(self.last(x3 + x5)))


class VisualEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = _VisualBlock(1, 32, downsample=True)
        self.block2 = _VisualBlock(32, 64)
        self.block3 = _VisualBlock(64, 128)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, T, H, W) normalised -> (B, T, 128)."""
        x = F.max_pool3d(self.block1(x), (1, 3, 3), (1, 2, 2), (0, 1, 1))
        x = F.max_pool3d(self.block2(x), (1, 3, 3), (1, 2, 2), (0, 1, 1))
        x = self.block3(x)
        return torch.amax(x, dim=(3, 4)).transpose(1, 2)  # global spatial max per frame


class AudioEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = _AudioBlock(1, 32)
        self.block2 = _AudioBlock(32, 64)
        self.block3 = _AudioBlock(64, 128)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, 13, 4T) -> (B, T, 128); time is max-pooled by 2 twice."""
        x = F.max_pool2d(self.block1(x), (1, 3), stride=(1, 2), padding=(0, 1))
        x = F.max_pool2d(self.block2(x), (1, 3), stride=(1, 2), padding=(0, 1))
        x = self.block3(x)
        return x.mean(dim=2).transpose(1, 2)


class BiGRU(nn.Module):
    """A forward GRU, then a second GRU run over the time-reversed sequence (GELU between)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.gru_forward(x)[0])
        x = torch.flip(self.gru_backward(torch.flip(x, dims=[1]))[0], dims=[1])
        return F.gelu(x)


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.FC = nn.Linear(128, 2)


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visualEncoder = VisualEncoder()
        self.audioEncoder = AudioEncoder()
        self.GRU = BiGRU(128)


class LightASD(nn.Module):
    """``(video, mfcc)`` -> per-frame audio-visual logits (B, T, 2) ``[silent, speaking]``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Backbone()
        self.lossAV = _Head()
        self.lossV = _Head()  # visual-only auxiliary head: loaded for strictness, unused

    def forward(self, video: Tensor, mfcc: Tensor) -> Tensor:
        v = ((video / 255.0 - _PIXEL_MEAN) / _PIXEL_STD).unsqueeze(1)
        v = self.model.visualEncoder(v)
        a = self.model.audioEncoder(mfcc.unsqueeze(1).transpose(2, 3))
        return self.lossAV.FC(self.model.GRU(a + v))


def build(path: Path) -> LightASD:
    """Light-ASD from the authors' checkpoint; every key must match."""
    model = LightASD()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigurationError(f"Light-ASD checkpoint {path.name}: {exc}") from exc
    return model.eval()


class LipsyncServing(nn.Module):
    """What Triton serves for the lipsync role: ``video``, ``mfcc`` -> ``score``, ``speaking``.

    ``speaking`` (N, 25) is per-frame P(speaking); ``score`` (N, 1) = 1 - mean(speaking).
    """

    def __init__(self, net: LightASD) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, video: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor]:
        speaking = F.softmax(self.net(video, mfcc), dim=-1)[..., 1]
        score = 1.0 - speaking.mean(dim=1, keepdim=True)
        return score, speaking
