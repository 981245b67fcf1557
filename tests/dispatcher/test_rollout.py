"""Rollout bookkeeping: plans, arms, recorded scores and their metrics, in a real Redis."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dfd.errors import ConfigurationError
from dispatcher import rollout
from dispatcher.metrics import JobSystemCollector, exporter_registry
from dispatcher.rollout import Arm, Mode, RolloutPlan


def plan(mode: Mode = Mode.CANARY, share: float = 0.1) -> RolloutPlan:
    return RolloutPlan("visual", 1, 2, mode, share if mode is Mode.CANARY else 1.0, 0.0)


@pytest.mark.unit
def test_the_canary_share_holds_and_each_job_keeps_its_arm() -> None:
    ids = [f"job-{i}" for i in range(20000)]
    arms = [rollout.arm_for(job_id, plan(share=0.1)) for job_id in ids]
    share = arms.count(Arm.CANDIDATE) / len(ids)
    assert 0.09 < share < 0.11
    # A retried attempt (any worker) gets the same arm.
    assert [rollout.arm_for(job_id, plan(share=0.1)) for job_id in ids[:500]] == arms[:500]
    # A wider share keeps the jobs the narrower one sent to the candidate.
    wide = [rollout.arm_for(job_id, plan(share=0.3)) for job_id in ids]
    assert all(w is Arm.CANDIDATE for a, w in zip(arms, wide, strict=True) if a is Arm.CANDIDATE)
    assert rollout.versions_to_score("job-1", plan(Mode.SHADOW)) == (1, 2)
    fused, beside = rollout.versions_to_score(ids[arms.index(Arm.CANDIDATE)], plan())
    assert (fused, beside) == (2, None)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "fusion"}, "expected a role among visual, audio, lipsync, got 'fusion'"),
        ({"candidate": 1}, "other than the current one, got 1 for both"),
        ({"share": 0.0}, r"canary share in \(0, 1\], got 0.0"),
        ({"share": 1.5}, r"canary share in \(0, 1\], got 1.5"),
        ({"mode": Mode.SHADOW, "share": 0.5}, "a shadow scores every job, got share 0.5"),
        ({"current": 0}, "versions from 1"),
    ],
)
def test_a_bad_plan_is_refused_with_its_reason(kwargs: dict, message: str) -> None:
    fields = {"role": "visual", "current": 1, "candidate": 2, "mode": Mode.CANARY, "share": 0.1}
    fields.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        RolloutPlan(started_at=0.0, **fields)


def families(redis) -> dict[str, list]:
    text = generate_latest(exporter_registry(JobSystemCollector(redis))).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def sample(found: dict[str, list], name: str, **labels: str) -> float:
    (value,) = [s.value for f in found.values() for s in f if s.name == name and s.labels == labels]
    return value


@pytest.mark.integration
def test_a_shadow_rollout_records_both_versions_and_their_drift(redis) -> None:
    started = rollout.start(redis, "visual", current=1, candidate=2, mode=Mode.SHADOW)
    assert rollout.plans(redis) == {"visual": started}
    with pytest.raises(ConfigurationError, match="got a shadow of version 2"):
        rollout.start(redis, "visual", current=1, candidate=3, mode=Mode.SHADOW)

    for current, candidate in ((0.2, 0.3), (0.9, 0.4), (0.05, 0.05)):
        rollout.record_scores(redis, started, (1, current), (2, candidate))
    with pytest.raises(ValueError, match="expected version 1 or 2, got 3"):
        rollout.record_scores(redis, started, (3, 0.5), None)
    with pytest.raises(ValueError, match=r"score in \[0, 1\], got 1.2"):
        rollout.record_scores(redis, started, (1, 1.2), None)

    seen = rollout.comparison(redis, started)
    assert (seen.current.count, seen.candidate.count, seen.pairs) == (3, 3, 3)
    assert seen.current.mean == pytest.approx(1.15 / 3)
    assert seen.drift == pytest.approx((0.1 + 0.5 + 0.0) / 3)
    assert seen.disagreements == 1 and seen.current.flagged == 1 and seen.candidate.flagged == 0

    found = families(redis)
    share = dict(role="visual", mode="shadow", current="1", candidate="2")
    assert sample(found, "dfd_rollout_share", **share) == 0.0
    assert sample(found, "dfd_rollout_score_drift", role="visual") == pytest.approx(0.2)
    assert sample(found, "dfd_rollout_shadow_disagreements_total", role="visual") == 1
    assert sample(found, "dfd_rollout_shadow_pairs_total", role="visual") == 3
    cur = dict(role="visual", version="1", arm="current")
    assert sample(found, "dfd_rollout_scores_count", **cur) == 3
    assert sample(found, "dfd_rollout_scores_bucket", **cur, le="0.2") == 2
    assert sample(found, "dfd_rollout_scores_bucket", **cur, le="+Inf") == 3
    assert sample(found, "dfd_rollout_flagged_total", **cur) == 1

    entry = rollout.finish(redis, "visual", promote=True, clock=lambda: 5.0)
    assert entry["decision"] == "promoted" and entry["comparison"]["pairs"] == 3
    assert rollout.serving(redis) == {"visual": 2}
    assert rollout.plans(redis) == {}
    assert rollout.history(redis) == [entry]
    assert "dfd_rollout_scores" in families(redis)  # named, with no rollout under way
    with pytest.raises(ConfigurationError, match="expected a rollout under way, got none"):
        rollout.finish(redis, "visual", promote=False)


@pytest.mark.integration
def test_a_canary_rollback_keeps_the_current_version_and_a_new_start_counts_afresh(
    redis,
) -> None:
    started = rollout.start(redis, "audio", current=1, candidate=2, mode=Mode.CANARY, share=0.25)
    rollout.record_scores(redis, started, (2, 0.7), None)
    rollout.record_scores(redis, started, (1, 0.1), None)
    found = families(redis)
    assert (
        sample(found, "dfd_rollout_share", role="audio", mode="canary", current="1", candidate="2")
        == 0.25
    )
    assert (
        sample(found, "dfd_rollout_scores_count", role="audio", version="2", arm="candidate") == 1
    )
    assert "dfd_rollout_score_drift" in found and not found["dfd_rollout_score_drift"]

    entry = rollout.finish(redis, "audio", promote=False)
    assert entry["decision"] == "rolled back"
    assert entry["comparison"]["candidate"] == {"version": 2, "jobs": 1, "mean": 0.7, "flagged": 1}
    assert rollout.serving(redis) == {}

    again = rollout.start(redis, "audio", current=1, candidate=3, mode=Mode.SHADOW)
    assert rollout.comparison(redis, again).current.count == 0
