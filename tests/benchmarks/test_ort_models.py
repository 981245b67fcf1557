"""The benchmarks' onnxruntime stand-in for Triton composes the ensemble as Triton does."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ort_models import OrtModels
from dfd.ensemble import ENSEMBLE_NAME, for_settings
from export.triton_repo import build_repository, role_specs
from tests.export import model_inputs
from tests.fixtures.triton import triton_settings


@pytest.mark.integration
def test_the_ensemble_request_runs_each_detector_on_its_inputs(weights_dir, media_dir):
    settings = triton_settings(weights_dir)
    # these three, whatever else the registry enables by default
    graph = for_settings(settings.model_copy(update={"detectors": "visual,audio,lipsync"}))
    models = OrtModels.of_repository(build_repository(settings, "cpu"), graph)
    video, mfcc = model_inputs.lipsync_clip(media_dir)
    request = {
        "faces": model_inputs.faces(media_dir, 3),
        "audio": model_inputs.waveforms(media_dir, 2),
        "lipsync_video": video,
        "lipsync_mfcc": mfcc,
    }
    got = models.infer(ENSEMBLE_NAME, request)

    # the same models run one by one on their own tensors' names
    onnx = {r: settings.onnx_dir / f"{s.checkpoint}.onnx" for r, s in role_specs(settings).items()}
    visual = model_inputs.ort_run(onnx["visual"], {"face": request["faces"]})
    audio = model_inputs.ort_run(onnx["audio"], {"waveform": request["audio"]})
    lipsync = model_inputs.ort_run(onnx["lipsync"], {"video": video, "mfcc": mfcc})
    want = {
        "visual_scores": visual["score"],
        "heatmaps": visual["heatmap"],
        "audio_scores": audio["score"],
        "lipsync_scores": lipsync["score"],
    }
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert got["visual_scores"].shape[0] == 3 and got["audio_scores"].shape[0] == 2
    assert set(models.cpu_s) == {"visual", "audio", "lipsync"}
    assert all(s > 0 for s in models.cpu_s.values())
