"""Job states and pipeline stages, as clients and workers see them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """What ``GET /api/job/{id}`` reports: ``waiting -> active -> completed | failed | cancelled``.

    A job waiting for a retry is ``waiting`` with its attempt count. ``cancelled``: the
    client cancelled it (``DELETE /api/job/{id}``), at once while it waited, at the next
    stage boundary while it ran.
    """

    WAITING = "waiting"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Priority(StrEnum):
    """A job's queue. Workers take ``high`` before ``default`` before ``low``."""

    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


QUEUE_NAMES: tuple[str, ...] = tuple(p.value for p in Priority)
"""The rq queue names, in the order workers serve them."""


class Stage(StrEnum):
    """The worker stage an active job is in, in pipeline order."""

    FETCH = "fetch"
    PROBE = "probe"
    DECODE = "decode"
    SPEECH = "speech"
    FACES = "faces"
    INFER = "infer"
    EVIDENCE = "evidence"
    STORE = "store"


class Label(StrEnum):
    """The verdict, always given with its reasons.

    ``authentic`` only when a detector able to clear the media looked and saw nothing;
    ``inconclusive`` for a score near the threshold, detectors that disagree, media too
    short, or media seen only by detectors too weak to clear it; ``not_applicable`` when
    no detector had anything it can judge (no face, no speech).
    """

    MANIPULATED = "manipulated"
    AUTHENTIC = "authentic"
    INCONCLUSIVE = "inconclusive"
    NOT_APPLICABLE = "not_applicable"


class Modality(StrEnum):
    """The three detectors fused by ``deepfake_ensemble``, in the fusion model's order."""

    VISUAL = "visual"
    AUDIO = "audio"
    LIPSYNC = "lipsync"


MODALITY_ORDER: tuple[Modality, ...] = (Modality.VISUAL, Modality.AUDIO, Modality.LIPSYNC)


FINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
)
"""The states a job never leaves."""
