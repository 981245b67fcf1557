"""RawGAT-ST (Tak et al., 2021): spectro-temporal graph attention anti-spoofing, ``mul`` fusion.

Written to load the authors' ``eurecom-asp/RawGAT-ST-antispoofing`` checkpoint
``RawGAT_ST_mul`` with ``strict=True``; the front end and encoder sizes come from their
``model_config_RawGAT_ST.yaml`` (its ``model`` block). Raw waveform in (64,600 samples at
16 kHz, the same window as AASIST), logits ``[spoof, bonafide]`` out.

The graph: fixed sinc band-pass filters (70 x 129 taps) -> |x| and 3x3 max pool -> two
identical residual encoders (one feeds a spectral graph of 23 nodes, the other a temporal
graph of 29) -> a graph attention layer and top-k pooling on each -> both projected to 12
nodes and multiplied element-wise -> a third graph attention layer and pooling (7 nodes) ->
a linear classifier over the nodes. The node counts are fixed by the input length, and the
projections after each pooling are linear maps *over node positions* (ranked by pooling
score), so the window length cannot change.

What differs from a literal transcription, none of it changing the numbers:

- the sinc filters are fixed, so they are a non-persistent buffer (the same bank as
  AASIST's: :class:`export.models.aasist.SincFrontEnd`);
- top-k pooling gathers the kept nodes with ``gather`` instead of a Python loop over the
  batch (the authors' loop keeps a singleton axis, which their ``transpose(1, 3)`` and
  ``view`` then drop; here it never exists);
- batch norm over graph nodes runs on a transposed view instead of a reshape.

Quirks of the original kept because the weights were trained with them: in every residual
block but the first, ``bn1`` and its activation are computed but unused (the first
convolution reads the block's input); every block carries a ``conv_1`` (1 -> C) that only
the first block uses; the first block adds its one-channel input to all 32 output
channels (a broadcast residual). The unused modules exist so that the checkpoint loads
strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError
from export.models.aasist import SincFrontEnd, load_strict

# Pooling ratios, attention widths and node counts are constants of the authors' class,
# not of the YAML; the node counts follow from them and the 64,600-sample window.
_SPECTRAL_NODES, _TEMPORAL_NODES = 23, 29
_POOL_SPECTRAL, _POOL_TEMPORAL, _POOL_FUSED = 0.64, 0.81, 0.64
_GAT_DIM, _FUSED_DIM, _FUSED_NODES = 32, 16, 12


def _kept(ratio: float, nodes: int) -> int:
    """Nodes a pooling layer keeps (the authors' rule: at least two)."""
    return max(2, int(ratio * nodes))


@dataclass(frozen=True)
class RawGatConfig:
    """The ``model`` block of ``model_config_RawGAT_ST.yaml``."""

    nb_samp: int
    out_channels: int
    first_conv: int
    in_channels: int
    filts: tuple
    nb_classes: int

    @classmethod
    def from_yaml(cls, path: Path) -> RawGatConfig:
        import yaml

        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
            config = cls(
                nb_samp=int(cfg["nb_samp"]),
                out_channels=int(cfg["out_channels"]),
                first_conv=int(cfg["first_conv"]),
                in_channels=int(cfg["in_channels"]),
                filts=tuple(tuple(f) if isinstance(f, list) else f for f in cfg["filts"]),
                nb_classes=int(cfg["nb_classes"]),
            )
        except (KeyError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise ConfigurationError(
                f"RawGAT-ST config {path}: expected a YAML model block ({exc!r})"
            ) from exc
        if config.in_channels != 1 or config.nb_classes != 2 or len(config.filts) != 4:
            raise ConfigurationError(
                f"RawGAT-ST config {path}: expected in_channels 1, nb_classes 2 and four "
                f"filts entries, got {config.in_channels}, {config.nb_classes}, {config.filts}"
            )
        return config


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.bn1 = nn.BatchNorm2d(cin)  # trained but unused, see the module docstring
            self.conv1 = nn.Conv2d(cin, cout, (2, 3), padding=(1, 1))
        self.conv_1 = nn.Conv2d(1, cout, (2, 3), padding=(1, 1))  # used by the first block only
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, (2, 3), padding=(0, 1))
        self.conv_downsample = nn.Conv2d(cin, cout, (1, 3), padding=(0, 1)) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_1(x) if self.first else self.conv1(x)
        out = self.conv2(F.selu(self.bn2(out)))
        identity = self.conv_downsample(x) if self.conv_downsample is not None else x
        return F.max_pool2d(out + identity, (1, 3))  # the first block broadcasts its 1 channel


def _encoder(filts: tuple) -> nn.Sequential:
    """Six residual blocks: filts[1] twice (the first reading the 1-channel map), filts[2], filts[3] x3."""
    sizes = [filts[1], filts[1], filts[2], filts[3], filts[3], filts[3]]
    return nn.Sequential(
        *(
            nn.Sequential(ResidualBlock(int(cin), int(cout), first=i == 0))
            for i, (cin, cout) in enumerate(sizes)
        )
    )


class GraphAttention(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.zeros(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        pairs = x.unsqueeze(2) * x.unsqueeze(1)  # (b, n, n, d): [b, i, j] = x_i * x_j
        att = torch.tanh(self.att_proj(pairs)) @ self.att_weight  # (b, n, n, 1)
        att = F.softmax(att.squeeze(-1), dim=-1)  # over j, as the authors' softmax(dim=-2)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(self.bn(out.transpose(1, 2)).transpose(1, 2))


class GraphPool(nn.Module):
    """The ``keep`` nodes with the highest sigmoid score, scaled by it, in descending order."""

    def __init__(self, in_dim: int, keep: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, 1)
        self.keep = keep

    def forward(self, h: Tensor) -> Tensor:
        scores = torch.sigmoid(self.proj(h))  # (b, n, 1)
        _, idx = torch.topk(scores, self.keep, dim=1)  # sorted, as the node projections expect
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.shape[2]))


class RawGatST(nn.Module):
    """Waveform (b, 64600) -> logits (b, 2) ordered ``[spoof, bonafide]``."""

    def __init__(self, cfg: RawGatConfig) -> None:
        super().__init__()
        channels = int(cfg.filts[-1][-1])
        self.conv_time = SincFrontEnd(cfg.out_channels, cfg.first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder1 = _encoder(cfg.filts)  # feeds the spectral graph
        self.encoder2 = _encoder(cfg.filts)  # feeds the temporal graph
        keep_s = _kept(_POOL_SPECTRAL, _SPECTRAL_NODES)
        keep_t = _kept(_POOL_TEMPORAL, _TEMPORAL_NODES)
        keep_f = _kept(_POOL_FUSED, _FUSED_NODES)
        self.GAT_layer1 = GraphAttention(channels, _GAT_DIM)
        self.pool1 = GraphPool(_GAT_DIM, keep_s)
        self.GAT_layer2 = GraphAttention(channels, _GAT_DIM)
        self.pool2 = GraphPool(_GAT_DIM, keep_t)
        self.GAT_layer3 = GraphAttention(_GAT_DIM, _FUSED_DIM)
        self.pool3 = GraphPool(_FUSED_DIM, keep_f)
        self.proj1 = nn.Linear(keep_s, _FUSED_NODES)  # over spectral node positions
        self.proj2 = nn.Linear(keep_t, _FUSED_NODES)  # over temporal node positions
        self.proj = nn.Linear(_FUSED_DIM, 1)
        self.proj_node = nn.Linear(keep_f, cfg.nb_classes)

    def forward(self, wave: Tensor) -> Tensor:
        x = self.conv_time(wave.unsqueeze(1)).unsqueeze(1)  # (b, 1, filters, time)
        x = F.selu(self.first_bn(F.max_pool2d(torch.abs(x), (3, 3))))

        spectral = torch.amax(torch.abs(self.encoder1(x)), dim=3).transpose(1, 2)  # (b, 23, C)
        spectral = self.pool1(self.GAT_layer1(spectral))  # (b, 14, 32)
        spectral = self.proj1(spectral.transpose(1, 2))  # (b, 32, 12)

        temporal = torch.amax(torch.abs(self.encoder2(x)), dim=2).transpose(1, 2)  # (b, 29, C)
        temporal = self.pool2(self.GAT_layer2(temporal))  # (b, 23, 32)
        temporal = self.proj2(temporal.transpose(1, 2))  # (b, 32, 12)

        fused = self.pool3(self.GAT_layer3((spectral * temporal).transpose(1, 2)))  # (b, 7, 16)
        return self.proj_node(self.proj(fused).squeeze(-1))


def build(pth: Path, config: Path) -> RawGatST:
    """RawGAT-ST from the authors' checkpoint and YAML; the state dict must match exactly."""
    model = RawGatST(RawGatConfig.from_yaml(config))
    load_strict(model, pth, config, "RawGAT-ST")
    return model
