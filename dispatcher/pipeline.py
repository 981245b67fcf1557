"""One video from a file or a URL to a :class:`dfd.schemas.Result`: every stage in order.

    workspace -> fetch (URL) -> probe (+ provenance, tags) -> decode (+ hashes, known
    fakes) -> speech -> faces -> infer -> evidence -> Result (facts may decide the label)

The worker (``dispatcher.jobs``) and ``dfd analyze`` both call :func:`analyze`; Triton and
the evidence store are passed in. Each stage is timed; a failure names its stage. Input
errors (the user's file or URL is wrong), transient errors (retry later) and configuration
errors pass through as they are; anything else is a bug and becomes an ``InternalError``
naming the stage. The job's temp folder is removed whatever happens.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dfd.calibration import Calibration
from dfd.calibration import load as load_calibration
from dfd.detectors import DETECTORS, Detector, enabled, not_installed
from dfd.ensemble import SBI_HEATMAPS, for_settings
from dfd.errors import DfdError, InternalError, JobCancelledError
from dfd.schemas import DetectorResult, JobSource, ModalityResult, Reason, Result, VoiceChange
from dfd.settings import Settings
from dfd.specs import spec
from dfd.states import MODALITY_ORDER, Stage
from dfd.tracing import tracer
from dispatcher.aggregate import (
    MediaFacts,
    ScoredItems,
    Verdict,
    by_track,
    primary,
    timeline,
    verdict,
)
from dispatcher.branches import overlapped
from dispatcher.cleanup import job_workspace
from dispatcher.decode import decode
from dispatcher.evidence import build_evidence
from dispatcher.faces import NO_FACES, find_faces
from dispatcher.facts import apply_facts
from dispatcher.fetch import fetch
from dispatcher.infer import (
    InferenceOutput,
    VideoItems,
    build_inputs,
    run_ensemble,
    score_with_version,
)
from dispatcher.known_fakes import audio_fingerprint, find_matches, hash_frames
from dispatcher.media import DecodedMedia
from dispatcher.metadata import telltale_metadata
from dispatcher.mouth import MouthFinding, find_mouth_sync
from dispatcher.probe import probe
from dispatcher.provenance import read_provenance
from dispatcher.speech import Speech, find_speech
from dispatcher.voice import VoiceChanges, check_voice, describe

if TYPE_CHECKING:
    from dispatcher.known_fakes import RedisBank
    from dispatcher.rollout import JobRollout

log = logging.getLogger(__name__)

Progress = Callable[[Stage, float], None]

# Result.timings_ms keys, per stage.
_TIMING_KEYS = {
    Stage.FETCH: "download",
    Stage.PROBE: "probe",
    Stage.DECODE: "decode",
    Stage.SPEECH: "speech",
    Stage.FACES: "faces",
    Stage.INFER: "inference",
    Stage.EVIDENCE: "evidence",
}


def detector_model(detector: Detector, settings: Settings) -> str:
    """``checkpoint@version`` a detector runs with these settings."""
    checkpoint = getattr(settings, detector.model_setting, detector.model_setting)
    return spec(str(checkpoint)).tag


@functools.cache
def calibration() -> Calibration:
    """The committed calibration (``dfd/calibration.json``), read once per process."""
    return load_calibration()


def detector_results(
    final: Verdict,
    speech: Speech,
    has_audio: bool,
    settings: Settings,
    voice: VoiceChanges | None = None,
    mouth: MouthFinding | None = None,
) -> dict[str, DetectorResult]:
    """Each enabled detector's finding, from the registry, with its calibrated probability."""
    out = {}
    absent = not_installed(settings)
    for d in enabled(settings):
        if d.name in absent:  # enabled, but its user-fetched weights are absent
            out[d.name] = DetectorResult(
                used=False,
                reason="not-installed",
                model=detector_model(d, settings),
                fused=False,
                detail=absent[d.name],
            )
        elif d.name == "mouth_sync":  # evidence only: measured here, not fused
            score = mouth.score if mouth is not None else None
            out[d.name] = DetectorResult(
                score=None if score is None else round(score, 4),
                used=score is not None,
                reason=None if score is not None else "no-speaking-face",
                model=detector_model(d, settings),
                fused=False,
                detail=mouth.detail if mouth is not None else None,
            )
        elif d.scorer:
            score = final.scores.get(d.name)
            calibrated = final.calibrated.get(d.name)
            out[d.name] = DetectorResult(
                score=None if score is None else round(score, 4),
                calibrated=None if calibrated is None else round(calibrated, 4),
                used=final.used.get(d.name, False),
                reason=final.unused_reason.get(d.name),
                model=detector_model(d, settings),
                fused=d.fused and final.weights.get(d.name, 0.0) > 0,
            )
        elif d.name == "voice":  # evidence only: where the voice changes
            out[d.name] = DetectorResult(
                used=voice is not None and len(voice.segments) > 1,
                reason="no-audio" if voice is None else None,
                model=detector_model(d, settings),
                fused=d.fused,
                detail=None if voice is None else describe(voice),
            )
        else:  # the speech gate
            out[d.name] = DetectorResult(
                used=has_audio,
                reason=None if has_audio else "no-audio",
                model=detector_model(d, settings),
                fused=d.fused,
                detail=f"{speech.seconds:.1f} s of speech in {len(speech.segments)} runs",
            )
    return out


