"""SBI (Shiohara and Yamasaki, CVPR 2022, "Detecting Deepfakes with Self-Blended Images"):
an EfficientNet-B4 classifier, written here so that the authors' checkpoint loads strictly.

The authors build the network with the ``efficientnet-pytorch`` package
(``EfficientNet.from_pretrained("efficientnet-b4", advprop=True, num_classes=2)``) as the
attribute ``net`` of their ``Detector`` and save ``{"model": detector.state_dict(), ...}``
(a zip-format ``torch.save`` named ``.tar``). So the state-dict keys here are that
package's, under the prefix ``net.``: ``net._conv_stem``, ``net._bn0``,
``net._blocks.<i>._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` /
``_se_reduce`` / ``_se_expand`` / ``_project_conv`` / ``_bn2``, ``net._conv_head``,
``net._bn1``, ``net._fc``. Its details reproduced:

- width 1.4, depth 1.8 over the B0 stages; channels rounded to multiples of 8;
- "same" padding of TensorFlow computed statically for a 380 x 380 input (the package's
  ``Conv2dStaticSamePadding``: ``pad = max((ceil(i / s) - 1) s + k - i, 0)``, the odd pixel
  at the bottom/right);
- batch norm with eps 1e-3; Swish (x * sigmoid(x)); squeeze-and-excitation of
  ``max(1, int(block input channels * 0.25))`` channels; identity skips where stride 1 and
  the channels match (drop-connect and dropout are training-only).

Their inference (``src/inference/inference_image.py``): RGB face crops resized to
380 x 380, values / 255 (no mean/std normalisation), ``softmax(logits)[:, 1]`` = the
probability the face is fake. :class:`SbiServing` takes their crop as uint8 (cut by
``dispatcher.sbi_crop``: the face box plus 1/8 of its width and height each side,
resized to 380 x 380), divides by 255 as they do and returns that probability with a
Grad-CAM map of the fake log-odds over the last convolutional block (12 x 12), computed
in closed form through the global-average-pool and linear head in the same pass (no
backward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dfd.errors import ConfigurationError

IMAGE_SIZE = 380  # EfficientNet-B4's resolution, the authors' crop side
HEATMAP_SIZE = 12  # the last block's map for a 380 input (380 / 32, rounded up)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # the package's 1 - 0.99 (inference does not use it)
WIDTH, DEPTH = 1.4, 1.8
SE_RATIO = 0.25
# The B0 stages: (repeats, kernel, stride, expansion, in, out), before width/depth scaling.
B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, multiplier: float = WIDTH, divisor: int = 8) -> int:
    """Channels scaled by the width multiplier, to a multiple of 8 (never below 90 %)."""
    scaled = filters * multiplier
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, multiplier: float = DEPTH) -> int:
    return int(math.ceil(multiplier * repeats))


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one axis: (before, after)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


class SameConv(nn.Conv2d):
    """A conv with static "same" padding for a fixed input size (the package's
    ``Conv2dStaticSamePadding``; its padding module holds no parameters)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        image_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=bias)
        before, after = _same_pad(image_size, kernel, stride)
        self.pads = (before, after, before, after)  # left, right, top, bottom

    def forward(self, x: Tensor) -> Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


