"""Random weights at the real shapes for the detectors whose checkpoints the user fetches.

SBI's and OpenAI's CLIP checkpoints cannot be shipped or fetched here, so the tests check
our networks' layouts with random weights in the authors' layouts, and the cost benchmark
(``benchmarks.bench_ort``) times the full-size graphs with them: the arithmetic, and so the
cost, does not depend on the values. Nothing here is ever served.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from dfd.errors import ConfigurationError
from export.models import clip_vit, sbi

M = TypeVar("M", bound=nn.Module)


def randomised_efficientnet(model: M, seed: int = 0) -> M:
    """``model`` (an EfficientNet, ours or ``efficientnet-pytorch``'s) with random weights
    and batch-norm statistics that keep the activations in range, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1:  # batch-norm scale
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))
            else:
                # gain 1.9: the activations neither vanish nor explode through 32 blocks
                # (1.5 makes every face look alike, 2 overflows); a small head keeps the
                # softmax off its rails
                fan_in = t[0].numel()
                scale = 0.1 if name.endswith("_fc.weight") else 1.0
                t.copy_(scale * torch.randn(t.shape, generator=g) * (1.9 / fan_in) ** 0.5)
    return model.eval()


def random_clip_encoder(config: clip_vit.VisionConfig, seed: int = 0) -> clip_vit.VisionTransformer:
    """A CLIP ViT image encoder of shape ``config`` in OpenAI's layout, random weights."""
    torch.manual_seed(seed)
    encoder = clip_vit.VisionTransformer(config)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            # LayerNorms and biases too, so a swapped or missed tensor shows
            p.copy_(torch.randn_like(p) * (0.5 if "ln" in name else 0.05) + ("ln" in name))
    return encoder.eval()


def random_serving(checkpoint: str, seed: int = 0) -> nn.Module:
    """The serving module of a user-fetched checkpoint (``sbi``, ``ufd_clip_vitl14``) at its
    real shape with random weights: EfficientNet-B4 in the authors' layout, CLIP ViT-L/14
    with a random linear head."""
    if checkpoint == "sbi":
        detector = randomised_efficientnet(sbi.Detector(), seed)
        return sbi.SbiServing(detector).eval()
    if checkpoint == "ufd_clip_vitl14":
        encoder = random_clip_encoder(clip_vit.VIT_L_14, seed)
        head = nn.Linear(encoder.config.embed_dim, 1)
        return clip_vit.UFDServing(encoder, head).eval()
    raise ConfigurationError(
        f"random weights: no stand-in for checkpoint {checkpoint!r}; known: sbi, ufd_clip_vitl14"
    )
