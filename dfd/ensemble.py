"""The ``deepfake_ensemble`` contract: its tensors and how its steps are wired, derived from
the enabled detectors (:mod:`dfd.detectors`).

One request per video: its face crops, audio windows and lip-sync clips, and its whole
frames when a frame detector is enabled (leading ``-1`` dims are the per-video item counts). Each enabled scorer is one step, fed the input group
of what it looks at, and answers ``<detector>_scores`` (plus evidence outputs such as the
visual detector's ``heatmaps``). A detector with a crop of its own (SBI) is fed that
crop of the same faces instead (:data:`OWN_INPUTS`): one row per face crop, so its items
share the face crops' spans and tracks. The ensemble does not fuse: the verdict's calibrated
fusion (:mod:`dfd.calibration`) is computed by ``dispatcher.aggregate`` over every
detector's findings. Everything that speaks to the ensemble reads it from here: the Triton
config (``ensemble_config.ensemble``), the dispatcher's requests (``dispatcher.infer``) and
the client's input checks (``dispatcher.triton_client``). Tensors are addressed by these
names, never by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dfd.detectors import Detector, LooksAt, scorers
from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import (
    AUDIO_SAMPLES,
    CLIP_SIZE,
    FACE_SIZE,
    HEATMAP_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_COEFFS,
    MFCC_PER_FRAME,
    SBI_HEATMAP_SIZE,
    SBI_SIZE,
    ModelSpec,
    TensorSpec,
    spec,
)

ENSEMBLE_NAME = "deepfake_ensemble"

# Inputs, grouped by what a detector looks at.
FACES = "faces"
AUDIO = "audio"
LIPSYNC_VIDEO = "lipsync_video"
LIPSYNC_MFCC = "lipsync_mfcc"
HEATMAPS = "heatmaps"
FRAMES = "frames"
SBI_FACES = "sbi_faces"
SBI_HEATMAPS = "sbi_heatmaps"

GROUPS: dict[LooksAt, tuple[TensorSpec, ...]] = {
    LooksAt.FACE_TRACK: (TensorSpec(FACES, "FP32", (-1, 3, FACE_SIZE, FACE_SIZE)),),
    LooksAt.SPEECH_WINDOW: (TensorSpec(AUDIO, "FP32", (-1, AUDIO_SAMPLES)),),
    LooksAt.FACE_AUDIO_CLIP: (
        TensorSpec(LIPSYNC_VIDEO, "FP32", (-1, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)),
        TensorSpec(LIPSYNC_MFCC, "FP32", (-1, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)),
    ),
    LooksAt.FRAME: (TensorSpec(FRAMES, "FP32", (-1, 3, CLIP_SIZE, CLIP_SIZE)),),
}
# Detectors fed a crop of their own of the items of what they look at (the same faces,
# cut their authors' way), in place of the group's tensors; cut only when one is enabled.
OWN_INPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "sbi": (TensorSpec(SBI_FACES, "UINT8", (-1, 3, SBI_SIZE, SBI_SIZE)),),
}
EVIDENCE_OUTPUTS: dict[str, TensorSpec] = {
    HEATMAPS: TensorSpec(HEATMAPS, "FP32", (-1, HEATMAP_SIZE, HEATMAP_SIZE)),
    SBI_HEATMAPS: TensorSpec(SBI_HEATMAPS, "FP32", (-1, SBI_HEATMAP_SIZE, SBI_HEATMAP_SIZE)),
}
# Every input any ensemble may have (the client checks names against these).
ALL_INPUTS: dict[str, TensorSpec] = {
    t.name: t for group in (*GROUPS.values(), *OWN_INPUTS.values()) for t in group
}


def inputs_of(detector: Detector) -> tuple[TensorSpec, ...]:
    """The ensemble tensors ``detector`` is fed: its own crop's, else its group's."""
    return OWN_INPUTS.get(detector.name) or GROUPS[detector.looks_at]


@dataclass(frozen=True)
class Step:
    """One composing model: its Triton name and its tensors' ensemble names.

    ``inputs`` and ``outputs`` map the composing model's tensor (key) to the ensemble's
    tensor (value), the orientation of Triton's input_map/output_map (getting it backwards
    is the classic ensemble bug, so the generated config repeats it in a comment).
    """

    detector: Detector
    model: ModelSpec
    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True)
class Ensemble:
    """The ensemble over a set of enabled scorers."""

    steps: tuple[Step, ...]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._fed(self.steps)

    def group_inputs(self, looks_at: LooksAt) -> tuple[TensorSpec, ...]:
        """The tensors the steps looking at ``looks_at`` are fed (each holds one row per
        item of the group)."""
        return self._fed([s for s in self.steps if s.detector.looks_at is looks_at])

    @staticmethod
    def _fed(steps: Sequence[Step]) -> tuple[TensorSpec, ...]:
        """The tensors ``steps`` are fed, each once, in step order."""
        seen: dict[str, TensorSpec] = {}
        for step in steps:
            for t in inputs_of(step.detector):
                seen.setdefault(t.name, t)
        return tuple(seen.values())

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        out = []
        for step in self.steps:
            for name in step.outputs.values():
                out.append(EVIDENCE_OUTPUTS.get(name) or TensorSpec(name, "FP32", (-1, 1)))
        return tuple(out)

    @property
    def item_limits(self) -> dict[str, int]:
        """Per input, the most items one request may carry: the smallest max_batch_size
        of the steps it feeds (the item axis becomes their batch axis)."""
        limits: dict[str, int] = {}
        for step in self.steps:
            for name in step.inputs.values():
                size = step.model.max_batch_size
                limits[name] = min(limits.get(name, size), size)
        return limits

    def step(self, detector: str) -> Step:
        for s in self.steps:
            if s.detector.name == detector:
                return s
        raise KeyError(detector)


def _full_dims(s: ModelSpec, t: TensorSpec) -> tuple[int, ...]:
    """A model tensor's dims as the non-batching ensemble sees them (batch axis included)."""
    return (-1, *t.dims) if s.max_batch_size > 0 else t.dims


