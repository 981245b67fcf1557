"""End to end through the real stack: gateway -> Redis -> worker -> Triton -> evidence store.

One stack (a local Redis, one ``dfd worker``, the gateway) runs for this module against
the session's Triton; a GRID clip goes in by upload and by URL, and the result is checked
against the contract a client relies on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from benchmarks.folder_server import serve_folder
from cli.demo import JobClient
from cli.stack import Stack
from dfd.schemas import Result
from dfd.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIP = "grid/bbaf2n.mpg"
URL_TTL_S = 20


@pytest.fixture(scope="module")
def stack(triton, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("e2e-data")
    mp = pytest.MonkeyPatch()
    # The children build their settings from the environment, as under `dfd serve`.
    mp.setenv("DFD_DATA_DIR", str(data_dir))
    mp.setenv("DFD_TRITON_URL", triton.grpc_url)
    mp.setenv("DFD_EVIDENCE_URL_TTL_S", str(URL_TTL_S))
    mp.setenv("DFD_FETCH_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    mp.setenv("DFD_LOG_JSON", "false")
    mp.delenv("DFD_REDIS_URL", raising=False)
    log = (data_dir / "stack.log").open("wb")
    try:
        with Stack(Settings(), port=0, workers=1, child_output=log, log=lambda _: None) as running:
            assert running.endpoints is not None
            yield running.endpoints.gateway, data_dir
    finally:
        log.close()
        mp.undo()


@pytest.fixture(scope="module")
def clip_url(media_dir: Path) -> Iterator[str]:
    with serve_folder(media_dir) as base:
        yield f"{base}/{CLIP}"


def run(gateway: str, source: str) -> tuple[dict, list[str]]:
    """Submit, poll to the end; the final view and every status seen on the way."""
    seen: list[str] = []
    with httpx.Client(base_url=gateway, timeout=60) as http:
        client = JobClient(http)
        job_id = client.submit(source)
        view = client.wait(
            job_id, timeout_s=300, poll_s=0.05, on_change=lambda v: seen.append(v["status"])
        )
    return view, seen


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def check_result(view: dict, data_dir: Path) -> Result:
    assert view["status"] == "completed", view.get("error")
    result = Result.model_validate(view["result"])  # fields, types and [0, 1] ranges
    assert result.label.value in ("manipulated", "authentic", "inconclusive")
    assert set(result.modalities) == {"visual", "audio", "lipsync"}
    used = [m for m in result.modalities.values() if m.used]
    assert used, "a talking-face clip uses at least one modality"
    assert math.isclose(sum(m.weight for m in used), 1.0, abs_tol=1e-3)
    assert all(m.score is not None for m in used)
    # A GRID clip is 3 s: one timeline point per sampled second.
    media = result.media
    assert len(result.evidence.timeline) == media["frames_sampled"]
    assert media["frames_sampled"] == math.ceil(float(media["duration_s"]) - 1e-6)
    times = [p.time_s for p in result.evidence.timeline]
    assert times == sorted(times) and times[0] < 1.0
    assert set(result.models) >= {"visual", "audio", "lipsync"}
    assert {"decode", "faces", "inference", "evidence"} <= set(result.timings_ms)
    # Nothing left behind: the job's temp folder and the upload are gone.
    assert leftovers(data_dir / "tmp") == []
    assert leftovers(data_dir / "uploads") == []
    return result


def test_upload_goes_waiting_active_completed_with_fetchable_signed_evidence(stack, media_dir):
    gateway, data_dir = stack
    view, seen = run(gateway, str(media_dir / CLIP))

    assert seen[-1] == "completed"
    assert set(seen) <= {"waiting", "active", "completed"}
    result = check_result(view, data_dir)
    evidence = result.evidence
    urls = [*evidence.thumbnails, *evidence.heatmaps, evidence.timeline_chart]
    assert evidence.thumbnails and evidence.timeline_chart
    for url in urls:
        assert url is not None and url.startswith(gateway)
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] in ("image/jpeg", "image/png")
        assert answer.content[:3] in (b"\xff\xd8\xff", b"\x89PN")

    # A tampered signature, a moved expiry or another key are refused.
    first = evidence.thumbnails[0]
    sig = parse_qs(urlsplit(first).query)["sig"][0]
    tampered = with_query(first, sig=("0" if sig[0] != "0" else "1") + sig[1:])
    assert httpx.get(tampered, timeout=10).status_code == 403
    exp = int(parse_qs(urlsplit(first).query)["exp"][0])
    assert httpx.get(with_query(first, exp=str(exp + 3600)), timeout=10).status_code == 403

    # Once the signed lifetime has passed, the same URL is refused.
    time.sleep(max(0.0, exp - time.time()) + 1.5)
    assert httpx.get(first, timeout=10).status_code == 403


def test_url_analysis_completes_through_the_same_stack(stack, clip_url):
    gateway, data_dir = stack
    view, _ = run(gateway, clip_url)

    result = check_result(view, data_dir)
    assert result.timings_ms.get("download", 0) >= 0
    assert result.media["duration_s"] == pytest.approx(3.0, abs=0.1)
