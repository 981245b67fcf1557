"""deepfake_ensemble: wiring derived from the specs, and the real server runs it as designed.

Settles by experiment what the design relies on: a non-batching ensemble
(``max_batch_size: 0``) whose ``faces`` is ``[-1, 3, 256, 256]`` feeds ``visual``
(``max_batch_size: 64``, dims ``[3, 256, 256]``) with the item axis as the batch axis,
and ``visual``'s dynamic batcher merges the requests of concurrent ensemble requests.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dfd.ensemble import ENSEMBLE_INPUTS, ENSEMBLE_NAME, ENSEMBLE_OUTPUTS, WIRING, check_wiring
from dfd.errors import ConfigurationError, InputError
from dfd.specs import TensorSpec
from ensemble_config.ensemble import ENSEMBLE_HEADER, ensemble_config
from export.triton_repo import parse, role_specs
from tests.export import model_inputs

_ENSEMBLE_TENSORS = {t.name for t in (*ENSEMBLE_INPUTS, *ENSEMBLE_OUTPUTS)}


def _roles():
    from dfd.settings import Settings

    return role_specs(Settings())


@pytest.mark.unit
def test_steps_map_composing_tensors_as_keys_to_ensemble_tensors_as_values():
    roles = _roles()
    config = ensemble_config(roles)
    assert config.max_batch_size == 0
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "visual",
        "audio",
        "lipsync",
        "fusion",
    ]
    for step in config.ensemble_scheduling.step:
        s = roles[step.model_name]
        assert set(step.input_map) == {t.name for t in s.inputs}, step.model_name
        assert set(step.output_map) <= {t.name for t in s.outputs}
        assert set(step.input_map.values()) | set(step.output_map.values()) <= _ENSEMBLE_TENSORS
    assert [(t.name, tuple(t.dims)) for t in config.input] == [
        (t.name, t.dims) for t in ENSEMBLE_INPUTS
    ]
    assert [(t.name, tuple(t.dims)) for t in config.output] == [
        (t.name, t.dims) for t in ENSEMBLE_OUTPUTS
    ]


@pytest.mark.unit
def test_wiring_that_disagrees_with_a_spec_is_refused():
    roles = _roles()
    visual = roles["visual"]
    renamed = dataclasses.replace(visual, inputs=(TensorSpec("crop", "FP32", (3, 256, 256)),))
    with pytest.raises(ConfigurationError, match="'face'"):
        check_wiring({**roles, "visual": renamed})
    resized = dataclasses.replace(visual, inputs=(TensorSpec("face", "FP32", (3, 128, 128)),))
    with pytest.raises(ConfigurationError, match="faces"):
        check_wiring({**roles, "visual": resized})
    assert "key` is the composing model's tensor" in ENSEMBLE_HEADER
    assert set(WIRING) == {"visual", "audio", "lipsync", "fusion"}


@pytest.mark.integration
def test_generated_config_says_which_side_is_which(triton):
    text = (triton.repository / ENSEMBLE_NAME / "config.pbtxt").read_text()
    assert (
        "`key` is the composing model's tensor" in text
        and "`value` is the ensemble's tensor" in text
    )
    assert parse(text).name == ENSEMBLE_NAME


def _request(media_dir, faces: int, windows: int, mask=(1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
    video, mfcc = model_inputs.lipsync_clip(media_dir)
    return {
        "faces": model_inputs.faces(media_dir, faces),
        "audio": model_inputs.waveforms(media_dir, windows),
        "lipsync_video": video,
        "lipsync_mfcc": mfcc,
        "mask": np.asarray(mask, dtype=np.float32),
        "weights": np.asarray([0.3, 0.5, 0.2], dtype=np.float32),
    }


def _reference(triton, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ensemble computed step by step with onnxruntime."""
    roles = role_specs(triton.settings)
    onnx = {role: triton.settings.onnx_dir / f"{s.checkpoint}.onnx" for role, s in roles.items()}
    v = model_inputs.ort_run(onnx["visual"], {"face": request["faces"]})
    a = model_inputs.ort_run(onnx["audio"], {"waveform": request["audio"]})
    ls = model_inputs.ort_run(
        onnx["lipsync"], {"video": request["lipsync_video"], "mfcc": request["lipsync_mfcc"]}
    )
    f = model_inputs.ort_run(
        onnx["fusion"],
        {
            "visual_scores": v["score"],
            "audio_scores": a["score"],
            "lipsync_scores": ls["score"],
            "mask": request["mask"],
            "weights": request["weights"],
        },
    )
    return {
        "confidence": f["confidence"],
        "modality_scores": f["modality_scores"],
        "visual_scores": v["score"],
        "heatmaps": v["heatmap"],
        "audio_scores": a["score"],
        "lipsync_scores": ls["score"],
    }


