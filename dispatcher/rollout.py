"""Model rollouts: a new version of one role's model served beside the current one.

A rollout is a plan kept in Redis, one per role (``visual``, ``audio``, ``lipsync``):

- **canary**: a share of the jobs is scored by the candidate version instead of the
  current one (its score is fused and reported for those jobs);
- **shadow**: every job is scored by both; the candidate's score is recorded, never
  fused.

Which jobs are the canary's is decided by the job id (:func:`arm_for`), so a retried
job keeps its arm and the share holds over any number of workers. Each scored job adds
its video-level score per version to a Redis hash (:func:`record_scores`): counts, a
histogram, how many were flagged, and for shadow pairs the absolute difference and the
disagreements (one version flags, the other does not). ``dfd exporter`` serves them
(``dfd_rollout_*``) and ``dfd models rollout status`` prints them;
``dfd models rollout promote|rollback`` ends the rollout, writing the decision and the
comparison at that moment to a history list, and a promotion pins the role to the
candidate (:data:`SERVING_KEY`).

The worker side (which version scores a job's items, and calling :func:`record_scores`)
belongs to the inference stage; this module is its bookkeeping and has no Triton in it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from dfd.errors import ConfigurationError

PLANS_KEY = "dfd:rollout:plans"
"""Redis hash: role -> the JSON of its :class:`RolloutPlan`."""
SERVING_KEY = "dfd:rollout:serving"
"""Redis hash: role -> the model version promoted to serve it (none: the repository's)."""
HISTORY_KEY = "dfd:rollout:history"
"""Redis list: the JSON of each ended rollout (plan, decision, comparison), newest first."""
HISTORY_LENGTH = 100

ROLES = ("visual", "audio", "lipsync")
# Scores are probabilities of manipulation: ten buckets over [0, 1].
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
FLAG_THRESHOLD = 0.5
"""A score at or above it flags the video (for the disagreement count; fusion has its own rule)."""


def scores_key(role: str) -> str:
    """Redis hash of the scores recorded for ``role`` since its rollout started."""
    return f"dfd:rollout:scores:{role}"


class Mode(StrEnum):
    CANARY = "canary"
    SHADOW = "shadow"


class Arm(StrEnum):
    CURRENT = "current"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class RolloutPlan:
    """One role's rollout.

    Attributes:
        role: the fused modality whose model is rolled out.
        current: the version serving it now.
        candidate: the new version, loaded beside it in Triton.
        mode: canary (a share of jobs scored by the candidate) or shadow (all, not fused).
        share: canary only: the share of jobs, in (0, 1]; 1.0 for a shadow.
        started_at: seconds since the epoch.
    """

    role: str
    current: int
    candidate: int
    mode: Mode
    share: float
    started_at: float

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigurationError(
                f"rollout: expected a role among {', '.join(ROLES)}, got {self.role!r}"
            )
        if self.candidate == self.current:
            raise ConfigurationError(
                f"rollout {self.role}: expected a candidate version other than the current "
                f"one, got {self.candidate} for both"
            )
        if self.current < 1 or self.candidate < 1:
            raise ConfigurationError(
                f"rollout {self.role}: expected versions from 1, got current {self.current} "
                f"and candidate {self.candidate}"
            )
        if not 0.0 < self.share <= 1.0:
            raise ConfigurationError(
                f"rollout {self.role}: expected a canary share in (0, 1], got {self.share}"
            )
        if self.mode is Mode.SHADOW and self.share != 1.0:
            raise ConfigurationError(
                f"rollout {self.role}: a shadow scores every job, got share {self.share}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> RolloutPlan:
        data = json.loads(text)
        data["mode"] = Mode(data["mode"])
        return cls(**data)


def arm_for(job_id: str, plan: RolloutPlan) -> Arm:
    """The arm of ``job_id``'s fused score: the same for every attempt and every worker.

    A shadow's fused score is always the current version's (the candidate only scores
    beside it).
    """
    if plan.mode is Mode.SHADOW:
        return Arm.CURRENT
    digest = hashlib.sha256(f"{plan.role}:{plan.candidate}:{job_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return Arm.CANDIDATE if fraction < plan.share else Arm.CURRENT


def versions_to_score(job_id: str, plan: RolloutPlan) -> tuple[int, int | None]:
    """(the version whose score is fused, the version scored beside it or ``None``)."""
    if plan.mode is Mode.SHADOW:
        return plan.current, plan.candidate
    return (plan.candidate if arm_for(job_id, plan) is Arm.CANDIDATE else plan.current), None


# -- plans ------------------------------------------------------------------------------
def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def plans(connection: Any) -> dict[str, RolloutPlan]:
    """The rollouts under way, by role (one HGETALL: read once per job)."""
    return {
        _decode(role): RolloutPlan.from_json(raw)
        for role, raw in connection.hgetall(PLANS_KEY).items()
    }


def serving(connection: Any) -> dict[str, int]:
    """Roles pinned to a promoted version."""
    return {_decode(k): int(v) for k, v in connection.hgetall(SERVING_KEY).items()}


def start(
    connection: Any,
    role: str,
    *,
    current: int,
    candidate: int,
    mode: Mode,
    share: float = 1.0,
    clock: Any = time.time,
) -> RolloutPlan:
    """Start a rollout of ``role`` (the caller checked that Triton serves ``candidate``).

    Its earlier scores are cleared: the comparison starts with the rollout.

    Raises:
        ConfigurationError: a rollout of that role is already under way, or the plan
            is not valid (see :class:`RolloutPlan`).
    """
    plan = RolloutPlan(role, current, candidate, mode, share, float(clock()))
    pipe = connection.pipeline(transaction=True)
    pipe.hsetnx(PLANS_KEY, role, plan.to_json())
    pipe.delete(scores_key(role))
    added, _ = pipe.execute()
    if not added:
        existing = RolloutPlan.from_json(connection.hget(PLANS_KEY, role))
        raise ConfigurationError(
            f"rollout {role}: expected no rollout under way, got a {existing.mode.value} of "
            f"version {existing.candidate} (promote or roll it back first)"
        )
    return plan


def finish(connection: Any, role: str, *, promote: bool, clock: Any = time.time) -> dict[str, Any]:
    """End ``role``'s rollout: promoted (the role is pinned to the candidate) or rolled
    back (the current version stays). Returns the history entry it wrote.

    Raises:
        ConfigurationError: no rollout of that role is under way.
    """
    raw = connection.hget(PLANS_KEY, role)
    if raw is None:
        raise ConfigurationError(f"rollout {role}: expected a rollout under way, got none")
    plan = RolloutPlan.from_json(raw)
    entry = {
        "plan": json.loads(plan.to_json()),
        "decision": "promoted" if promote else "rolled back",
        "ended_at": float(clock()),
        "comparison": comparison(connection, plan).as_dict(),
    }
    pipe = connection.pipeline(transaction=True)
    pipe.hdel(PLANS_KEY, role)
    if promote:
        pipe.hset(SERVING_KEY, role, plan.candidate)
    pipe.lpush(HISTORY_KEY, json.dumps(entry))
    pipe.ltrim(HISTORY_KEY, 0, HISTORY_LENGTH - 1)
    pipe.execute()
    return entry


def history(connection: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in connection.lrange(HISTORY_KEY, 0, -1)]


# -- scores -----------------------------------------------------------------------------
def _bucket(score: float) -> float:
    return next(le for le in SCORE_BUCKETS if score <= le)


def record_scores(
    connection: Any, plan: RolloutPlan, fused: tuple[int, float], beside: tuple[int, float] | None
) -> None:
    """Add one job's video-level scores of ``plan.role``: the fused version's and, for a
    shadow, the candidate's beside it (then also their difference and agreement).

    Raises:
        ValueError: a score outside [0, 1], or a version the plan does not name.
    """
    scored = [fused] if beside is None else [fused, beside]
    for version, score in scored:
        if version not in (plan.current, plan.candidate):
            raise ValueError(
                f"rollout {plan.role}: expected version {plan.current} or {plan.candidate}, "
                f"got {version}"
            )
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"rollout {plan.role}: expected a score in [0, 1], got {score}")
    key = scores_key(plan.role)
    pipe = connection.pipeline(transaction=True)
    for version, score in scored:
        pipe.hincrby(key, f"v{version}:count", 1)
        pipe.hincrbyfloat(key, f"v{version}:sum", score)
        pipe.hincrby(key, f"v{version}:le{_bucket(score)}", 1)
        pipe.hincrby(key, f"v{version}:flagged", int(score >= FLAG_THRESHOLD))
    if beside is not None:
        pipe.hincrby(key, "pairs", 1)
        pipe.hincrbyfloat(key, "abs_diff_sum", abs(fused[1] - beside[1]))
        pipe.hincrby(
            key, "disagreements", int((fused[1] >= FLAG_THRESHOLD) != (beside[1] >= FLAG_THRESHOLD))
        )
    pipe.execute()


@dataclass(frozen=True)
class VersionScores:
    """What one version scored in a rollout."""

    version: int
    count: int
    total: float
    flagged: int
    buckets: tuple[int, ...]  # per SCORE_BUCKETS, not cumulative

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True)
class Comparison:
    """The two versions of a rollout side by side."""

    current: VersionScores
    candidate: VersionScores
    pairs: int
    abs_diff_total: float
    disagreements: int

    @property
    def drift(self) -> float | None:
        """Mean absolute difference of the two versions' scores on the same jobs (shadow)."""
        return self.abs_diff_total / self.pairs if self.pairs else None

    def as_dict(self) -> dict[str, Any]:
        def version(v: VersionScores) -> dict[str, Any]:
            return {"version": v.version, "jobs": v.count, "mean": v.mean, "flagged": v.flagged}

        return {
            "current": version(self.current),
            "candidate": version(self.candidate),
            "pairs": self.pairs,
            "drift": self.drift,
            "disagreements": self.disagreements,
        }


def comparison(connection: Any, plan: RolloutPlan) -> Comparison:
    """What the rollout of ``plan.role`` has recorded so far."""
    raw = {_decode(k): _decode(v) for k, v in connection.hgetall(scores_key(plan.role)).items()}

    def version(v: int) -> VersionScores:
        return VersionScores(
            version=v,
            count=int(raw.get(f"v{v}:count", 0)),
            total=float(raw.get(f"v{v}:sum", 0.0)),
            flagged=int(raw.get(f"v{v}:flagged", 0)),
            buckets=tuple(int(raw.get(f"v{v}:le{le}", 0)) for le in SCORE_BUCKETS),
        )

    return Comparison(
        current=version(plan.current),
        candidate=version(plan.candidate),
        pairs=int(raw.get("pairs", 0)),
        abs_diff_total=float(raw.get("abs_diff_sum", 0.0)),
        disagreements=int(raw.get("disagreements", 0)),
    )


# -- one job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRollout:
    """One job's part in the rollouts under way: per role, which version's scores are
    fused and which is scored beside them (read once per job by the worker). A role
    promoted and not rolled out again keeps its pinned version."""

    connection: Any
    job_id: str
    plans: dict[str, RolloutPlan]
    pinned: dict[str, int]

    @classmethod
    def load(cls, connection: Any, job_id: str) -> JobRollout:
        return cls(connection, job_id, plans(connection), serving(connection))

    def versions(self) -> dict[str, tuple[int, int | None]]:
        """Role -> (the version whose scores are fused, the version scored beside them)."""
        out: dict[str, tuple[int, int | None]] = {
            role: (v, None) for role, v in self.pinned.items()
        }
        out.update({role: versions_to_score(self.job_id, p) for role, p in self.plans.items()})
        return out

    def record(self, scores: dict[str, tuple[float | None, float | None]]) -> None:
        """Role -> (the fused version's video score, the shadow's or None); roles the
        video gave nothing to (no face, no speech) are not recorded."""
        for role, (fused, beside) in scores.items():
            plan = self.plans.get(role)
            if plan is None or fused is None:
                continue
            fused_v, beside_v = versions_to_score(self.job_id, plan)
            shadow = None if beside_v is None or beside is None else (beside_v, beside)
            record_scores(self.connection, plan, (fused_v, fused), shadow)
