"""UniversalFakeDetect: our CLIP ViT encoder against an independent implementation, the
authors' head loaded strictly, CLIP's preprocessing, and the ONNX export.

OpenAI's ViT-L/14 checkpoint cannot be fetched here, so the encoder is checked with random
weights in OpenAI's layout at a small shape (width 128, 2 blocks, 2 heads, patch 32) that
keeps the real input (224 px) and embedding (768-d): the reference is Hugging Face
``transformers``' ``CLIPVisionModelWithProjection`` given the same tensors under its own
names, and its ``CLIPImageProcessorPil`` for the preprocessing. The archive the encoder is
loaded from is a TorchScript file in FP16 with ``visual.*`` and text keys, as OpenAI ships.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import CLIP_EMBEDDING, CLIP_SIZE, spec
from dispatcher.frames import clip_frame, pick
from export.models import clip_vit
from export.onnx_export import check_against_spec, module_onnx, run_onnx
from export.random_weights import random_clip_encoder

pytestmark = pytest.mark.unit
SMALL = clip_vit.VisionConfig(
    width=128, layers=2, heads=2, patch=32, resolution=CLIP_SIZE, embed_dim=CLIP_EMBEDDING
)
HEAD = "ufd_clip_linear/fc_weights.pth"


def random_encoder(config: clip_vit.VisionConfig = SMALL, seed: int = 0):
    return random_clip_encoder(config, seed)


class _OpenAILayout(torch.nn.Module):
    """A stand-in CLIP with OpenAI's top-level names (``visual``, text tensors beside it)."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.text_projection = torch.nn.Parameter(torch.randn(64, CLIP_EMBEDDING))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def save_openai_archive(encoder, path: Path) -> None:
    """A TorchScript archive in FP16, as OpenAI publishes ViT-L-14.pt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_OpenAILayout(encoder), torch.zeros(1, 3, CLIP_SIZE, CLIP_SIZE))
    traced.half().save(str(path))


def hf_reference(encoder):
    """transformers' CLIP vision tower with ``encoder``'s tensors under HF's names."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    c = encoder.config
    model = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=c.width,
            intermediate_size=4 * c.width,
            num_hidden_layers=c.layers,
            num_attention_heads=c.heads,
            image_size=c.resolution,
            patch_size=c.patch,
            projection_dim=c.embed_dim,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
    )
    s = encoder.state_dict()
    v = "vision_model."
    hf = {
        v + "embeddings.patch_embedding.weight": s["conv1.weight"],
        v + "embeddings.class_embedding": s["class_embedding"],
        v + "embeddings.position_embedding.weight": s["positional_embedding"],
        "visual_projection.weight": s["proj"].T,
    }
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for p in ("weight", "bias"):
            hf[f"{v}{theirs}.{p}"] = s[f"{ours}.{p}"]
    for i in range(c.layers):
        o, t = f"transformer.resblocks.{i}.", f"{v}encoder.layers.{i}."
        for j, qkv in enumerate("qkv"):
            w = slice(j * c.width, (j + 1) * c.width)
            hf[f"{t}self_attn.{qkv}_proj.weight"] = s[o + "attn.in_proj_weight"][w]
            hf[f"{t}self_attn.{qkv}_proj.bias"] = s[o + "attn.in_proj_bias"][w]
        for ours, theirs in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                hf[f"{t}{theirs}.{p}"] = s[f"{o}{ours}.{p}"]
    model.load_state_dict(hf, strict=True)
    return model.eval()


def test_the_state_dict_is_openai_visual_layout():
    keys = random_encoder().state_dict()
    block = "transformer.resblocks.0."
    expected = {
        "conv1.weight": (128, 3, 32, 32),
        "class_embedding": (128,),
        "positional_embedding": (50, 128),
        "ln_pre.weight": (128,),
        block + "attn.in_proj_weight": (384, 128),
        block + "attn.in_proj_bias": (384,),
        block + "attn.out_proj.weight": (128, 128),
        block + "attn.out_proj.bias": (128,),
        block + "ln_1.weight": (128,),
        block + "mlp.c_fc.weight": (512, 128),
        block + "mlp.c_proj.weight": (128, 512),
        block + "ln_2.bias": (128,),
        "ln_post.weight": (128,),
        "proj": (128, 768),
    }
    for name, shape in expected.items():
        assert tuple(keys[name].shape) == shape, name
    assert len(keys) == 6 + 2 + 12 * 2  # conv1 cls pos proj + 2 LayerNorms + 12 per block
    # ViT-L/14's own shape, counted without allocating it
    big = clip_vit.VIT_L_14
    assert (big.grid**2 + 1, big.width // big.heads) == (257, 64)


def test_encoder_equals_the_transformers_clip_vision_tower():
    encoder = random_encoder()
    reference = hf_reference(encoder)
    x = torch.randn(3, 3, CLIP_SIZE, CLIP_SIZE)
    with torch.no_grad():
        ours = encoder(x)
        theirs = reference(pixel_values=x).image_embeds
    assert ours.shape == (3, CLIP_EMBEDDING)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    assert ours.std() > 0.1  # not a degenerate output that would match anything


def test_the_openai_archive_loads_strictly_with_its_shape_read_from_the_tensors(tmp_path):
    encoder = random_encoder()
    path = tmp_path / "ViT-tiny.pt"
    save_openai_archive(encoder, path)
    loaded = clip_vit.build_encoder(path)
    assert loaded.config == SMALL
    x = torch.randn(2, 3, CLIP_SIZE, CLIP_SIZE)
    with torch.no_grad():
        # the archive is FP16: the loaded encoder has the rounded weights, cast to FP32
        rounded = random_encoder()
        rounded.load_state_dict({k: v.half().float() for k, v in encoder.state_dict().items()})
        torch.testing.assert_close(loaded(x), rounded(x), atol=1e-6, rtol=1e-6)
    # a plain state dict (torch.save) is read too
    plain = tmp_path / "plain.pt"
    torch.save({f"visual.{k}": v for k, v in encoder.state_dict().items()}, plain)
    assert clip_vit.build_encoder(plain).config == SMALL


def test_a_checkpoint_without_a_vit_is_a_clear_error(tmp_path):
    path = tmp_path / "rn50.pt"
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigurationError, match="no ViT image encoder"):
        clip_vit.build_encoder(path)
    torch.save({"token_embedding.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigurationError, match=r"no visual\.\* tensors"):
        clip_vit.build_encoder(path)


def test_the_authors_head_loads_strictly(weights_dir):
    head = clip_vit.build_head(weights_dir / HEAD, CLIP_EMBEDDING)
    assert tuple(head.weight.shape) == (1, CLIP_EMBEDDING) and tuple(head.bias.shape) == (1,)
    assert head.weight.abs().sum() > 0
    with pytest.raises(RuntimeError, match="size mismatch"):
        clip_vit.build_head(weights_dir / HEAD, 1024)


@pytest.mark.parametrize("size", [(1080, 1920), (720, 1280), (480, 640), (1280, 720), (224, 300)])
def test_frame_preprocessing_is_clips(size):
    from transformers import CLIPImageProcessorPil

    rng = np.random.default_rng(size[0])
    # smooth content plus noise: bicubic overshoot and the crop offset both show
    yy, xx = np.mgrid[: size[0], : size[1]]
    base = 127 + 100 * np.sin(xx[..., None] / 37.0 + yy[..., None] / 53.0 + np.arange(3))
    image = (base + rng.normal(0, 20, (*size, 3))).clip(0, 255).astype(np.uint8)
    ours = clip_frame(image)
    assert ours.shape == (3, CLIP_SIZE, CLIP_SIZE) and ours.dtype == np.float32
    mean = np.array(clip_vit.CLIP_MEAN, np.float32)[:, None, None]
    std = np.array(clip_vit.CLIP_STD, np.float32)[:, None, None]
    theirs = CLIPImageProcessorPil()(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose((ours - mean) / std, theirs, atol=1e-5)


def test_frame_preprocessing_rejects_what_is_not_an_rgb_frame():
    with pytest.raises(ValueError, match="expected RGB uint8"):
        clip_frame(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="expected RGB uint8"):
        clip_frame(np.zeros((10, 10, 3), np.float32))


def test_frames_are_picked_evenly_within_the_limit():
    assert pick(5, 16) == [0, 1, 2, 3, 4]
    chosen = pick(1800, 16)
    assert len(chosen) == 16 and chosen[0] == 0 and chosen[-1] == 1799
    assert np.ptp(np.diff(chosen)) <= 1


def small_ufd(weights_dir: Path) -> clip_vit.UFDServing:
    head = clip_vit.build_head(weights_dir / HEAD, CLIP_EMBEDDING)
    return clip_vit.UFDServing(random_encoder(), head).eval()


def test_ufd_is_the_head_on_the_projected_embedding_of_the_normalised_frame(weights_dir):
    from transformers import CLIPImageProcessorPil

    model = small_ufd(weights_dir)
    reference = hf_reference(model.encoder)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    pixels = CLIPImageProcessorPil()(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        score, logit = model(torch.from_numpy(clip_frame(image))[None])
        want = model.head(reference(pixel_values=pixels).image_embeds)
    torch.testing.assert_close(logit, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score, torch.sigmoid(want), atol=1e-5, rtol=1e-5)


def export_small(weights_dir: Path) -> tuple[bytes, clip_vit.UFDServing]:
    """The small UFD exported exactly as the real one is (the spec's names and axes)."""
    model = small_ufd(weights_dir)
    return module_onnx(model, spec("ufd_clip_vitl14")), model


def test_onnx_equals_pytorch_and_fits_the_spec(tmp_path, weights_dir):
    data, model = export_small(weights_dir)
    check_against_spec(data, spec("ufd_clip_vitl14"))
    path = tmp_path / "ufd.onnx"
    path.write_bytes(data)
    frames = np.random.default_rng(2).random((3, 3, CLIP_SIZE, CLIP_SIZE), dtype=np.float32)
    got = run_onnx(path, {"frame": frames})
    with torch.no_grad():
        score, logit = model(torch.from_numpy(frames))
    np.testing.assert_allclose(got["logit"], logit.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["score"], score.numpy(), atol=1e-5)
    assert got["score"].shape == (3, 1) and np.ptp(got["logit"]) > 0


def test_without_openais_checkpoint_ufd_is_not_installed_and_says_where_to_get_it(
    tmp_path, weights_dir
):
    from dfd.detectors import not_installed, scorers
    from export.weights import manifest

    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir, detectors="visual,ufd")
    why = not_installed(settings)["ufd"]
    assert "clip/ViT-L-14.pt" in why and "dfd models pull ufd" in why and "MIT" in why
    assert [d.name for d in scorers(settings)] == ["visual"]  # not run, and not silently
    row = manifest()["clip/ViT-L-14.pt"]
    assert row.user_fetched and row.url.endswith(f"/{row.sha256}/ViT-L-14.pt")
    assert not manifest()[HEAD].user_fetched  # the head is MIT and ships


def test_pull_ufd_shows_the_terms_first_and_fetches_nothing_unaccepted(
    tmp_path, monkeypatch, capsys
):
    from cli.main import main

    monkeypatch.setenv("DFD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DFD_WEIGHTS_DIR", raising=False)
    assert main(["models", "pull", "ufd"]) == 2
    out = capsys.readouterr()
    assert "clip/ViT-L-14.pt" in out.out and "out of scope" in out.out
    assert "--accept-terms" in out.err
    assert not (tmp_path / "data" / "weights" / "clip").exists()