@pytest.mark.integration
@pytest.mark.parametrize("mask", [(1.0, 1.0, 1.0), (1.0, 1.0, 0.0)], ids=["all", "no-lipsync"])
def test_ensemble_matches_onnxruntime_on_real_media(triton, media_dir, mask):
    request = _request(media_dir, faces=4, windows=3, mask=mask)
    got = triton.client.infer(ENSEMBLE_NAME, request)
    want = _reference(triton, request)
    assert set(got) == {t.name for t in ENSEMBLE_OUTPUTS}
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    # The fused confidence ignores a masked modality: the same as fusing the other two.
    from dfd.fusion import fuse

    used = {
        m: got[f"{m}_scores"]
        for m, on in zip(("visual", "audio", "lipsync"), mask, strict=True)
        if on
    }
    _, confidence = fuse(used, [0.3, 0.5, 0.2])
    assert got["confidence"][0] == pytest.approx(confidence, abs=1e-5)


@pytest.mark.integration
def test_concurrent_ensemble_requests_are_batched_inside_visual_and_audio(triton, media_dir):
    client = triton.client
    request = _request(media_dir, faces=2, windows=1)
    before = {m: client.model_statistics(m) for m in ("visual", "audio", "deepfake_ensemble")}
    n = 24
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: client.infer(ENSEMBLE_NAME, request), range(n)))
    after = {m: client.model_statistics(m) for m in before}
    first = results[0]["confidence"]
    assert all(np.allclose(r["confidence"], first, atol=1e-5) for r in results)

    def delta(model: str, key: str) -> int:
        if key == "requests":
            return int(after[model]["inference_stats"]["success"].get("count", 0)) - int(
                before[model]["inference_stats"]["success"].get("count", 0)
            )
        return int(after[model].get(key, 0)) - int(before[model].get(key, 0))

    assert delta("deepfake_ensemble", "requests") == n
    for model, items in (("visual", 2), ("audio", 1)):
        assert delta(model, "requests") == n
        assert delta(model, "inference_count") == n * items
        executions = delta(model, "execution_count")
        print(f"{model}: {n} ensemble requests -> {executions} executions")
        assert executions < n, f"{model}: dynamic batching did not merge ensemble requests"


@pytest.mark.integration
def test_more_items_than_a_composing_model_batches_is_refused(triton, media_dir):
    request = _request(media_dir, faces=1, windows=1)
    request["faces"] = np.zeros((65, 3, 256, 256), dtype=np.float32)
    with pytest.raises(InputError, match="faces: 65 items is over the limit of 64"):
        triton.client.infer(ENSEMBLE_NAME, request)
    # Sent anyway (validation off), Triton refuses it too and stays up.
    raw = type(triton.client)(triton.grpc_url, timeout_s=60, retries=0)
    raw.models = {}
    with pytest.raises(InputError, match="batch-size must be <= 64"):
        raw.infer(ENSEMBLE_NAME, request)
    raw.close()
    assert triton.client.is_ready(ENSEMBLE_NAME)
