"""``dfd models rollout`` against a real Triton serving two versions of ``visual`` side by
side (the built repository's model, copied as version 2) and a real Redis."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from dispatcher import rollout
from tests.fixtures.triton import triton_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def two_versions(weights_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A Triton with ``visual`` versions 1 and 2 loaded; its gRPC address."""
    from cli.local_triton import LocalTriton
    from export.triton_repo import build_repository

    settings = triton_settings(weights_dir)
    built = build_repository(settings, "cpu") / "visual"
    model = tmp_path / "repository" / "visual"
    for version in ("1", "2"):
        shutil.copytree(built / "1", model / version)
    config = (built / "config.pbtxt").read_text()
    policy = "version_policy {\n  specific {\n    versions: 1\n    versions: 2\n  }\n}"
    config, replaced = re.subn(r"version_policy \{.*?\n\}", policy, config, count=1, flags=re.S)
    assert replaced == 1
    (model / "config.pbtxt").write_text(config)
    server = LocalTriton(settings, tmp_path / "repository").start()
    try:
        yield server.grpc_url
    finally:
        server.stop()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_shadow_rollout_is_started_compared_promoted_and_a_canary_rolled_back(
    two_versions: str, redis, redis_url: str, monkeypatch, capsys
) -> None:
    from dispatcher.triton_client import TritonClient

    monkeypatch.setenv("DFD_REDIS_URL", redis_url)
    monkeypatch.setenv("DFD_LOG_JSON", "false")
    url = two_versions
    code, out, _ = run(capsys, "list", "--url", url)
    assert code == 0
    assert re.search(r"^visual\s+meso4_df@1\s+v1 READY, v2 READY$", out, re.M), out

    code, _, err = run(
        capsys, "rollout", "start", "visual", "--version", "3", "--shadow", "--url", url
    )
    assert code == 1
    assert (
        f"expected Triton at {url} to serve versions 1 and 3 ready side by side, got v1 READY, v2 READY"
        in err
    )
    assert rollout.plans(redis) == {}

    code, out, _ = run(
        capsys, "rollout", "start", "visual", "--version", "2", "--shadow", "--url", url
    )
    assert code == 0 and "shadow of v2 beside v1" in out
    code, _, err = run(
        capsys, "rollout", "start", "visual", "--version", "2", "--canary", "0.5", "--url", url
    )
    assert code == 1 and "expected no rollout under way, got a shadow of version 2" in err

    # What the inference stage does for a shadow: the same crops to both versions.
    plan = rollout.plans(redis)["visual"]
    crops = np.random.default_rng(0).random((4, 3, 256, 256), dtype=np.float32)
    with TritonClient(url, timeout_s=60, retries=1) as client:
        scores = {
            v: float(
                np.mean(client.infer("visual", {"face": crops}, ["score"], version=v)["score"])
            )
            for v in (1, 2)
        }
    assert 0.0 <= scores[1] <= 1.0
    rollout.record_scores(redis, plan, (1, scores[1]), (2, scores[2]))

    code, out, _ = run(capsys, "rollout", "status", "--json")
    status = json.loads(out)["rollouts"]["visual"]
    assert status["pairs"] == 1 and status["current"]["jobs"] == 1
    assert status["drift"] == pytest.approx(0.0, abs=1e-6)  # version 2 is the same graph

    code, out, _ = run(capsys, "rollout", "promote", "visual")
    assert code == 0 and out.startswith("rollout visual: promoted; v2 serves it")
    code, out, _ = run(capsys, "rollout", "status")
    assert out.splitlines() == ["no rollout under way", "visual: promoted v2 serves it"]

    # From now on v2 is the current one: a canary of v1 (going back) is checked the same way.
    code, out, _ = run(
        capsys, "rollout", "start", "visual", "--version", "1", "--canary", "0.2", "--url", url
    )
    assert code == 0 and "canary of v1 beside v2 (20% of jobs fused with v1)" in out
    code, out, _ = run(capsys, "rollout", "rollback", "visual")
    assert code == 0 and out.startswith("rollout visual: rolled back; v2 serves it")
    assert [e["decision"] for e in rollout.history(redis)] == ["rolled back", "promoted"]


def test_rollout_needs_redis_and_a_known_role(monkeypatch, capsys, redis_url: str) -> None:
    monkeypatch.delenv("DFD_REDIS_URL", raising=False)
    code, _, err = run(capsys, "rollout", "status")
    assert code == 1 and "models rollout: expected DFD_REDIS_URL" in err
    monkeypatch.setenv("DFD_REDIS_URL", redis_url)
    code, _, err = run(capsys, "rollout", "start", "fusion", "--version", "2", "--shadow")
    assert code == 1 and "expected a role among visual, audio, lipsync, got 'fusion'" in err