def modality_results(final: Verdict) -> dict[str, ModalityResult]:
    """The per-modality summary: each modality's primary detector's score, the fusion
    weight share of all its detectors, used when any of them had input."""
    names = list(final.scores)
    out = {}
    for m in MODALITY_ORDER:
        mine = [n for n in names if DETECTORS[n].modality == m.value]
        lead = primary(m.value, names)
        score = final.scores.get(lead) if lead else None
        out[m.value] = ModalityResult(
            score=None if score is None else round(score, 4),
            weight=round(sum(final.weights.get(n, 0.0) for n in mine), 4),
            used=any(final.used.get(n, False) for n in mine),
            reason=final.unused_reason.get(lead) if lead else "off",
        )
    return out


def bounded_sampling(settings: Settings, duration_s: float) -> Settings:
    """``settings`` with the sampling rate lowered so that a video of ``duration_s`` gives at
    most ``max_sampled_frames`` frames (face detection runs on every one)."""
    if duration_s * settings.sample_fps <= settings.max_sampled_frames:
        return settings
    rate = settings.max_sampled_frames / duration_s
    log.info(
        "sampling %.0f s at %.4g fps instead of %g (DFD_MAX_SAMPLED_FRAMES %d)",
        duration_s,
        rate,
        settings.sample_fps,
        settings.max_sampled_frames,
    )
    return settings.model_copy(update={"sample_fps": rate})


def models_used(
    settings: Settings, versions: dict[str, tuple[int, int | None]] | None = None
) -> dict[str, str]:
    """Role -> ``checkpoint@version`` of every model a result depends on; a rollout's
    fused version in place of the repository's, and ``<role>.shadow`` for a shadow."""
    out = {"face_detector": spec(settings.face_model).tag}
    absent = not_installed(settings)
    for d in enabled(settings):
        if d.name in absent:  # not run: the result's detectors say why
            continue
        out[spec(d.checkpoint(settings)).name] = detector_model(d, settings)
    for role, (fused, beside) in (versions or {}).items():
        checkpoint = out[role].rsplit("@", 1)[0]
        out[role] = f"{checkpoint}@{fused}"
        if beside is not None:
            out[f"{role}.shadow"] = f"{checkpoint}@{beside}"
    out["calibration"] = calibration().version
    return out


