"""The result document and the job payload: the contract between gateway, worker and clients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from dfd.settings import Settings
from dfd.states import JobState, Label, Priority, Stage


def timestamp() -> str:
    """Now in UTC as rq writes its timestamps (ISO 8601, microseconds, ``Z``), so the
    job view's times compare as strings."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    reason: str | None = Field(
        None,
        description="Why it was not used; not-installed: enabled, but its weights are "
        "user-fetched (research-only licence) and absent, and detail says where to get them.",
    )
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
    thumbnail: str | None = Field(
        None,
        description="Signed URL of a JPEG of its most suspicious crop (its highest visual "
        "score; its most confident detection when visual was unused), as the visual model saw "
        "it. Kept for at most DFD_MAX_FACES_PER_FRAME tracks: the one shown, then the most "
        "suspicious; null for the others.",
    )
    thumbnail_s: float | None = Field(
        None, description="When the crop of its thumbnail was seen, in seconds."
    )


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
    mouth_sync: list[str] = Field(
        default_factory=list,
        description="Signed URLs of the mouth-sync charts (mouth opening against the voice's "
        "energy, with the lag), one per speaking face track, when that detector runs.",
    )
    sbi_heatmaps: list[str] = Field(
        default_factory=list,
        description="Signed URLs of SBI's Grad-CAM overlays on the frames it scored most "
        "suspicious (each face's map over SBI's own crop of it, the face boxed with its SBI "
        "score), when the sbi detector runs.",
    )


class ValidationCode(BaseModel):
    code: str = Field(description="C2PA validation status code (signingCredential.untrusted, ...).")
    explanation: str | None = None


class Signer(BaseModel):
    issuer: str | None = Field(None, description="The signing certificate's organisation.")
    common_name: str | None = Field(None, description="The signing certificate's common name.")
    time: str | None = Field(None, description="Signing time, if a time stamp says so.")


class ProvenanceAction(BaseModel):
    action: str = Field(description="c2pa.created, c2pa.edited, c2pa.converted, ...")
    software_agent: str | None = None
    digital_source_type: str | None = Field(
        None, description="IPTC digital source type URI, if the action declares one."
    )


class Ingredient(BaseModel):
    title: str | None = None
    format: str | None = None
    relationship: str | None = Field(None, description="parentOf, componentOf or inputTo.")


class Provenance(BaseModel):
    """C2PA Content Credentials as read from the file: facts, not a score.

    An absent manifest says nothing about authenticity: most media carries none, and a
    manifest is removed by any re-encode.
    """

    present: bool = Field(description="Whether the file carries a C2PA manifest store.")
    supported: bool = Field(
        True, description="False when the file's format cannot carry Content Credentials."
    )
    state: Literal["trusted", "valid", "invalid"] | None = Field(
        None,
        description="trusted: signed by a configured trust anchor; valid: intact but the "
        "signer is not trusted here; invalid: fails validation. Null without a manifest.",
    )
    codes: list[ValidationCode] = Field(
        default_factory=list, description="Validation failures of the active manifest."
    )
    tampered: bool = Field(
        False, description="The file or manifest was changed after signing (a hash mismatch)."
    )
    signer: Signer | None = None
    claim_generator: str | None = Field(None, description="The tool that wrote the manifest.")
    title: str | None = None
    actions: list[ProvenanceAction] = Field(default_factory=list)
    ai_generated: bool = Field(
        False,
        description="An action declares digitalSourceType trainedAlgorithmicMedia or "
        "compositeWithTrainedAlgorithmicMedia.",
    )
    ingredients: list[Ingredient] = Field(default_factory=list)
    error: str | None = Field(None, description="Why a present manifest could not be read.")


class MetadataFinding(BaseModel):
    """A container or stream tag that says something about how the file was made."""

    key: str = Field(description="Where it was found: format.encoder, stream0.handler_name, ...")
    value: str | None
    kind: Literal["tool", "creation_time", "reencode"] = Field(
        description="tool: names the software; creation_time: missing or reset; "
        "reencode: traces of a re-encode."
    )
    explanation: str


