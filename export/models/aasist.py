"""AASIST and AASIST-L (Jung et al., 2022): spectro-temporal graph attention anti-spoofing.

Written to load the official ``clovaai/aasist`` checkpoints with ``strict=True``; the
architecture's sizes come from the published ``.conf`` (its ``model_config``). Raw
waveform in (64,600 samples at 16 kHz), logits ``[spoof, bonafide]`` out.

Three things differ from a literal transcription, all to export cleanly to ONNX and
none changing the numbers:

- the sinc front end's band-pass filters are fixed, so they are a non-persistent buffer;
- the heterogeneous attention map is assembled from four slices with ``cat`` instead of
  in-place slice assignment;
- batch norm over graph nodes runs on a transposed view instead of a reshape.

One quirk of the original is kept because the weights were trained with it: in every
residual block but the first, ``bn1`` and its activation are computed but unused; the
first convolution reads the block's input directly. ``bn1`` is still a module so that the
checkpoint loads strictly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError


@dataclass(frozen=True)
class AasistConfig:
    """The ``model_config`` block of an AASIST ``.conf`` file."""

    nb_samp: int
    first_conv: int
    filts: tuple
    gat_dims: tuple[int, int]
    pool_ratios: tuple[float, float, float, float]
    temperatures: tuple[float, float, float, float]

    @classmethod
    def from_conf(cls, path: Path) -> AasistConfig:
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))["model_config"]
            return cls(
                nb_samp=int(cfg["nb_samp"]),
                first_conv=int(cfg["first_conv"]),
                filts=tuple(cfg["filts"]),
                gat_dims=tuple(cfg["gat_dims"]),
                pool_ratios=tuple(cfg["pool_ratios"]),
                temperatures=tuple(cfg["temperatures"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"AASIST config {path}: expected a JSON model_config ({exc})"
            ) from exc


def sinc_filters(out_channels: int, kernel_size: int, sample_rate: int = 16_000) -> np.ndarray:
    """Mel-spaced band-pass sinc filters with a Hamming window, (out_channels, kernel).

    Band edges are equally spaced on the mel scale between 0 Hz and Nyquist (as sampled
    by a 512-point FFT grid); the kernel is made odd so the filters are symmetric.
    """
    if kernel_size % 2 == 0:
        kernel_size += 1
    freqs = int(sample_rate / 2) * np.linspace(0, 1, 512 // 2 + 1)
    mel = 2595 * np.log10(1 + freqs / 700)
    edges_mel = np.linspace(mel.min(), mel.max(), out_channels + 1)
    edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
    # float32 support, as the original builds it with torch.arange
    support = np.arange(-(kernel_size - 1) / 2, (kernel_size - 1) / 2 + 1, dtype=np.float32)
    window = np.hamming(kernel_size)
    bank = np.zeros((out_channels, kernel_size), dtype=np.float32)
    for i in range(out_channels):
        lo, hi = edges_hz[i], edges_hz[i + 1]
        high = (2 * hi / sample_rate) * np.sinc(2 * hi * support / sample_rate)
        low = (2 * lo / sample_rate) * np.sinc(2 * lo * support / sample_rate)
        bank[i] = window * (high - low)
    return bank


class SincFrontEnd(nn.Module):
    """Fixed sinc band-pass filter bank applied to the raw waveform (no bias, no padding)."""

    def __init__(self, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        bank = torch.from_numpy(sinc_filters(out_channels, kernel_size))
        self.register_buffer("filters", bank.unsqueeze(1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        filters = cast(Tensor, self.filters)  # a buffer
        return F.conv1d(x, filters)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False) -> None:
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm2d(cin)  # trained but unused, see the module docstring
        self.conv1 = nn.Conv2d(cin, cout, (2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, (2, 3), padding=(0, 1))
        self.conv_downsample = nn.Conv2d(cin, cout, (1, 3), padding=(0, 1)) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if self.conv_downsample is not None else x
        return F.max_pool2d(out + identity, (1, 3))


def _node_bn(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """Batch norm over the feature axis of (batch, nodes, dim)."""
    return bn(x.transpose(1, 2)).transpose(1, 2)


def _pairwise(x: Tensor) -> Tensor:
    """(b, n, d) -> (b, n, n, d) with [b, i, j] = x_i * x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


class GraphAttention(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.zeros(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        att = torch.tanh(self.att_proj(_pairwise(x))) @ self.att_weight  # (b, n, n, 1)
        att = F.softmax(att.squeeze(-1) / self.temperature, dim=-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_node_bn(self.bn, out))


class HeteroGraphAttention(nn.Module):
    """Attention over two node types (temporal, spectral) plus a master node."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.zeros(out_dim, 1))
        self.att_weight22 = nn.Parameter(torch.zeros(out_dim, 1))
        self.att_weight12 = nn.Parameter(torch.zeros(out_dim, 1))
        self.att_weightM = nn.Parameter(torch.zeros(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temperature = temperature

    def forward(self, x1: Tensor, x2: Tensor, master: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        att = torch.tanh(self.att_proj(_pairwise(x)))  # (b, n, n, out)
        top = torch.cat(
            [att[:, :n1, :n1] @ self.att_weight11, att[:, :n1, n1:] @ self.att_weight12], dim=2
        )
        bottom = torch.cat(
            [att[:, n1:, :n1] @ self.att_weight12, att[:, n1:, n1:] @ self.att_weight22], dim=2
        )
        att = F.softmax(torch.cat([top, bottom], dim=1).squeeze(-1) / self.temperature, dim=-1)

        att_m = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (b, n, 1)
        att_m = F.softmax(att_m / self.temperature, dim=1)
        master = self.proj_with_attM(att_m.transpose(1, 2) @ x) + self.proj_without_attM(master)

        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        out = F.selu(_node_bn(self.bn, out))
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Keep the top ``ratio`` of nodes by a learned sigmoid score, scaled by that score."""

    def __init__(self, ratio: float, in_dim: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)

    def forward(self, h: Tensor) -> Tensor:
        scores = torch.sigmoid(self.proj(h))  # (b, n, 1)
        keep = max(int(h.shape[1] * self.ratio), 1)  # node counts are fixed by the input length
        _, idx = torch.topk(scores, keep, dim=1)
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.shape[2]))