def apply_rollout(
    out: InferenceOutput,
    inputs: VideoItems,
    triton: Any,
    settings: Settings,
    rollout: JobRollout | None,
) -> tuple[InferenceOutput, dict[str, ScoredItems | None], dict[str, tuple[int, int | None]]]:
    """The ensemble's output with each canary role's items rescored by this job's version,
    the shadows' items, and per rolled-out (or promoted) role the versions used."""
    if rollout is None:
        return out, {}, {}
    graph = for_settings(settings)
    items = dict(out.items)
    shadows: dict[str, ScoredItems | None] = {}
    versions: dict[str, tuple[int, int | None]] = {}
    for role, (fused, beside) in rollout.versions().items():
        if role not in items:  # its detector is not enabled here
            continue
        versions[role] = (fused, beside)
        if fused != graph.step(role).model.version:  # not the version the ensemble pins
            items[role] = score_with_version(inputs, triton, graph, role, fused)
        if beside is not None:
            shadows[role] = score_with_version(inputs, triton, graph, role, beside)
    return replace(out, items=items), shadows, versions


def record_rollout(
    rollout: JobRollout, final: Verdict, shadows: dict[str, ScoredItems | None]
) -> None:
    """Each rolled-out role's video score (and its shadow's) into the rollout's tallies;
    a Redis failure is logged, never the job's failure."""
    scores: dict[str, tuple[float | None, float | None]] = {}
    for role in rollout.plans:
        if role not in final.scores:
            continue
        shadow = by_track({role: shadows.get(role)})[role]
        beside = None if shadow is None else float(np.mean(shadow.scores))
        scores[role] = (final.scores[role], beside)
    try:
        rollout.record(scores)
    except Exception:  # noqa: BLE001 - bookkeeping must not fail an analysis
        log.warning("rollout: could not record job %s's scores", rollout.job_id, exc_info=True)


class _Stages:
    """Times stages, reports progress and gives failures their stage's name."""

    def __init__(self, progress: Progress | None) -> None:
        self.timings_ms: dict[str, float] = {}
        self._progress = progress
        self._lock = threading.Lock()  # the overlapped branches report from two threads

    def report(self, stage: Stage, fraction: float) -> None:
        if self._progress is not None:
            try:
                with self._lock:
                    self._progress(stage, fraction)
            except JobCancelledError:
                raise  # the client cancelled: stop at this stage boundary
            except Exception:  # progress is advisory; a lost update must not fail the job
                log.warning("progress report for %s failed", stage.value, exc_info=True)

    def reporter(self, stage: Stage) -> Callable[[float], None]:
        return lambda fraction: self.report(stage, fraction)

    @contextmanager
    def timed(self, key: str, stage: Stage) -> Iterator[None]:
        """Time a step inside ``stage`` under its own ``timings_ms`` key, without progress."""
        started = time.perf_counter()
        try:
            with self.failures(stage):
                yield
        finally:
            self.timings_ms[key] = round((time.perf_counter() - started) * 1000, 1)

    @contextmanager
    def failures(self, stage: Stage) -> Iterator[None]:
        """Give a failure the stage's name; anything not a ``DfdError`` is a bug."""
        try:
            yield
        except DfdError as exc:
            if getattr(exc, "stage", None) is None:
                exc.stage = stage  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            err = InternalError(f"{stage.value}: unexpected {type(exc).__name__}: {exc}")
            err.stage = stage  # type: ignore[attr-defined]
            raise err from exc

    @contextmanager
    def run(self, stage: Stage) -> Iterator[None]:
        self.report(stage, 0.0)
        started = time.perf_counter()
        # One child span of the current (job) span per stage; it records the stage's error.
        with tracer().start_as_current_span(f"dfd.stage.{stage.value}"):
            try:
                with self.failures(stage):
                    yield
            finally:
                elapsed_ms = (time.perf_counter() - started) * 1000
                self.timings_ms[_TIMING_KEYS[stage]] = round(elapsed_ms, 1)
        self.report(stage, 1.0)


def _source(source: JobSource | str | Path) -> tuple[str | None, Path | None]:
    """``(url, path)``: exactly one is set."""
    if isinstance(source, JobSource):
        if source.kind == "url":
            if not source.url:
                raise InternalError("job source: kind=url without a url")
            return source.url, None
        if not source.path:
            raise InternalError("job source: kind=upload without a path")
        return None, Path(source.path)
    text = str(source)
    if "://" in text:
        return text, None
    return None, Path(text)


