"""The detectors: what each looks at, which model it runs, its licence, and what its
"nothing seen" is worth.

One entry per detector, keyed by its name in results (``Result.detectors``). The verdict
reads :attr:`Detector.can_clear` from here (a weak detector's low score never makes media
``authentic``), the result's ``detectors`` and ``models`` are derived from the entries,
and the web page and the scorecard name detectors as they are named here.

The scorers that are enabled (``DFD_DETECTORS``, default: those ``default_on``) are the
steps of ``deepfake_ensemble`` (:mod:`dfd.ensemble` derives its tensors and wiring from
them), the models of the repository, the fusion's inputs and the result's ``detectors``.
The speech gate is a detector too, not fused and not an ensemble step: the dispatcher
calls it first, and it decides what the voice detectors may judge.

Adding a detector: its model code and spec (``dfd.specs``), its manifest rows, an entry
here, and a calibration entry (``dfd models calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import spec


class LooksAt(StrEnum):
    """What a detector is given."""

    FACE_TRACK = "face_track"  # the crops of one face across the sampled frames
    FRAME = "frame"  # whole sampled frames
    SPEECH_WINDOW = "speech_window"  # ~4 s windows of 16 kHz audio that hold speech
    FACE_AUDIO_CLIP = "face_audio_clip"  # one second of a face at 25 fps with its audio
    FILE = "file"  # the whole track or file
    SPEECH_SEGMENT = "speech_segment"  # >= 1.6 s of one turn's speech (evidence only)
    # face-mesh landmarks of the lip-sync segments against the voice, measured by the
    # dispatcher (dispatcher.mouth), not an ensemble step
    MOUTH = "mouth"


@dataclass(frozen=True)
class Detector:
    """One detector.

    Attributes:
        name: its name in results.
        modality: the fusion input it feeds (``visual``, ``audio``, ``lipsync``), or
            ``None`` for a gate or evidence-only detector.
        looks_at: what it is given.
        model_setting: the ``Settings`` field naming its checkpoint (``visual_model``), or
            the fixed checkpoint for detectors with one (``silero_vad``).
        licence: the licence of its weights.
        default_on: whether it runs unless turned off.
        fused: whether its score enters the fused confidence (else evidence or gate only).
        can_clear: whether its finding nothing is evidence of authenticity for what it
            looks at; a detector too weak or too old for today's fakes cannot clear media.
        about: what it detects, in a line.
        evidence_outputs: model output -> ensemble output, besides its ``score``
            (the visual detector's and SBI's Grad-CAM heatmaps).
        fetched_by_user: its weights may not be shipped or downloaded by dfd on its own
            (a research-only licence): the user fetches them (``dfd models pull <name>``);
            until then an enabled detector is ``not installed`` (:func:`not_installed`).
        source: where its weights are published (the authors' page), for that message.
        trained_on: the data its weights were trained on, in a phrase (the README's
            detector table, ``benchmarks.report``).
        published: its authors' own figure, with where it was measured.
    """

    name: str
    modality: str | None
    looks_at: LooksAt
    model_setting: str
    licence: str
    default_on: bool
    fused: bool
    can_clear: bool
    about: str
    evidence_outputs: tuple[tuple[str, str], ...] = ()
    fetched_by_user: bool = False
    source: str = ""
    trained_on: str = ""
    published: str = ""

    @property
    def scorer(self) -> bool:
        """Whether it scores items in the ensemble (the speech gate, the voice consistency
        check and mouth sync, which the dispatcher runs itself, do not)."""
        return self.looks_at not in (LooksAt.FILE, LooksAt.SPEECH_SEGMENT, LooksAt.MOUTH)

    @property
    def scores_tensor(self) -> str:
        """The ensemble output holding its per-item scores."""
        return f"{self.name}_scores"

    def checkpoint(self, settings: Settings) -> str:
        """The checkpoint it runs with ``settings``."""
        return str(getattr(settings, self.model_setting, self.model_setting))


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            name="visual",
            modality="visual",
            looks_at=LooksAt.FACE_TRACK,
            model_setting="visual_model",
            licence="Apache-2.0 (MesoNet)",
            default_on=True,
            fused=True,
            # 2018 face swaps; on real GRID faces it gives 0.04-0.34: a hint, not a clearance
            can_clear=False,
            about="face-swap artefacts in aligned face crops (MesoNet, 2018 training data)",
            evidence_outputs=(("heatmap", "heatmaps"),),
            trained_on="the 2018 Deepfake set of Afchar et al. (faces from online face-swap videos)",
            published="frame accuracy 0.891 on that set (arXiv 1809.00888)",
        ),
        Detector(
            name="audio",
            modality="audio",
            looks_at=LooksAt.SPEECH_WINDOW,
            model_setting="audio_model",
            licence="MIT (AASIST)",
            default_on=True,
            fused=True,
            # ASVspoof 2019 LA EER 0.83 %: it can clear a voice of the spoofing it knows
            can_clear=True,
            about="synthetic or converted speech (AASIST, ASVspoof 2019 LA)",
            trained_on="ASVspoof 2019 LA train",
            published="EER 0.83 % on ASVspoof 2019 LA eval",
        ),
        Detector(
            name="audio_asv5",
            modality="audio",
            looks_at=LooksAt.SPEECH_WINDOW,
            model_setting="aasist_asvspoof5",
            licence="MIT (AASIST, ASVspoof 5 baseline)",
            # near chance on the wild audio (AUC 0.57, benchmarks/results/
            # audio_aasist_asvspoof5.md): run it by DFD_DETECTORS to measure, not by default
            default_on=False,
            fused=True,
            can_clear=False,  # dev EER 15.2 % on its own challenge: too weak to clear a voice
            about="synthetic or converted speech of the ASVspoof 5 attacks (AASIST baseline)",
            trained_on="ASVspoof 5 train (crowd-sourced English, newer TTS and voice-conversion attacks)",
            published="EER 15.2 % on ASVspoof 5 dev",
        ),
        Detector(
            name="rawgat",
            modality="audio",
            looks_at=LooksAt.SPEECH_WINDOW,
            model_setting="rawgat_st",
            licence="MIT (RawGAT-ST)",
            # ~0.8 core-seconds a window (AASIST's graph twice over) and, alone on the wild
            # audio, most real recordings above 0.5: run it by DFD_DETECTORS to measure
            default_on=False,
            fused=True,
            can_clear=False,
            about="synthetic or converted speech (RawGAT-ST, ASVspoof 2019 LA)",
            trained_on="ASVspoof 2019 LA train",
            published="EER 1.06 % on ASVspoof 2019 LA eval (arXiv 2107.12710)",
        ),
        Detector(
            name="ufd",
            modality="visual",
            looks_at=LooksAt.FRAME,
            model_setting="ufd_clip_vitl14",
            # weights: OpenAI's CLIP ViT-L/14 (MIT; trained on OpenAI's undisclosed 400 M
            # web image-text pairs) and the authors' linear head (MIT; trained on the ProGAN
            # real/fake set of Wang et al. 2020, LSUN images)
            licence="MIT (CLIP ViT-L/14, OpenAI) + MIT (UniversalFakeDetect head)",
            # the CLIP checkpoint (~890 MB) is the user's to fetch, and ~80 GFLOP a frame
            default_on=False,
            fused=True,
            can_clear=False,  # trained on GAN images; no clearance for today's video generators
            about="fully generated frames (UniversalFakeDetect: CLIP ViT-L/14 + linear probe)",
            fetched_by_user=True,  # OpenAI's ~890 MB checkpoint is not in the weights folder
            source="https://github.com/openai/CLIP (ViT-L/14) and "
            "https://github.com/WisconsinAIVision/UniversalFakeDetect (the head, shipped)",
            trained_on="CLIP: 400 M web image-text pairs; head: ProGAN real/fake (LSUN)",
            published="generalises from ProGAN to unseen GANs and diffusion models (arXiv 2302.10174, Tables 2-3)",
        ),
        Detector(
            name="lipsync",
            modality="lipsync",
            looks_at=LooksAt.FACE_AUDIO_CLIP,
            model_setting="lipsync_model",
            licence="MIT (Light-ASD)",
            default_on=True,
            fused=True,
            can_clear=False,  # an active-speaker model; experimental as a sync check
            about="a face not speaking in step with the voice (Light-ASD, experimental)",
            trained_on="AVA-ActiveSpeaker",
            published="mAP 94.1 % on AVA-ActiveSpeaker val (active speakers, not fakes)",
        ),
        Detector(
            name="mouth_sync",
            modality="lipsync",
            looks_at=LooksAt.MOUTH,
            model_setting="mediapipe_face_mesh",
            licence="Apache-2.0 (MediaPipe face mesh)",
            # evidence only: GRID dubs separate (benchmarks/results/mouth_sync.md), the
            # wild lip-sync and talking-head generators do not; run it by DFD_DETECTORS
            default_on=False,
            fused=False,
            can_clear=False,
            about="the mouth not opening with the voice's syllables (MediaPipe face mesh "
            "landmarks against speech energy, per face track)",
            trained_on="MediaPipe face mesh: Google's face images (landmarks only; the sync rule is dfd's)",
            published="none for fakes (a landmark model)",
        ),
        Detector(
            name="sbi",
            modality="visual",
            looks_at=LooksAt.FACE_TRACK,
            model_setting="sbi",
            licence="research-only (SelfBlendedImages; commercial use needs a licence "
            "agreement with the authors)",
            default_on=False,
            fused=True,
            # cross-dataset AUC 0.73 on DFDC (its authors' figure; here on its own crop
            # round YuNet's box, not RetinaFace's) and not yet on the scorecard: a
            # stronger hint than Meso4, not a clearance
            can_clear=False,
            about="blending artefacts of face swaps in face crops (SBI, EfficientNet-B4, "
            "trained on self-blended FF++ faces)",
            evidence_outputs=(("heatmap", "sbi_heatmaps"),),
            fetched_by_user=True,
            source="https://github.com/mapooon/SelfBlendedImages#2-pretrained-model",
            trained_on="FF++ real faces blended with themselves",
            published="AUC 93.82 % Celeb-DF, 73.01 % DFDC (cross-dataset)",
        ),
        Detector(
            name="speech",
            modality=None,
            looks_at=LooksAt.FILE,
            model_setting="silero_vad",
            licence="MIT (silero-vad)",
            default_on=True,
            fused=False,
            can_clear=False,
            about="where the speech is; the voice detectors judge only speech",
            trained_on="silero's multi-language speech corpora",
            published="none used here (a gate)",
        ),
        Detector(
            name="voice",
            modality=None,
            looks_at=LooksAt.SPEECH_SEGMENT,
            model_setting="resemblyzer",
            licence="Apache-2.0 (Resemblyzer)",
            # cheap (13-28 ms of CPU a segment) and no false change on 31 real one-voice
            # recordings, but unmeasured on real conversations (none annotated in the wild
            # set) and 14 % of speaker joins missed: benchmarks/results/voice_changes.md
            default_on=False,
            fused=False,  # evidence on the timeline, not a score of the verdict
            can_clear=False,
            about="a change of voice between speech segments (Resemblyzer GE2E embeddings)",
            trained_on="the speaker encoder of Real-Time-Voice-Cloning (GE2E; datasets not listed)",
            published="none published for the wheel's checkpoint",
        ),
    )
}


def enabled(settings: Settings) -> list[Detector]:
    """The detectors that run with ``settings`` (``DFD_DETECTORS``; empty: those on by
    default), in registry order; the speech gate always runs, the checks the dispatcher
    runs itself (voice consistency, mouth sync) when named, as the scorers are."""
    wanted = [n.strip() for n in settings.detectors.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(DETECTORS))
    if unknown:
        raise ConfigurationError(
            f"DFD_DETECTORS: no detector named {', '.join(unknown)}; known: "
            + ", ".join(d.name for d in DETECTORS.values() if d.looks_at is not LooksAt.FILE)
        )
    if wanted and not any(DETECTORS[n].scorer for n in wanted):
        raise ConfigurationError("DFD_DETECTORS: expected at least one scoring detector")
    return [
        d
        for d in DETECTORS.values()
        if (not d.scorer and d.default_on) or (d.name in wanted if wanted else d.default_on)
    ]


def scorers(settings: Settings) -> list[Detector]:
    """The enabled detectors that are steps of the ensemble (a user-fetched detector
    whose weights are absent is left out: see :func:`not_installed`)."""
    absent = not_installed(settings)
    return [d for d in enabled(settings) if d.scorer and d.name not in absent]


def missing_weights(detector: Detector, settings: Settings) -> list[str]:
    """The weight files (manifest names) of a user-fetched detector that are neither in
    ``DFD_WEIGHTS_DIR`` nor in the cache (where ``dfd models pull`` puts them); always
    empty for a detector dfd fetches itself. A presence check: ``export.weights`` checks
    the bytes when the model is exported."""
    if not detector.fetched_by_user:
        return []
    roots = [Path(settings.weights_dir)] if settings.weights_dir is not None else []
    roots.append(settings.weights_cache_dir)
    return [
        f
        for f in spec(detector.checkpoint(settings)).weights
        if not any((root / f).is_file() for root in roots)
    ]


def not_installed(settings: Settings) -> dict[str, str]:
    """Enabled user-fetched detectors whose weights are absent -> why, in words: which
    files, their licence and how to get them. They are not run (not ensemble steps, not
    in the Triton repository) and the result lists them with reason ``not-installed``."""
    out = {}
    for d in enabled(settings):
        missing = missing_weights(d, settings)
        if missing:
            out[d.name] = (
                f"{d.name} is not installed: its weights ({', '.join(missing)}) are not in "
                f"DFD_WEIGHTS_DIR nor in {settings.weights_cache_dir}; they are published "
                f"under {d.licence} and dfd does not fetch them on its own: read the terms "
                f"and run `dfd models pull {d.name}` (source: {d.source})"
            )
    return out


def of_modality(modality: str, settings: Settings) -> list[Detector]:
    """The enabled scorers of ``modality``."""
    return [d for d in scorers(settings) if d.modality == modality]


def fused_detectors() -> list[Detector]:
    """Every detector whose score may enter the fused confidence, in registry order."""
    return [d for d in DETECTORS.values() if d.fused]


def can_clear(name: str) -> bool:
    """Whether the detector ``name`` can clear media (see :class:`Detector`)."""
    d = DETECTORS.get(name)
    return d is not None and d.fused and d.can_clear
