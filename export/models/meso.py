"""MesoNet (Afchar et al., 2018): Meso4 and MesoInception4 in PyTorch, from the Keras ``.h5``.

The authors published Keras 2 weight files (no model config inside), so the
architecture is written here and the arrays are read with ``h5py``, no TensorFlow:

- Keras conv kernels are ``(kh, kw, in, out)``; PyTorch wants ``(out, in, kh, kw)``.
- Keras ``BatchNormalization`` defaults to ``epsilon=1e-3`` (PyTorch: 1e-5).
- ``Flatten`` runs on channels-last maps, so the dense layer expects features ordered
  ``(h, w, c)``; the map is permuted to NHWC before flattening.
- ``padding='same'`` with stride 1 and odd kernels is symmetric padding ``d*(k-1)/2``.

The network outputs the logit of P(real) (the authors' sigmoid output). The serving
wrapper :class:`VisualServing` turns it into P(manipulated) and adds a Grad-CAM map of
the manipulation logit over the last convolutional block, computed in closed form
through the dense head so that serving needs no backward pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import h5py
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError

KERAS_BN_EPS = 1e-3
LEAKY_SLOPE = 0.1


def _conv(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=KERAS_BN_EPS)


class _Head(nn.Module):
    """Flatten (channels-last) -> Dense(16) -> LeakyReLU(0.1) -> Dense(1); dropout is off."""

    def __init__(self, features: int = 1024, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    @staticmethod
    def flatten(a: Tensor) -> Tensor:
        return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)

    def forward(self, a: Tensor) -> Tensor:
        h = self.fc1(self.flatten(a))
        return self.fc2(F.leaky_relu(h, LEAKY_SLOPE))

    def manipulation_grad(self, a: Tensor) -> Tensor:
        """d(-logit P(real)) / d a, in closed form; same shape as ``a`` (N, C, H, W).

        logit = w2 . leaky(W1 flat(a) + b1) + b2, so
        d logit / d flat = W1^T (w2 * leaky'(h)) with leaky'(h) = 1 if h > 0 else slope.
        """
        h = self.fc1(self.flatten(a))
        slope = torch.where(h > 0, torch.ones_like(h), torch.full_like(h, LEAKY_SLOPE))
        dh = -self.fc2.weight * slope  # (N, hidden); minus: manipulation = -logit(real)
        dflat = dh @ self.fc1.weight  # (N, H*W*C), channels-last order
        n, c, hh, ww = a.shape
        return dflat.reshape(n, hh, ww, c).permute(0, 3, 1, 2)


class Meso4(nn.Module):
    """Four conv blocks (conv-ReLU-BN-maxpool) and a small dense head; 256x256 RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [_conv(3, 8, 3), _conv(8, 8, 5), _conv(8, 16, 5), _conv(16, 16, 5)]
        )
        self.bns = nn.ModuleList([_bn(8), _bn(8), _bn(16), _bn(16)])
        self.pools = (2, 2, 2, 4)
        self.head = _Head()

    def features(self, x: Tensor) -> Tensor:
        """The last conv block's output, (N, 16, 8, 8) for a 256x256 input."""
        for conv, bn, pool in zip(self.convs, self.bns, self.pools, strict=True):
            x = F.max_pool2d(bn(F.relu(conv(x))), pool)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logit of P(real), (N, 1)."""
        return self.head(self.features(x))


class _Inception(nn.Module):
    """MesoInception block: 1x1 | 1x1-3x3 | 1x1-3x3 dil 2 | 1x1-3x3 dil 3, concatenated."""

    def __init__(self, cin: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.b1 = _conv(cin, a, 1)
        self.b2 = nn.ModuleList([_conv(cin, b, 1), _conv(b, b, 3)])
        self.b3 = nn.ModuleList([_conv(cin, c, 1), _conv(c, c, 3, dilation=2)])
        self.b4 = nn.ModuleList([_conv(cin, d, 1), _conv(d, d, 3, dilation=3)])

    def convs_in_keras_order(self) -> list[nn.Conv2d]:
        # Keras numbers layers in creation order: branch 1, then each branch's pair.
        return [self.b1, *self.b2, *self.b3, *self.b4]

    def forward(self, x: Tensor) -> Tensor:
        branches = [F.relu(self.b1(x))]
        for first, second in (self.b2, self.b3, self.b4):
            branches.append(F.relu(second(F.relu(first(x)))))
        return torch.cat(branches, dim=1)


class MesoInception4(nn.Module):
    """Two inception blocks then two conv blocks, each followed by BN and max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.inc1 = _Inception(3, 1, 4, 4, 2)
        self.inc2 = _Inception(11, 2, 4, 4, 2)
        self.conv3 = _conv(12, 16, 5)
        self.conv4 = _conv(16, 16, 5)
        self.bns = nn.ModuleList([_bn(11), _bn(12), _bn(16), _bn(16)])
        self.head = _Head()

    def convs_in_keras_order(self) -> list[nn.Conv2d]:
        return [
            *self.inc1.convs_in_keras_order(),
            *self.inc2.convs_in_keras_order(),
            self.conv3,
            self.conv4,
        ]

    def features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.bns[0](self.inc1(x)), 2)
        x = F.max_pool2d(self.bns[1](self.inc2(x)), 2)
        x = F.max_pool2d(self.bns[2](F.relu(self.conv3(x))), 2)
        return F.max_pool2d(self.bns[3](F.relu(self.conv4(x))), 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


MesoNet = Meso4 | MesoInception4


def _layers(h5: h5py.File, kind: str) -> list[str]:
    """Names of the Keras layers of one kind (``conv2d``), in creation (numbering) order."""
    pattern = re.compile(rf"^{kind}_(\d+)$")
    found = [(int(m.group(1)), name) for name in h5 if (m := pattern.match(name))]
    return [name for _, name in sorted(found)]


def _array(h5: h5py.File, layer: str, weight: str) -> Tensor:
    group = h5[layer]
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
    match = [n for n in names if n.endswith(f"/{weight}:0")]
    if len(match) != 1:
        raise ConfigurationError(
            f"MesoNet weights: layer {layer} has no single {weight!r} (has {names})"
        )
    return torch.from_numpy(np.asarray(group[match[0]], dtype=np.float32))


def load_keras_h5(model: MesoNet, path: Path) -> MesoNet:
    """Fill ``model`` from the authors' Keras 2 ``.h5``; every array must be used exactly once."""
    convs = model.convs if isinstance(model, Meso4) else model.convs_in_keras_order()
    with h5py.File(path, "r") as h5:
        conv_names, bn_names, dense_names = (
            _layers(h5, k) for k in ("conv2d", "batch_normalization", "dense")
        )
        expected = (len(convs), len(model.bns), 2)
        if (len(conv_names), len(bn_names), len(dense_names)) != expected:
            raise ConfigurationError(
                f"MesoNet weights {path.name}: expected {expected} conv/BN/dense layers for "
                f"{type(model).__name__}, got {(len(conv_names), len(bn_names), len(dense_names))}"
            )
        with torch.no_grad():
            for conv_module, name in zip(convs, conv_names, strict=True):
                conv = cast(nn.Conv2d, conv_module)
                kernel = _array(h5, name, "kernel").permute(3, 2, 0, 1)
                if kernel.shape != conv.weight.shape:
                    raise ConfigurationError(
                        f"MesoNet weights {path.name}: {name} kernel {tuple(kernel.shape)} "
                        f"does not fit {tuple(conv.weight.shape)}"
                    )
                conv.weight.copy_(kernel)
                assert conv.bias is not None  # every MesoNet conv has one
                conv.bias.copy_(_array(h5, name, "bias"))
            for bn_module, name in zip(model.bns, bn_names, strict=True):
                bn = cast(nn.BatchNorm2d, bn_module)
                bn.weight.copy_(_array(h5, name, "gamma"))
                bn.bias.copy_(_array(h5, name, "beta"))
                assert bn.running_mean is not None and bn.running_var is not None  # tracked
                bn.running_mean.copy_(_array(h5, name, "moving_mean"))
                bn.running_var.copy_(_array(h5, name, "moving_variance"))
            for fc, name in zip((model.head.fc1, model.head.fc2), dense_names, strict=True):
                fc.weight.copy_(_array(h5, name, "kernel").T)
                fc.bias.copy_(_array(h5, name, "bias"))
    return model.eval()


def build(checkpoint: str, path: Path) -> MesoNet:
    """The network for ``checkpoint`` (``meso4_*`` or ``mesoinception_*``) loaded from ``path``."""
    if checkpoint.startswith("mesoinception"):
        return load_keras_h5(MesoInception4(), path)
    if checkpoint.startswith("meso4"):
        return load_keras_h5(Meso4(), path)
    raise ConfigurationError(f"MesoNet: unknown checkpoint {checkpoint!r}")


def grad_cam(a: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM: ReLU of the feature maps weighted by their spatially averaged gradients."""
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * a).sum(dim=1))


class VisualServing(nn.Module):
    """What Triton serves for the visual role: ``face`` -> ``score``, ``heatmap``.

    ``score`` is P(manipulated) = 1 - P(real), shape (N, 1); ``heatmap`` is the Grad-CAM
    of the manipulation logit over the last conv block, shape (N, 8, 8), >= 0, not
    normalised (the caller scales it for display).
    """

    def __init__(self, net: MesoNet) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, face: Tensor) -> tuple[Tensor, Tensor]:
        a = self.net.features(face)
        logit_real = self.net.head(a)
        score = torch.sigmoid(-logit_real)
        heatmap = grad_cam(a, self.net.head.manipulation_grad(a))
        return score, heatmap
