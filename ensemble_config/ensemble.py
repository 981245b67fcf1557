"""The ``deepfake_ensemble`` Triton config, derived from the specs.

One request per video: its face crops, audio windows and lip-sync clips (leading ``-1``
dims are the per-video item counts) plus the fusion mask and weights. Inside Triton the
steps run ``visual``, ``audio`` and ``lipsync`` (independent, so Triton runs them
concurrently) and then ``fusion`` on their per-item scores. A modality the video lacks is
sent as one dummy row with mask 0; fusion ignores it.

The ensemble does not batch (``max_batch_size: 0``): its item axis is the composing
models' batch axis, so the whole ``[N, 3, 256, 256]`` of one video reaches ``visual``
(``max_batch_size: 64``, dims ``[3, 256, 256]``) as one request of batch N, and
``visual``'s dynamic batcher merges those requests from concurrent videos
(``tests/export/test_ensemble.py`` checks both against the real server). Hence N must
stay within each composing model's ``max_batch_size``: the dispatcher chunks long videos
(``Settings.max_items_per_request``).

``face_detector`` is not a step: the dispatcher calls it first to find the crops.
"""

from __future__ import annotations

from collections.abc import Mapping

from tritonclient.grpc import model_config_pb2 as mc

from dfd.errors import ConfigurationError
from dfd.specs import ENSEMBLE_INPUTS, ENSEMBLE_NAME, ENSEMBLE_OUTPUTS, ModelSpec, TensorSpec

# In every step: key = the composing model's tensor, value = the ensemble's tensor.
# (Triton's input_map/output_map use that orientation; getting it backwards is the
# classic ensemble bug, so the generated config repeats it in a comment.)
WIRING: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "visual": ({"face": "faces"}, {"score": "visual_scores", "heatmap": "heatmaps"}),
    "audio": ({"waveform": "audio"}, {"score": "audio_scores"}),
    "lipsync": ({"video": "lipsync_video", "mfcc": "lipsync_mfcc"}, {"score": "lipsync_scores"}),
    "fusion": (
        {n: n for n in ("visual_scores", "audio_scores", "lipsync_scores", "mask", "weights")},
        {"modality_scores": "modality_scores", "confidence": "confidence"},
    ),
}

ENSEMBLE_HEADER = """\
deepfake_ensemble: one request per video; steps visual, audio, lipsync, then fusion.
In every step's input_map and output_map, `key` is the composing model's tensor and
`value` is the ensemble's tensor."""


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


def ensemble_config(roles: Mapping[str, ModelSpec]) -> mc.ModelConfig:
    """The ensemble's ``ModelConfig`` over the role specs (``export.triton_repo.role_specs``)."""
    check_wiring(roles)
    config = mc.ModelConfig(name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=0)
    for tensors, field in ((ENSEMBLE_INPUTS, config.input), (ENSEMBLE_OUTPUTS, config.output)):
        for t in tensors:
            field.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.dtype}"), dims=t.dims)
    for role, (inputs, outputs) in WIRING.items():
        step = config.ensemble_scheduling.step.add(
            model_name=role, model_version=roles[role].version
        )
        # key: composing model's tensor; value: ensemble tensor.
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return config