def timeline_times(media: DecodedMedia, sample_fps: float) -> list[tuple[int, float]]:
    """``(frame, time_s)`` of each timeline point: the sampled frames of a video; for an
    audio file one point per sampling interval, numbered from 0."""
    if media.frames:
        return [(f.index, f.time_s) for f in media.frames]
    count = max(1, math.ceil(media.duration_s * sample_fps))
    return [(k, k / sample_fps) for k in range(count)]


def analyze(
    source: JobSource | str | Path,
    settings: Settings,
    triton: Any,
    store: Any,
    progress: Progress | None = None,
    job_id: str | None = None,
    bank: RedisBank | None = None,
    rollout: JobRollout | None = None,
) -> Result:
    """Analyse one video.

    Args:
        source: an uploaded file, a URL, or a local path (``dfd analyze``).
        settings: the process's settings.
        triton: a ``TritonClient`` (anything with its ``infer``).
        store: an evidence store (``put``/``url``).
        progress: called with ``(stage, 0..1)`` as work advances.
        job_id: names the temp folder and the evidence prefix; random when omitted.
        bank: the known fakes to look the video's hashes up in (and where they are
            kept); ``None``: no look-up (``matches`` is null).
        rollout: the model rollouts under way and this job's arm in each: a canary's
            candidate version scores the role's items in place of the ensemble's (its
            heatmaps stay the current version's), a shadow's scores beside them; both are
            recorded. ``None``: the ensemble's versions only.

    Raises:
        InputError: the media or URL cannot be analysed (never worth a retry).
        TransientError: Triton, the store or the network failed; retry later.
        ConfigurationError: the service is set up wrongly.
        InternalError: a bug, with the stage it happened in.
    """
    job_id = job_id or uuid.uuid4().hex
    started = time.monotonic()
    stages = _Stages(progress)
    url, path = _source(source)
    with job_workspace(settings, job_id) as workdir:
        if url is not None:
            with stages.run(Stage.FETCH):
                path = fetch(
                    url, Path(workdir), settings, progress=stages.reporter(Stage.FETCH)
                ).path
        else:
            stages.timings_ms["download"] = 0.0
        assert path is not None
        with stages.run(Stage.PROBE):
            info = probe(path, settings)
        settings = bounded_sampling(settings, info.duration_s)
        with stages.timed("provenance", Stage.PROBE):
            provenance = read_provenance(path, settings)
            metadata = telltale_metadata(path)
        work = None
        if settings.overlap_stages and info.has_video and info.kind != "webp":
            # decode, speech, faces and inference in an audio and a video branch at once
            deadline = max(started + settings.job_timeout_s, time.monotonic() + 1.0)
            work = overlapped(path, info, settings, triton, stages, deadline, bank, job_id)
            media, hashes, matches = work.media, work.hashes, work.matches
            speech, faces, inputs, out = work.speech, work.faces, work.inputs, work.out
        else:
            with stages.run(Stage.DECODE):
                media = decode(
                    path,
                    settings,
                    info.duration_s,
                    audio_only=not info.has_video,
                    animation=info.kind == "webp",
                    progress=stages.reporter(Stage.DECODE),
                )
            matches = None
            with stages.timed("hashes", Stage.DECODE):
                hashes = hash_frames(media.frames, settings)
                if not media.frames:  # an audio file: its sound's fingerprint
                    hashes.audio_fingerprint = audio_fingerprint(path)
                if bank is not None:
                    matches = find_matches(hashes, bank.entries(), settings)
                    bank.keep(job_id, hashes)
            with stages.run(Stage.SPEECH):
                speech = find_speech(media.audio, triton)
            with stages.run(Stage.FACES):
                faces = (
                    find_faces(
                        media,
                        triton,
                        settings,
                        speech=speech.found,
                        progress=stages.reporter(Stage.FACES),
                    )
                    if media.frames
                    else NO_FACES  # an audio file
                )
        # checks the dispatcher runs itself, when named (DFD_DETECTORS)
        voice = None
        if DETECTORS["voice"] in enabled(settings) and media.audio is not None:
            with stages.timed("voice", Stage.SPEECH):
                voice = check_voice(media.audio, speech.segments, triton)
        mouth = None
        if DETECTORS["mouth_sync"] in enabled(settings):
            with stages.timed("mouth_sync", Stage.FACES):
                mouth = find_mouth_sync(job_id, media, faces, speech, triton, store)
        inference_ms = stages.timings_ms.get("inference", 0.0)
        with stages.run(Stage.INFER):
            if work is None:
                inputs = build_inputs(media, faces, speech, settings)
                remaining = settings.job_timeout_s - (time.monotonic() - started)
                out = run_ensemble(
                    inputs,
                    triton,
                    settings,
                    deadline_s=max(remaining, 1.0),
                    progress=stages.reporter(Stage.INFER),
                )
            out, shadows, versions = apply_rollout(out, inputs, triton, settings, rollout)
            scales = settings.fusion_scales()
            facts = MediaFacts(
                has_video=bool(media.frames),
                faces=len(faces.crops),
                has_audio=media.audio is not None and media.audio.size > 0,
                speech_s=speech.seconds,
                duration_s=info.duration_s,
            )
            final = verdict(
                out.items,
                calibration(),
                scales,
                settings.threshold,
                settings.inconclusive_band,
                facts,
            )
            points = timeline(
                timeline_times(media, settings.sample_fps),
                out.items,
                calibration(),
                scales,
                1.0 / settings.sample_fps,
            )
        # overlapped: the branches' requests plus the verdict's share of the stage
        stages.timings_ms["inference"] = round(stages.timings_ms["inference"] + inference_ms, 1)
        if rollout is not None:
            record_rollout(rollout, final, shadows)
        with stages.run(Stage.EVIDENCE):
            visual = out.items.get(primary("visual", list(out.items)) or "")
            evidence = build_evidence(
                job_id,
                media,
                faces,
                out.heatmaps,
                visual.scores if visual is not None else None,
                points,
                store,
                settings,
                audio_windows=out.items.get(primary("audio", list(out.items)) or ""),
                sbi_maps=out.maps.get(SBI_HEATMAPS),
                sbi_scores=sbi.scores if (sbi := out.items.get("sbi")) is not None else None,
            )
            if mouth is not None:
                evidence.mouth_sync = [store.url(key) for key in mouth.charts]

    modalities = modality_results(final)
    label, decided = apply_facts(final.label, provenance, matches)
    reasons = [Reason(code=code, message=message) for code, message in decided]
    reasons += [Reason(code=code, message=message) for code, message in final.reasons]
    return Result(
        confidence=round(final.confidence, 4),
        label=label,
        reasons=reasons,
        detectors=detector_results(
            final, speech, facts.has_audio, settings, voice=voice, mouth=mouth
        ),
        provenance=provenance,
        metadata=metadata,
        matches=matches,
        voice_changes=None
        if voice is None
        else [VoiceChange(time_s=t, similarity=sim) for t, sim in voice.changes],
        modalities=modalities,
        evidence=evidence,
        models=models_used(settings, versions),
        timings_ms=stages.timings_ms,
        media={
            "kind": "video" if info.has_video else "audio",
            "container": info.container,
            "video_codec": info.video_codec,
            "audio_codec": info.audio_codec,
            # As players show it: a phone's portrait video is stored as landscape frames
            # plus a display rotation, which decoding applied.
            "width": info.height if media.quarter_turns % 2 else info.width,
            "height": info.width if media.quarter_turns % 2 else info.height,
            "fps": round(info.fps, 3) if info.fps else None,
            "duration_s": round(info.duration_s, 3),
            "decoder": media.decoder,
            "frames_sampled": len(media.frames),
            "sample_fps": round(settings.sample_fps, 4),
            "faces": len(faces.crops),
            "audio_windows": len(inputs.audio),
            "speech_s": round(speech.seconds, 2),
            "lipsync_clips": len(inputs.lipsync_video),
            "requests": out.requests,
        },
    )