class KnownFakeMatch(BaseModel):
    """A hit in the bank of known fakes (perceptual hashes of media already judged fake)."""

    entry_id: str
    label: str = Field(description="The bank entry's label, as its admin gave it.")
    note: str | None = None
    distance: int = Field(ge=0, description="Median PDQ Hamming distance of the matched frames.")
    matched_share: float = Field(
        ge=0, le=1, description="Share of this video's hashed frames that matched the entry."
    )
    entry_share: float = Field(
        ge=0, le=1, description="Share of the entry's frames that this video matched."
    )


class VoiceChange(BaseModel):
    """A change of voice between two speech segments (``dispatcher.voice``); evidence, not
    a score: two people talking in turn show one too."""

    time_s: float = Field(ge=0, description="Where the new voice's segment starts.")
    similarity: float = Field(
        ge=-1, le=1, description="Cosine of the speaker embeddings either side of it."
    )


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
    provenance: Provenance | None = Field(
        None, description="C2PA Content Credentials; null when they were not read."
    )
    metadata: list[MetadataFinding] = Field(
        default_factory=list, description="Container tags that name a tool or show a re-encode."
    )
    matches: list[KnownFakeMatch] | None = Field(
        None, description="Known fakes this video matches; null when no bank was looked up."
    )
    voice_changes: list[VoiceChange] | None = Field(
        None,
        description="Where the voice changes between speech segments of >= 1.6 s; null when "
        "the voice check is off (DFD_DETECTORS) or there is no audio.",
    )


class JobSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["upload", "url"]
    path: str | None = Field(None, description="Uploaded file on shared storage (kind=upload).")
    url: str | None = Field(None, description="Address to fetch (kind=url).")
    filename: str | None = None


DetectorName = Literal["visual", "audio", "lipsync"]


class JobOptions(BaseModel):
    """Per-request analysis options, within the bounds the operator sets
    (``option_threshold_min``/``_max``); unset fields keep the service's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detectors: list[DetectorName] | None = Field(
        None,
        min_length=1,
        description="The modalities whose detectors are fused into the verdict; the others "
        "still run and are reported, with weight 0.",
    )
    weights: dict[DetectorName, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None,
        description="Per modality, the share (0..1) of its detectors' fitted fusion weight "
        "they keep; the others keep theirs.",
    )
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Fused probability above which the media is manipulated."
    )

    def applied_to(self, settings: Settings) -> Settings:
        """``settings`` with these options in place (the worker analyses with them)."""
        update: dict[str, float] = {}
        for name, weight in (self.weights or {}).items():
            update[f"weight_{name}"] = weight
        if self.detectors is not None:
            for name in ("visual", "audio", "lipsync"):
                if name not in self.detectors:
                    update[f"weight_{name}"] = 0.0
        if self.threshold is not None:
            update["threshold"] = self.threshold
        return settings.model_copy(update=update)


class JobPayload(BaseModel):
    """What the gateway enqueues and the worker receives."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source: JobSource
    priority: Priority = Priority.DEFAULT
    options: JobOptions | None = None


class JobError(BaseModel):
    type: str = Field(description="Stable error slug, as in dfd.errors.")
    message: str
    stage: Stage | None = None


class WebhookDelivery(BaseModel):
    """How the job's ``callback_url`` delivery went (``dispatcher.webhooks``)."""

    status: Literal["pending", "delivered", "retrying", "failed"]
    attempts: int = Field(0, ge=0, description="Deliveries tried so far.")
    statusCode: int | None = Field(None, description="The receiver's last HTTP status.")
    error: str | None = Field(None, description="Why the last try failed.")
    deliveredAt: str | None = None


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
    updatedAt: str | None = Field(
        None, description="When the job last changed: a state, a stage or its progress."
    )
    webhook: WebhookDelivery | None = None
    batchId: str | None = None
