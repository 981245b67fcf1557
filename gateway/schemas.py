"""HTTP bodies of the gateway that are not part of the shared contract (``dfd.schemas``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dfd.schemas import JobError, JobOptions
from dfd.states import JobState, Priority


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(description="Stable URI of the problem type, ``urn:dfd:problem:<slug>``.")
    title: str
    status: int
    detail: str
    instance: str | None = None


class JobAccepted(BaseModel):
    """Body of a ``202``: the job was enqueued; poll ``Location``."""

    jobId: str
    status: JobState = JobState.WAITING


URL_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$"
"""What a URL field accepts (the schema says so, and validation checks the same): an
absolute URL with a scheme and no whitespace. Policy (scheme, host, address) is checked
after it, answering 422."""


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=4096,
        pattern=URL_PATTERN,
        description="Public http(s) address of a video or a video page.",
    )
    priority: Priority = Priority.DEFAULT
    options: JobOptions | None = None
    callback_url: str | None = Field(
        None,
        max_length=4096,
        pattern=URL_PATTERN,
        description="Where to POST the final job view when the job ends (signed; see README).",
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class AdminQueue(BaseModel):
    """One priority's queue: jobs in each of rq's places for it."""

    name: str
    waiting: int = Field(description="Queued, not yet taken by a worker.")
    scheduled: int = Field(description="Waiting for a retry's back-off to pass.")
    active: int = Field(description="Being processed by a worker.")
    failed: int = Field(description="In rq's failed-job registry (kept failure_ttl_s).")
    completed: int = Field(description="Finished, result kept (result_ttl_s).")


class AdminWorker(BaseModel):
    name: str
    state: str = Field(description="rq's worker state: busy, idle, suspended, started.")
    queues: list[str]
    jobId: str | None = Field(None, description="The job it is running, if any.")
    stage: str | None = None
    progress: float | None = None
    lastHeartbeat: str | None = None
    completed: int = Field(0, description="Jobs it finished since it started.")
    failed: int = Field(0, description="Jobs that failed on it since it started.")


class Throughput(BaseModel):
    """Jobs that ended in the window, from the registries' own end times."""

    windowS: int
    completed: int
    failed: int
    perMinute: list[int] = Field(
        description="Jobs ended in each minute of the window, oldest first."
    )
    latencyP50S: float | None = Field(None, description="Median enqueue-to-result time.")
    latencyP95S: float | None = None


class AdminOverview(BaseModel):
    queues: list[AdminQueue]
    workers: list[AdminWorker]
    lastHour: Throughput


class AdminJob(BaseModel):
    jobId: str
    status: JobState = Field(description="As GET /api/job/{id} reports it.")
    rqStatus: str = Field(description="rq's own status (canceled, scheduled, ...).")
    priority: str
    kind: str | None = Field(None, description="upload or url.")
    stage: str | None = None
    progress: float | None = None
    label: str | None = None
    confidence: float | None = None
    error: JobError | None = None
    createdAt: str | None = None
    endedAt: str | None = None
    durationS: float | None = Field(None, description="Start to end of the last attempt.")


class AdminJobs(BaseModel):
    jobs: list[AdminJob]
    total: int = Field(description="Jobs matching the filters (before the limit).")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """``responses=`` for a route: each status documented with the problem model."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or wrong bearer key",
        403: "Bad or expired signature",
        404: "Unknown or expired",
        408: "Request took longer than the gateway's timeout",
        409: "The job's state does not allow it",
        413: "Upload over the size cap",
        415: "Not a supported video container (by magic bytes)",
        422: "URL rejected (scheme, allow/blocklist, private address)",
        429: "Rate limit or concurrent-upload cap reached; see Retry-After",
        503: "Redis or Triton unreachable",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Error"),
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }
