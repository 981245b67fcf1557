"""Light-ASD: strict loading and sane speaking probabilities on real GRID talking faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfd import features
from export.models import light_asd
from export.onnx_export import verify
from export.samples import lipsync_clips

pytestmark = pytest.mark.unit

CLIPS = ("bbaf2n.mpg", "brbk7n.mpg", "lbax4n.mpg", "lrwp9a.mpg")


@pytest.fixture(scope="module")
def serving(weights_dir):
    return light_asd.LipsyncServing(
        light_asd.build(weights_dir / "light_asd" / "pretrain_AVA_CVPR.model")
    )


@pytest.fixture(scope="module")
def grid_clips(media_dir, face_box):
    """Per GRID clip: (video, mfcc) for its first two seconds."""
    return {name: lipsync_clips(media_dir / "grid" / name, face_box) for name in CLIPS}


def test_checkpoint_keys_are_model_and_heads(weights_dir):
    state = torch.load(weights_dir / "light_asd" / "pretrain_AVA_CVPR.model", map_location="cpu")
    assert {k.split(".")[0] for k in state} == {"model", "lossAV", "lossV"}
    net = light_asd.build(weights_dir / "light_asd" / "pretrain_AVA_CVPR.model")
    assert set(net.state_dict()) == set(state)


def test_speech_scores_lower_than_silence_for_the_same_face(serving, grid_clips):
    rng = np.random.default_rng(0)
    quiet = features.mfcc((rng.standard_normal(16_000 * 3) * 1e-3).astype(np.float32))[
        :200
    ].reshape(2, 100, 13)
    speech_scores = []
    for name, (video, mfcc) in grid_clips.items():
        assert video.shape == (2, 25, 112, 112) and mfcc.shape == (2, 100, 13)
        with torch.no_grad():
            score, speaking = serving(torch.from_numpy(video), torch.from_numpy(mfcc))
            silent_score, _ = serving(torch.from_numpy(video), torch.from_numpy(quiet))
        np.testing.assert_allclose(
            score.numpy()[:, 0], 1 - speaking.numpy().mean(axis=1), atol=1e-6
        )
        assert np.all((speaking.numpy() >= 0) & (speaking.numpy() <= 1))
        # the second second of every GRID clip is speech; silence must look less in sync
        assert float(score[1]) < float(silent_score[1]), name
        assert float(silent_score[1]) > 0.9, name
        speech_scores.append(float(score[1]))
    assert np.mean(speech_scores) < 0.5, speech_scores


def test_exported_lipsync_model_matches_pytorch(model_settings, onnx_models, grid_clips):
    video, mfcc = grid_clips[CLIPS[0]]
    for sl in (slice(0, 1), slice(0, 2)):
        inputs = {"video": video[sl], "mfcc": mfcc[sl]}
        diffs = verify("light_asd", model_settings, inputs, onnx_path=onnx_models["light_asd"])
        assert max(diffs.values()) < 1e-4, diffs