class AASIST(nn.Module):
    """Waveform (b, samples) -> logits (b, 2) ordered ``[spoof, bonafide]``."""

    def __init__(self, cfg: AasistConfig) -> None:
        super().__init__()
        filts, gat, pools, temps = cfg.filts, cfg.gat_dims, cfg.pool_ratios, cfg.temperatures
        self.conv_time = SincFrontEnd(filts[0], cfg.first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        blocks = [filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(ResidualBlock(cin, cout, first=i == 0))
                for i, (cin, cout) in enumerate(blocks)
            )
        )
        channels = filts[-1][-1]
        self.pos_S = nn.Parameter(torch.zeros(1, 23, channels))
        self.master1 = nn.Parameter(torch.zeros(1, 1, gat[0]))
        self.master2 = nn.Parameter(torch.zeros(1, 1, gat[0]))
        self.GAT_layer_S = GraphAttention(channels, gat[0], temps[0])
        self.GAT_layer_T = GraphAttention(channels, gat[0], temps[1])
        self.HtrgGAT_layer_ST11 = HeteroGraphAttention(gat[0], gat[1], temps[2])
        self.HtrgGAT_layer_ST12 = HeteroGraphAttention(gat[1], gat[1], temps[2])
        self.HtrgGAT_layer_ST21 = HeteroGraphAttention(gat[0], gat[1], temps[2])
        self.HtrgGAT_layer_ST22 = HeteroGraphAttention(gat[1], gat[1], temps[2])
        self.pool_S = GraphPool(pools[0], gat[0])
        self.pool_T = GraphPool(pools[1], gat[0])
        self.pool_hS1 = GraphPool(pools[2], gat[1])
        self.pool_hT1 = GraphPool(pools[2], gat[1])
        self.pool_hS2 = GraphPool(pools[2], gat[1])
        self.pool_hT2 = GraphPool(pools[2], gat[1])
        self.out_layer = nn.Linear(5 * gat[1], 2)

    def _branch(
        self,
        first: HeteroGraphAttention,
        second: HeteroGraphAttention,
        pool_s: GraphPool,
        pool_t: GraphPool,
        out_t: Tensor,
        out_s: Tensor,
        master: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        t, s, m = first(out_t, out_s, master)
        s, t = pool_s(s), pool_t(t)
        t_aug, s_aug, m_aug = second(t, s, m)
        return t + t_aug, s + s_aug, m + m_aug

    def forward(self, wave: Tensor) -> Tensor:
        x = self.conv_time(wave.unsqueeze(1)).unsqueeze(1)  # (b, 1, filters, time)
        x = F.selu(self.first_bn(F.max_pool2d(torch.abs(x), (3, 3))))
        e = self.encoder(x)  # (b, C, spectral, temporal)

        e_s = torch.amax(torch.abs(e), dim=3).transpose(1, 2) + self.pos_S
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        e_t = torch.amax(torch.abs(e), dim=2).transpose(1, 2)
        out_t = self.pool_T(self.GAT_layer_T(e_t))

        t1, s1, m1 = self._branch(
            self.HtrgGAT_layer_ST11,
            self.HtrgGAT_layer_ST12,
            self.pool_hS1,
            self.pool_hT1,
            out_t,
            out_s,
            self.master1,
        )
        t2, s2, m2 = self._branch(
            self.HtrgGAT_layer_ST21,
            self.HtrgGAT_layer_ST22,
            self.pool_hS2,
            self.pool_hT2,
            out_t,
            out_s,
            self.master2,
        )
        out_t, out_s, master = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        hidden = torch.cat(
            [
                torch.amax(torch.abs(out_t), dim=1),
                out_t.mean(dim=1),
                torch.amax(torch.abs(out_s), dim=1),
                out_s.mean(dim=1),
                master.squeeze(1),
            ],
            dim=1,
        )
        return self.out_layer(hidden)


def load_strict(model: nn.Module, pth: Path, config: Path, what: str) -> nn.Module:
    """``model`` with the checkpoint ``pth`` loaded; every key and shape must match."""
    state = torch.load(pth, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigurationError(
            f"{what} checkpoint {pth.name} does not fit {config.name}: {exc}"
        ) from exc
    return model.eval()


def build(pth: Path, conf: Path) -> AASIST:
    """AASIST from its official checkpoint and ``.conf``; the state dict must match exactly."""
    model = AASIST(AasistConfig.from_conf(conf))
    load_strict(model, pth, conf, "AASIST")
    return model


class AudioServing(nn.Module):
    """What Triton serves for a waveform detector whose logits are ``[spoof, bonafide]``
    (AASIST, RawGAT-ST): ``waveform`` -> ``score`` (P(spoof)), ``logits``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.net(waveform)
        score = F.softmax(logits, dim=1)[:, :1]
        return score, logits
