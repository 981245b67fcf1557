"""The result document and the job payload: the contract between gateway, worker and clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dfd.states import JobState, Label, Priority, Stage


class ModalityResult(BaseModel):
    score: float | None = Field(
        None, ge=0, le=1, description="P(manipulated) from this detector; null if unused."
    )
    weight: float = Field(
        ge=0, description="Fusion weight after renormalisation over used modalities."
    )
    used: bool = Field(description="False when the modality had no input (no face, no speech).")
    reason: str | None = Field(
        None, description="Why the modality was not used (no-face, no-speech, no-audio, no-video)."
    )


class DetectorResult(BaseModel):
    """One detector's finding (``dfd.detectors`` says what each looks at)."""

    score: float | None = Field(
        None, ge=0, le=1, description="Its raw P(manipulated); null when unused or not a scorer."
    )
    calibrated: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The score mapped to a probability by the fitted calibration; null "
        "when the detector has none.",
    )
    used: bool = Field(description="Whether it had input and its finding counts.")
    reason: str | None = Field(None, description="Why it was not used.")
    model: str = Field(description="checkpoint@version it ran.")
    fused: bool = Field(description="Whether its score enters the fused confidence.")
    detail: str | None = Field(None, description="What it found, in words, when not a score.")


class Reason(BaseModel):
    """One reason for the label, with a stable code."""

    code: str = Field(
        description="no-face, no-speech, no-audio, no-video, too-short, weak-detectors-only, "
        "detectors-disagree, near-threshold, score-above-threshold, score-below-threshold"
    )
    message: str = Field(description="The reason in words a non-expert can read.")


class TimelinePoint(BaseModel):
    frame: int = Field(ge=0, description="Frame index in the source video.")
    time_s: float = Field(ge=0)
    score: float | None = Field(None, ge=0, le=1, description="Fused score for this second.")
    visual: float | None = Field(None, ge=0, le=1)
    audio: float | None = Field(None, ge=0, le=1)
    lipsync: float | None = Field(None, ge=0, le=1)


class FaceTrack(BaseModel):
    """One face followed across the sampled frames."""

    track: int = Field(description="Track number, from 0.")
    frames: int = Field(description="Sampled frames the face was seen in.")
    first_s: float
    last_s: float
    score: float | None = Field(None, description="Mean visual P(manipulated) over its crops.")


class Evidence(BaseModel):
    face_track: int | None = Field(
        None,
        description="The face track the thumbnails, heatmaps and the timeline's visual line "
        "show: the most suspicious one, whose score the verdict used.",
    )
    tracks: list[FaceTrack] = Field(default_factory=list, description="Every face track found.")
    thumbnails: list[str] = Field(
        default_factory=list, description="Signed URLs of the most suspicious frames."
    )
    heatmaps: list[str] = Field(
        default_factory=list, description="Signed URLs of heatmap overlays on the faces."
    )
    timeline: list[TimelinePoint] = Field(
        default_factory=list, description="One point per sampled second."
    )
    timeline_chart: str | None = Field(None, description="Signed URL of a chart of the timeline.")
    spectrogram: str | None = Field(
        None, description="Signed URL of the audio's spectrogram with the scored windows marked."
    )
    expires_in_s: int | None = Field(None, description="Lifetime of the signed URLs.")


class Result(BaseModel):
    confidence: float = Field(
        ge=0, le=1, description="Fused probability that the video is manipulated."
    )
    label: Label
    reasons: list[Reason] = Field(default_factory=list, description="Why the label is what it is.")
    detectors: dict[str, DetectorResult] = Field(
        default_factory=dict, description="Each detector's finding, by name (dfd.detectors)."
    )
    modalities: dict[str, ModalityResult]
    evidence: Evidence
    models: dict[str, str] = Field(
        description="Role -> checkpoint@version that produced the scores."
    )
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-stage wall time.")
    media: dict[str, float | int | str | None] = Field(
        default_factory=dict, description="What was analysed: duration, resolution, fps, codecs."
    )


class JobSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["upload", "url"]
    path: str | None = Field(None, description="Uploaded file on shared storage (kind=upload).")
    url: str | None = Field(None, description="Address to fetch (kind=url).")
    filename: str | None = None


class JobPayload(BaseModel):
    """What the gateway enqueues and the worker receives."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source: JobSource
    priority: Priority = Priority.DEFAULT


class JobError(BaseModel):
    type: str = Field(description="Stable error slug, as in dfd.errors.")
    message: str
    stage: Stage | None = None


class JobView(BaseModel):
    """The body of ``GET /api/job/{id}``."""

    jobId: str
    status: JobState
    attempt: int = 1
    stage: Stage | None = None
    progress: float | None = Field(None, ge=0, le=1)
    result: Result | None = None
    error: JobError | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
