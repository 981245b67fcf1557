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

from dfd.detectors import DETECTORS, LooksAt
from dfd.ensemble import ALL_INPUTS, ENSEMBLE_NAME, ensemble, for_settings
from dfd.errors import ConfigurationError, InputError
from dfd.settings import Settings
from dfd.specs import TensorSpec, spec
from ensemble_config.ensemble import ensemble_config, ensemble_header
from export.triton_repo import parse, role_specs
from tests.export import model_inputs


@pytest.mark.unit
def test_steps_map_composing_tensors_as_keys_to_ensemble_tensors_as_values():
    roles = role_specs(Settings())
    graph = for_settings(Settings())
    config = ensemble_config(graph)
    assert config.max_batch_size == 0
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "visual",
        "audio",
        "lipsync",
    ]
    names = {t.name for t in (*graph.inputs, *graph.outputs)}
    for step in config.ensemble_scheduling.step:
        s = roles[step.model_name]
        assert set(step.input_map) == {t.name for t in s.inputs}, step.model_name
        assert set(step.output_map) <= {t.name for t in s.outputs}
        assert set(step.input_map.values()) | set(step.output_map.values()) <= names
    assert [t.name for t in config.input] == ["faces", "audio", "lipsync_video", "lipsync_mfcc"]
    assert [t.name for t in config.output] == [
        "visual_scores",
        "heatmaps",
        "audio_scores",
        "lipsync_scores",
    ]
    assert graph.item_limits == {
        "faces": 64,
        "audio": 32,
        "lipsync_video": 32,
        "lipsync_mfcc": 32,
    }


@pytest.mark.unit
def test_the_ensemble_follows_the_enabled_detectors():
    voice_only = for_settings(Settings(detectors="audio"))
    assert [s.model.name for s in voice_only.steps] == ["audio"]
    assert [t.name for t in voice_only.inputs] == ["audio"]
    assert [t.name for t in voice_only.outputs] == ["audio_scores"]
    assert [s.model_name for s in ensemble_config(voice_only).ensemble_scheduling.step] == ["audio"]
    assert set(role_specs(Settings(detectors="audio"))) == {"face_detector", "vad", "audio"}
    with pytest.raises(ConfigurationError, match="no detector named nope"):
        for_settings(Settings(detectors="audio,nope"))
    with pytest.raises(ConfigurationError, match="at least one scoring detector"):
        for_settings(Settings(detectors="speech"))


@pytest.mark.unit
def test_wiring_that_disagrees_with_a_spec_is_refused():
    roles = role_specs(Settings())
    visual = roles["visual"]
    scorers = [DETECTORS[n] for n in ("visual", "audio", "lipsync")]
    renamed = dataclasses.replace(visual, outputs=(TensorSpec("p", "FP32", (1,)),))
    with pytest.raises(ConfigurationError, match="no output"):
        ensemble(scorers, {**roles, "visual": renamed})
    resized = dataclasses.replace(visual, inputs=(TensorSpec("face", "FP32", (3, 128, 128)),))
    with pytest.raises(ConfigurationError, match="faces"):
        ensemble(scorers, {**roles, "visual": resized})
    with pytest.raises(ConfigurationError, match="must serve the model of its name"):
        for_settings(Settings(), {"visual": roles["audio"]})
    assert "key` is the composing model's tensor" in ensemble_header(for_settings(Settings()))
    assert set(ALL_INPUTS) == {
        "faces",
        "audio",
        "lipsync_video",
        "lipsync_mfcc",
        "frames",
        "sbi_faces",
    }


@pytest.mark.unit
def test_sbi_is_fed_its_own_crops_and_answers_its_own_heatmaps():
    roles = role_specs(Settings())
    detectors = [DETECTORS[n] for n in ("visual", "sbi")]
    graph = ensemble(detectors, {**roles, "sbi": spec("sbi")})
    assert graph.step("sbi").inputs == {"face": "sbi_faces"}
    assert graph.step("sbi").outputs == {"score": "sbi_scores", "heatmap": "sbi_heatmaps"}
    assert graph.step("visual").inputs == {"face": "faces"}
    by_name = {t.name: t for t in graph.inputs}
    assert by_name["sbi_faces"].dtype == "UINT8" and by_name["sbi_faces"].dims == (-1, 3, 380, 380)
    assert [t.name for t in graph.group_inputs(LooksAt.FACE_TRACK)] == ["faces", "sbi_faces"]
    assert {t.name: t.dims for t in graph.outputs}["sbi_heatmaps"] == (-1, 12, 12)
    # SBI served dfd's 256 px float crop (as before its own crop) no longer fits
    old = dataclasses.replace(spec("sbi"), inputs=(TensorSpec("face", "FP32", (3, 256, 256)),))
    with pytest.raises(ConfigurationError, match="sbi_faces"):
        ensemble(detectors, {**roles, "sbi": old})


@pytest.mark.integration
def test_generated_config_says_which_side_is_which(triton):
    text = (triton.repository / ENSEMBLE_NAME / "config.pbtxt").read_text()
    assert (
        "`key` is the composing model's tensor" in text
        and "`value` is the ensemble's tensor" in text
    )
    assert parse(text).name == ENSEMBLE_NAME


def _request(media_dir, faces: int, windows: int) -> dict[str, np.ndarray]:
    video, mfcc = model_inputs.lipsync_clip(media_dir)
    return {
        "faces": model_inputs.faces(media_dir, faces),
        "audio": model_inputs.waveforms(media_dir, windows),
        "lipsync_video": video,
        "lipsync_mfcc": mfcc,
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
    return {
        "visual_scores": v["score"],
        "heatmaps": v["heatmap"],
        "audio_scores": a["score"],
        "lipsync_scores": ls["score"],
    }


@pytest.mark.integration
def test_ensemble_matches_onnxruntime_on_real_media(triton, media_dir):
    request = _request(media_dir, faces=4, windows=3)
    got = triton.client.infer(ENSEMBLE_NAME, request)
    want = _reference(triton, request)
    assert set(got) == {t.name for t in for_settings(triton.settings).outputs}
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.integration
def test_concurrent_ensemble_requests_are_batched_inside_visual_and_audio(triton, media_dir):
    client = triton.client
    request = _request(media_dir, faces=2, windows=1)
    before = {m: client.model_statistics(m) for m in ("visual", "audio", "deepfake_ensemble")}
    n = 24
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: client.infer(ENSEMBLE_NAME, request), range(n)))
    after = {m: client.model_statistics(m) for m in before}
    first = results[0]["audio_scores"]
    assert all(np.allclose(r["audio_scores"], first, atol=1e-5) for r in results)

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
