"""CLIP's ViT image encoder in OpenAI's layout, and UniversalFakeDetect's linear probe on it.

UniversalFakeDetect (Ojha, Li, Lee, CVPR 2023) is ``fc(encode_image(x))``: the frozen
OpenAI CLIP ViT-L/14 image encoder's projected embedding (768-d, not normalised) through
one ``nn.Linear(768, 1)`` trained on ProGAN real/fake images; ``sigmoid`` of its output is
P(fake). This module is our own encoder whose ``state_dict`` keys and shapes are those of
the ``visual.*`` part of OpenAI's checkpoint (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N.{attn.in_proj_weight,
attn.in_proj_bias, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2}``, ``ln_post``,
``proj``; QuickGELU), parametrised by width, layers, heads and patch so tests can build a
small one. Attention is written out (not ``nn.MultiheadAttention``, whose fused inference
path the ONNX exporter does not take) under the same parameter names.

OpenAI ships the checkpoint as a TorchScript archive in FP16. ``clip.load(..., jit=False)``
reads it with ``torch.jit.load(...).state_dict()`` (falling back to ``torch.load`` for a
plain state dict), builds the model from the tensors' shapes and, on CPU, casts it to
FP32; :func:`load_visual_state` does the same for the ``visual.`` keys.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfd.errors import ConfigurationError

# CLIP's normalisation (openai/clip clip.py _transform), also UFD's "clip" MEAN/STD.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64  # OpenAI's ViTs: heads = width // 64


@dataclass(frozen=True)
class VisionConfig:
    """A CLIP ViT image encoder's shape.

    Attributes:
        width: token width (1024 for ViT-L/14).
        layers: residual attention blocks (24).
        heads: attention heads (16).
        patch: patch side in pixels (14).
        resolution: input side in pixels (224).
        embed_dim: projected embedding width (768).
    """

    width: int
    layers: int
    heads: int
    patch: int
    resolution: int
    embed_dim: int

    @property
    def grid(self) -> int:
        return self.resolution // self.patch


VIT_L_14 = VisionConfig(width=1024, layers=24, heads=16, patch=14, resolution=224, embed_dim=768)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, ``x * sigmoid(1.702 x)`` (not ``nn.GELU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ConfigurationError(f"CLIP ViT: width {width} is not a multiple of {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, L, D]
        n, length, width = x.shape
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = (width // self.heads) ** -0.5
        weights = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, length, width)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP's image encoder: normalised ``[N, 3, R, R]`` -> projected embedding ``[N, E]``
    (``CLIP.encode_image``)."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        scale = c.width**-0.5
        self.conv1 = nn.Conv2d(3, c.width, kernel_size=c.patch, stride=c.patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(c.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(c.grid**2 + 1, c.width))
        self.ln_pre = nn.LayerNorm(c.width)
        self.transformer = Transformer(c.width, c.layers, c.heads)
        self.ln_post = nn.LayerNorm(c.width)
        self.proj = nn.Parameter(scale * torch.randn(c.width, c.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [N, grid^2, width]
        cls = self.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


def config_from_state(state: dict[str, torch.Tensor]) -> VisionConfig:
    """The encoder's shape read from its tensors, as openai/clip ``build_model`` does."""
    if "conv1.weight" not in state or "proj" not in state:
        raise ConfigurationError(
            "CLIP checkpoint: no ViT image encoder in it (expected visual.conv1.weight and "
            "visual.proj; a ResNet CLIP such as RN50 is not supported)"
        )
    width, _, patch, _ = state["conv1.weight"].shape
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    grid = round((state["positional_embedding"].shape[0] - 1) ** 0.5)
    return VisionConfig(
        width=int(width),
        layers=layers,
        heads=int(width) // HEAD_WIDTH,
        patch=int(patch),
        resolution=int(patch) * grid,
        embed_dim=int(state["proj"].shape[1]),
    )


def load_visual_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``visual.`` tensors of an OpenAI CLIP checkpoint, prefix dropped, as FP32.

    Reads the TorchScript archive OpenAI publishes (``torch.jit.load``), or a plain state
    dict saved with ``torch.save``, as ``clip.load(..., jit=False)`` does.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the format OpenAI ships
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConfigurationError(
            f"CLIP checkpoint {path}: expected a state dict, got {type(state)}"
        )
    visual = {k[len("visual.") :]: v.float() for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise ConfigurationError(f"CLIP checkpoint {path}: no visual.* tensors in it")
    return visual


def build_encoder(path: Path) -> VisionTransformer:
    """The image encoder of the OpenAI CLIP checkpoint at ``path``, loaded strictly."""
    state = load_visual_state(path)
    encoder = VisionTransformer(config_from_state(state))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def build_head(path: Path, embed_dim: int) -> nn.Linear:
    """UFD's ``fc`` (``nn.Linear(embed_dim, 1)``) from its state dict, loaded strictly."""
    head = nn.Linear(embed_dim, 1)
    head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return head.eval()


class UFDServing(nn.Module):
    """What Triton serves: a ``[N, 3, R, R]`` RGB frame in [0, 1] (resized and centre-cropped
    by the caller) -> ``score`` = P(fake) and the head's ``logit``, both ``[N, 1]``.

    The CLIP normalisation is done here, so the frame group carries plain pixels.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: VisionTransformer, head: nn.Linear) -> None:
        super().__init__()
        if head.in_features != encoder.config.embed_dim:
            raise ConfigurationError(
                f"UFD: the head takes {head.in_features}-d features, the encoder gives "
                f"{encoder.config.embed_dim}"
            )
        self.encoder = encoder
        self.head = head
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).reshape(1, 3, 1, 1))

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit = self.head(self.encoder((frame - self.mean) / self.std))
        return torch.sigmoid(logit), logit


def build(clip_path: Path, head_path: Path) -> UFDServing:
    """UFD's serving module from the CLIP checkpoint and the linear head."""
    encoder = build_encoder(clip_path)
    return UFDServing(encoder, build_head(head_path, encoder.config.embed_dim)).eval()
