"""The inference side of a rollout: a real Triton serving ``visual`` versions 1 and 2 side
by side (the built model copied as version 2) and the whole pipeline with a real Redis.
The ensemble pins version 1; a canary job's visual items are scored by version 2 directly,
a shadow job's by both, and the scores land in the rollout's tallies."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfd.settings import Settings
from dispatcher import rollout
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore
from dispatcher.triton_client import TritonClient
from tests.fixtures.triton import triton_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_visual_versions(weights_dir: Path, tmp_path_factory) -> Iterator[str]:
    """The whole cpu repository, with ``visual`` 1 and 2 loaded; Triton's gRPC address."""
    from cli.local_triton import LocalTriton
    from export.triton_repo import build_repository

    settings = triton_settings(weights_dir)
    repo = tmp_path_factory.mktemp("two") / "repository"
    shutil.copytree(build_repository(settings, "cpu"), repo)
    shutil.copytree(repo / "visual" / "1", repo / "visual" / "2")
    config = (repo / "visual" / "config.pbtxt").read_text()
    policy = "version_policy {\n  specific {\n    versions: 1\n    versions: 2\n  }\n}"
    config, replaced = re.subn(r"version_policy \{.*?\n\}", policy, config, count=1, flags=re.S)
    assert replaced == 1
    (repo / "visual" / "config.pbtxt").write_text(config)
    server = LocalTriton(settings, repo).start()
    try:
        yield server.grpc_url
    finally:
        server.stop()


class Spy:
    """The real client, noting which model versions were asked for."""

    def __init__(self, client: TritonClient) -> None:
        self.client = client
        self.asked: list[tuple[str, int | None]] = []

    def infer(self, model, inputs, outputs=None, *, version=None):
        self.asked.append((model, version))
        return self.client.infer(model, inputs, outputs, version=version)


def _analyze(url: str, tmp_path: Path, media: Path, job_rollout) -> tuple:
    settings = Settings(data_dir=tmp_path / "data", decoder="pyav")
    with TritonClient(url, timeout_s=120, retries=2) as client:
        spy = Spy(client)
        result = analyze(
            media, settings, spy, LocalStore(settings), job_id="job-1", rollout=job_rollout
        )
    return result, spy.asked


def test_canary_and_shadow_jobs_score_the_candidate_and_tally_it(
    two_visual_versions, redis, media_corpus, tmp_path
) -> None:
    media = media_corpus["grid_mpg"]  # a face and speech
    plain, asked = _analyze(two_visual_versions, tmp_path / "a", media, None)
    assert ("visual", 2) not in asked and plain.models["visual"] == "meso4_df@1"

    rollout.start(redis, "visual", current=1, candidate=2, mode=rollout.Mode.CANARY, share=1.0)
    job = rollout.JobRollout.load(redis, "job-1")
    canary, asked = _analyze(two_visual_versions, tmp_path / "b", media, job)
    assert ("visual", 2) in asked
    assert canary.models["visual"] == "meso4_df@2" and "visual.shadow" not in canary.models
    # version 2 is a copy of version 1: the same finding
    assert canary.detectors["visual"].score == pytest.approx(plain.detectors["visual"].score)
    tally = rollout.comparison(redis, job.plans["visual"]).as_dict()
    assert tally["candidate"]["jobs"] == 1 and tally["current"]["jobs"] == 0

    rollout.finish(redis, "visual", promote=False)
    rollout.start(redis, "visual", current=1, candidate=2, mode=rollout.Mode.SHADOW)
    job = rollout.JobRollout.load(redis, "job-1")
    shadow, asked = _analyze(two_visual_versions, tmp_path / "c", media, job)
    assert ("visual", 2) in asked
    assert shadow.models["visual"] == "meso4_df@1" and shadow.models["visual.shadow"] == (
        "meso4_df@2"
    )
    assert shadow.detectors["visual"].score == pytest.approx(plain.detectors["visual"].score)
    tally = rollout.comparison(redis, job.plans["visual"]).as_dict()
    assert tally["pairs"] == 1 and tally["drift"] == pytest.approx(0.0, abs=1e-6)

    # promoted: every job is scored by version 2 until the repository makes it current
    rollout.finish(redis, "visual", promote=True)
    job = rollout.JobRollout.load(redis, "job-1")
    assert job.plans == {} and job.versions() == {"visual": (2, None)}
    promoted, asked = _analyze(two_visual_versions, tmp_path / "d", media, job)
    assert ("visual", 2) in asked and promoted.models["visual"] == "meso4_df@2"
