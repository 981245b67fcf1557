"""The ``deepfake_ensemble`` contract: its tensors and how its steps are wired.

One request per video: its face crops, audio windows and lip-sync clips (leading ``-1``
dims are the per-video item counts) plus the fusion mask and weights. The ensemble's
steps run ``visual``, ``audio`` and ``lipsync`` and then ``fusion`` on their per-item
scores. Everything that speaks to the ensemble reads it from here: the Triton config
(``ensemble_config.ensemble``), the dispatcher's requests (``dispatcher.infer``) and the
client's input checks (``dispatcher.triton_client``). Tensors are addressed by these
names, never by position.
"""

from __future__ import annotations

from collections.abc import Mapping

from dfd.errors import ConfigurationError
from dfd.specs import (
    AUDIO_SAMPLES,
    FACE_SIZE,
    HEATMAP_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_COEFFS,
    MFCC_PER_FRAME,
    ModelSpec,
    TensorSpec,
)

ENSEMBLE_NAME = "deepfake_ensemble"

# Inputs.
FACES = "faces"
AUDIO = "audio"
LIPSYNC_VIDEO = "lipsync_video"
LIPSYNC_MFCC = "lipsync_mfcc"
MASK = "mask"
WEIGHTS = "weights"
# Outputs.
CONFIDENCE = "confidence"
MODALITY_SCORES = "modality_scores"
VISUAL_SCORES = "visual_scores"
HEATMAPS = "heatmaps"
AUDIO_SCORES = "audio_scores"
LIPSYNC_SCORES = "lipsync_scores"

ENSEMBLE_INPUTS = (
    TensorSpec(FACES, "FP32", (-1, 3, FACE_SIZE, FACE_SIZE)),
    TensorSpec(AUDIO, "FP32", (-1, AUDIO_SAMPLES)),
    TensorSpec(LIPSYNC_VIDEO, "FP32", (-1, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)),
    TensorSpec(LIPSYNC_MFCC, "FP32", (-1, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)),
    TensorSpec(MASK, "FP32", (3,)),
    TensorSpec(WEIGHTS, "FP32", (3,)),
)
ENSEMBLE_OUTPUTS = (
    TensorSpec(CONFIDENCE, "FP32", (1,)),
    TensorSpec(MODALITY_SCORES, "FP32", (3,)),
    TensorSpec(VISUAL_SCORES, "FP32", (-1, 1)),
    TensorSpec(HEATMAPS, "FP32", (-1, HEATMAP_SIZE, HEATMAP_SIZE)),
    TensorSpec(AUDIO_SCORES, "FP32", (-1, 1)),
    TensorSpec(LIPSYNC_SCORES, "FP32", (-1, 1)),
)
INPUTS = {t.name: t for t in ENSEMBLE_INPUTS}
OUTPUTS = {t.name: t for t in ENSEMBLE_OUTPUTS}

# In every step: key = the composing model's tensor, value = the ensemble's tensor.
# (Triton's input_map/output_map use that orientation; getting it backwards is the
# classic ensemble bug, so the generated config repeats it in a comment.)
WIRING: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "visual": ({"face": FACES}, {"score": VISUAL_SCORES, "heatmap": HEATMAPS}),
    "audio": ({"waveform": AUDIO}, {"score": AUDIO_SCORES}),
    "lipsync": ({"video": LIPSYNC_VIDEO, "mfcc": LIPSYNC_MFCC}, {"score": LIPSYNC_SCORES}),
    "fusion": (
        {n: n for n in (VISUAL_SCORES, AUDIO_SCORES, LIPSYNC_SCORES, MASK, WEIGHTS)},
        {MODALITY_SCORES: MODALITY_SCORES, CONFIDENCE: CONFIDENCE},
    ),
}


# Ensemble inputs whose leading item axis becomes a composing model's batch axis, so that
# model's max_batch_size bounds the items of one request.
ITEM_ROLES: dict[str, str] = {
    ensemble_tensor: role
    for role, (inputs, _) in WIRING.items()
    if role != "fusion"
    for ensemble_tensor in inputs.values()
}


def _full_dims(s: ModelSpec, t: TensorSpec) -> tuple[int, ...]:
    """A role tensor's dims as the non-batching ensemble sees them (batch axis included)."""
    return (-1, *t.dims) if s.max_batch_size > 0 else t.dims


def check_wiring(roles: Mapping[str, ModelSpec]) -> None:
    """Fails when the wiring and the specs disagree (names, dims, dtypes, coverage)."""
    ensemble = {t.name: t for t in (*ENSEMBLE_INPUTS, *ENSEMBLE_OUTPUTS)}
    produced = {t.name for t in ENSEMBLE_INPUTS}
    for role, (inputs, outputs) in WIRING.items():
        s = roles[role]
        for kind, mapping, tensors in (("input", inputs, s.inputs), ("output", outputs, s.outputs)):
            by_name = {t.name: t for t in tensors}
            for key, value in mapping.items():
                if key not in by_name:
                    raise ConfigurationError(
                        f"{ENSEMBLE_NAME}: step {role!r} maps {kind} {key!r}, which the {role} "
                        f"spec does not have (it has {sorted(by_name)})"
                    )
                if value not in ensemble:
                    raise ConfigurationError(
                        f"{ENSEMBLE_NAME}: step {role!r} maps {key!r} to {value!r}, which is "
                        "not an ensemble tensor"
                    )
                want, got = ensemble[value], by_name[key]
                if want.dtype != got.dtype or want.dims != _full_dims(s, got):
                    raise ConfigurationError(
                        f"{ENSEMBLE_NAME}: {value!r} is {want.dtype}{list(want.dims)} in the "
                        f"ensemble, {role}.{key} is {got.dtype}{list(_full_dims(s, got))}"
                    )
            if kind == "input":
                unmapped = sorted(set(by_name) - set(mapping))
                if unmapped:
                    raise ConfigurationError(
                        f"{ENSEMBLE_NAME}: step {role!r} leaves inputs {unmapped} unfed"
                    )
        produced |= set(outputs.values())
    missing = sorted({t.name for t in ENSEMBLE_OUTPUTS} - produced)
    if missing:
        raise ConfigurationError(f"{ENSEMBLE_NAME}: outputs {missing} are produced by no step")