@dataclass(frozen=True)
class BlockArgs:
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""

    def __init__(self, a: BlockArgs, image_size: int) -> None:
        super().__init__()
        self.args = a
        mid = a.cin * a.expand
        if a.expand != 1:
            self._expand_conv = SameConv(a.cin, mid, 1, image_size=image_size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(
            mid, mid, a.kernel, image_size=image_size, stride=a.stride, groups=mid
        )
        self._bn1 = _bn(mid)
        squeezed = max(1, int(a.cin * SE_RATIO))
        self._se_reduce = nn.Conv2d(mid, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = SameConv(mid, a.cout, 1, image_size=math.ceil(image_size / a.stride))
        self._bn2 = _bn(a.cout)
        self.skip = a.stride == 1 and a.cin == a.cout

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.args.expand != 1:
            h = swish(self._bn0(self._expand_conv(h)))
        h = swish(self._bn1(self._depthwise_conv(h)))
        s = F.adaptive_avg_pool2d(h, 1)
        s = self._se_expand(swish(self._se_reduce(s)))
        h = torch.sigmoid(s) * h
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetB4(nn.Module):
    """EfficientNet-B4 with the ``efficientnet-pytorch`` layout, for a 380 x 380 input."""

    def __init__(self, num_classes: int = 2, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        stem = round_filters(32)
        self._conv_stem = SameConv(3, stem, 3, image_size=image_size, stride=2)
        self._bn0 = _bn(stem)
        size = math.ceil(image_size / 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in B0_STAGES:
            cin, cout = round_filters(cin), round_filters(cout)
            for i in range(round_repeats(repeats)):
                a = BlockArgs(
                    kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout
                )
                blocks.append(MBConv(a, size))
                size = math.ceil(size / a.stride)
        self._blocks = nn.ModuleList(blocks)
        head = round_filters(1280)
        last = round_filters(B0_STAGES[-1][-1])
        self._conv_head = SameConv(last, head, 1, image_size=size)
        self._bn1 = _bn(head)
        self._fc = nn.Linear(head, num_classes)
        self.map_size = size

    def features(self, x: Tensor) -> Tensor:
        """The last convolutional block's activations, (N, 1792, 12, 12) for 380 x 380."""
        x = swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return swish(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, 2): [real, fake]."""
        return self._fc(self.features(x).mean(dim=(2, 3)))


class Detector(nn.Module):
    """The authors' wrapper: the network as ``net``, so their keys carry ``net.``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = EfficientNetB4()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def load_checkpoint(path: Path) -> Detector:
    """The authors' checkpoint (a dict whose ``"model"`` is the Detector's state dict),
    loaded strictly: every key and shape must match."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a web page, a truncated file, another format
        raise ConfigurationError(
            f"SBI weights {path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(blob, dict) or "model" not in blob:
        keys = sorted(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
        raise ConfigurationError(
            f"SBI weights {path}: expected the authors' dict with key 'model', got {keys}"
        )
    model = Detector()
    try:
        model.load_state_dict(blob["model"], strict=True)
    except RuntimeError as exc:
        raise ConfigurationError(
            f"SBI weights {path}: the state dict does not fit EfficientNet-B4 ({exc})"
        ) from exc
    return model.eval()


def fake_grad_cam(a: Tensor, fc_weight: Tensor) -> Tensor:
    """Grad-CAM of the fake log-odds over the last block's activations ``a`` (N, C, H, W).

    log-odds = (w_fake - w_real) . mean_hw(a) + const, so its gradient is (w_fake -
    w_real) / (H W) at every position and Grad-CAM's channel weights are that; the map is
    ReLU(sum_c weight_c a_c), (N, H, W).
    """
    h, w = int(a.shape[2]), int(a.shape[3])
    alpha = ((fc_weight[1] - fc_weight[0]) / (h * w)).reshape(1, -1, 1, 1)
    return F.relu((alpha * a).sum(dim=1))


class SbiServing(nn.Module):
    """What Triton serves for ``sbi``: ``face`` (SBI's own 380 px crop, RGB uint8 NCHW)
    -> ``score``, ``heatmap``.

    ``score`` is softmax(logits)[:, 1], the authors' fake probability, (N, 1); ``heatmap``
    is the Grad-CAM of the fake log-odds (logit 1 - logit 0) over the last block, (N, 12,
    12), >= 0, not normalised. The gradient of the log-odds with respect to the last
    block's activations is (w_fake - w_real) / (H W) at every position (average pool then
    linear), so Grad-CAM's channel weights are its spatial mean and no backward pass runs.
    """

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.net = model.net.eval()

    def forward(self, face: Tensor) -> tuple[Tensor, Tensor]:
        x = face.to(torch.float32) / 255.0  # the authors' scaling, nothing else
        a = self.net.features(x)
        logits = self.net._fc(a.mean(dim=(2, 3)))
        score = torch.softmax(logits, dim=1)[:, 1:2]
        heatmap = fake_grad_cam(a, self.net._fc.weight)
        # (N, 12, 12); the export writes the spec's dims into the graph where the exporter
        # leaves them symbolic (onnx_export.export_one)
        return score, heatmap.reshape(-1, HEATMAP_SIZE, HEATMAP_SIZE)


def build(path: Path) -> SbiServing:
    return SbiServing(load_checkpoint(path)).eval()
