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
    used: bool = Field(
        description="False when the modality had no input (no face, no audio track)."
    )


class TimelinePoint(BaseModel):
    frame: int = Field(ge=0, description="Frame index in the source video.")
    time_s: float = Field(ge=0)
    score: float | None = Field(None, ge=0, le=1, description="Fused score for this second.")
    visual: float | None = Field(None, ge=0, le=1)
    audio: float | None = Field(None, ge=0, le=1)
    lipsync: float | None = Field(None, ge=0, le=1)


class Evidence(BaseModel):
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
    expires_in_s: int | None = Field(None, description="Lifetime of the signed URLs.")


class Result(BaseModel):
    confidence: float = Field(
        ge=0, le=1, description="Fused probability that the video is manipulated."
    )
    label: Label
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


DetectorName = Literal["visual", "audio", "lipsync"]


class JobOptions(BaseModel):
    """Per-request analysis options, within the bounds the operator sets
    (``option_threshold_min``/``_max``); unset fields keep the service's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detectors: list[DetectorName] | None = Field(
        None,
        min_length=1,
        description="The detectors fused into the verdict; the others still run and are "
        "reported, with weight 0.",
    )
    weights: dict[DetectorName, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, description="Fusion weights by detector (each 0..1); the others keep theirs."
    )
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Fused confidence above which the video is manipulated."
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
