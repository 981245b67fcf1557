"""Fusion: the numpy rule and the exported ONNX model agree, masks renormalise the weights."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.fusion import NO_SIGNAL_CONFIDENCE, fuse
from export.onnx_export import run_onnx

pytestmark = pytest.mark.unit


def test_weighted_mean_over_available_modalities():
    scores, confidence = fuse(
        {"visual": np.array([0.2, 0.4]), "audio": np.array([[0.9]]), "lipsync": None},
        (0.3, 0.5, 0.2),
    )
    np.testing.assert_allclose(scores[:2], [0.3, 0.9], atol=1e-7)
    assert np.isnan(scores[2])
    assert confidence == pytest.approx((0.3 * 0.3 + 0.5 * 0.9) / 0.8)


def test_weights_by_name_and_missing_keys():
    _, confidence = fuse({"audio": np.array([0.25])}, {"visual": 1.0, "audio": 2.0})
    assert confidence == pytest.approx(0.25)


def test_nothing_available_is_no_signal():
    assert fuse({"visual": np.array([]), "audio": None}, (0.3, 0.5, 0.2))[1] == NO_SIGNAL_CONFIDENCE
    assert fuse({"visual": np.array([0.9])}, (0.0, 1.0, 1.0))[1] == NO_SIGNAL_CONFIDENCE


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="3 weights"):
        fuse({}, (1.0, 2.0))
    with pytest.raises(ValueError, match="non-negative"):
        fuse({}, (1.0, -2.0, 1.0))


def _onnx(path, visual, audio, lipsync, mask, weights):
    col = lambda v: np.asarray(v, np.float32).reshape(-1, 1)  # noqa: E731
    return run_onnx(
        path,
        {
            "visual_scores": col(visual),
            "audio_scores": col(audio),
            "lipsync_scores": col(lipsync),
            "mask": np.asarray(mask, np.float32),
            "weights": np.asarray(weights, np.float32),
        },
    )


def test_onnx_model_agrees_with_the_reference_on_random_cases(onnx_models):
    rng = np.random.default_rng(7)
    for _ in range(30):
        counts = rng.integers(1, 6, size=3)
        items = [rng.uniform(0, 1, n) for n in counts]
        mask = rng.integers(0, 2, size=3).astype(np.float32)
        weights = rng.uniform(0, 1, 3).astype(np.float32)
        out = _onnx(onnx_models["fusion"], *items, mask, weights)
        ref_scores, ref_conf = fuse(
            {
                name: items[i] if mask[i] else None
                for i, name in enumerate(("visual", "audio", "lipsync"))
            },
            weights,
        )
        used = mask > 0
        np.testing.assert_allclose(out["modality_scores"], [x.mean() for x in items], atol=1e-6)
        np.testing.assert_allclose(out["modality_scores"][used], ref_scores[used], atol=1e-6)
        assert out["confidence"].shape == (1,)
        assert float(out["confidence"][0]) == pytest.approx(ref_conf, abs=1e-6)


def test_onnx_model_ignores_nan_rows_of_masked_modalities_and_says_half_without_signal(onnx_models):
    out = _onnx(onnx_models["fusion"], [0.8], [np.nan], [0.2, 0.4], [1, 0, 1], [0.3, 0.5, 0.2])
    assert float(out["confidence"][0]) == pytest.approx((0.3 * 0.8 + 0.2 * 0.3) / 0.5, abs=1e-6)
    out = _onnx(onnx_models["fusion"], [0.8], [0.1], [0.2], [0, 0, 0], [0.3, 0.5, 0.2])
    assert float(out["confidence"][0]) == NO_SIGNAL_CONFIDENCE