def _step(detector: Detector, model: ModelSpec) -> Step:
    group = inputs_of(detector)
    if len(model.inputs) != len(group):
        raise ConfigurationError(
            f"{ENSEMBLE_NAME}: detector {detector.name!r} looks at {detector.looks_at} "
            f"({len(group)} tensors), its model {model.tag} takes {len(model.inputs)}"
        )
    inputs = {}
    for mine, theirs in zip(model.inputs, group, strict=True):
        if mine.dtype != theirs.dtype or _full_dims(model, mine) != theirs.dims:
            raise ConfigurationError(
                f"{ENSEMBLE_NAME}: {theirs.name!r} is {theirs.dtype}{list(theirs.dims)} in the "
                f"ensemble, {model.name}.{mine.name} is {mine.dtype}"
                f"{list(_full_dims(model, mine))}"
            )
        inputs[mine.name] = theirs.name
    names = {t.name for t in model.outputs}
    wanted = {"score": detector.scores_tensor, **dict(detector.evidence_outputs)}
    missing = sorted(set(wanted) - names)
    if missing:
        raise ConfigurationError(
            f"{ENSEMBLE_NAME}: step {model.name!r} has no output {missing} (it has {sorted(names)})"
        )
    return Step(detector, model, inputs, wanted)


def ensemble(detectors: Sequence[Detector], models: Mapping[str, ModelSpec]) -> Ensemble:
    """The ensemble over the scorers ``detectors``, each served by ``models[name]``.

    Raises:
        ConfigurationError: a model whose tensors do not fit what its detector looks at,
            two detectors on one Triton model, or no scorer at all.
    """
    steps = tuple(_step(d, models[d.name]) for d in detectors if d.scorer)
    if not steps:
        raise ConfigurationError(f"{ENSEMBLE_NAME}: no scoring detector is enabled")
    served = [s.model.name for s in steps]
    if len(set(served)) != len(served):
        raise ConfigurationError(f"{ENSEMBLE_NAME}: two detectors on one model in {served}")
    return Ensemble(steps)


def for_settings(settings: Settings, models: Mapping[str, ModelSpec] | None = None) -> Ensemble:
    """The ensemble of the detectors ``settings`` enables, each served by the checkpoint its
    setting names, or by ``models[detector]`` where given (a role override)."""
    chosen = scorers(settings)
    specs = {d.name: (models or {}).get(d.name) or spec(d.checkpoint(settings)) for d in chosen}
    for name, s in specs.items():
        if s.name != name:
            raise ConfigurationError(
                f"{ENSEMBLE_NAME}: detector {name!r} is served by Triton model {s.name!r} "
                f"({s.tag}); a detector's checkpoint must serve the model of its name"
            )
    return ensemble(chosen, specs)
