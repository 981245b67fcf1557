"""Per-request options (detectors, weights, threshold) within the operator's bounds."""

from __future__ import annotations

import json

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from dfd.schemas import JobOptions
from dfd.settings import Settings

PUBLIC = "http://93.184.216.34/a.mp4"
NETS = ["93.184.216.0/24"]


@pytest.mark.unit
def test_options_apply_over_the_settings() -> None:
    base = Settings(weight_visual=0.3, weight_audio=0.5, weight_lipsync=0.2, threshold=0.5)
    used = JobOptions(detectors=["visual", "lipsync"], weights={"visual": 0.9}, threshold=0.6)
    applied = used.applied_to(base)
    assert applied.fusion_scales() == {"visual": 0.9, "audio": 0.0, "lipsync": 0.2}
    assert applied.threshold == 0.6
    assert JobOptions().applied_to(base) == base


@pytest.mark.integration
@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ({"threshold": 0.9}, "options.threshold: expected between 0.3 and 0.7, got 0.9"),
        (
            {"detectors": ["audio"], "weights": {"audio": 0}},
            "options: expected at least one fused detector with a weight above 0, got none",
        ),
    ],
)
def test_options_outside_the_bounds_are_refused(gateway, redis, options, detail) -> None:
    with gateway(fetch_allowed_networks=NETS) as client:
        response = client.post("/api/analyze", json={"url": PUBLIC, "options": options})
    assert response.status_code == 400 and response.json()["detail"] == detail
    assert redis.llen("rq:queue:default") == 0


@pytest.mark.integration
def test_options_reach_the_job_from_json_and_from_a_form_field(
    gateway, redis, small_videos
) -> None:
    options = {"detectors": ["visual", "audio"], "threshold": 0.6}
    with gateway(fetch_allowed_networks=NETS) as client:
        by_url = client.post("/api/analyze", json={"url": PUBLIC, "options": options})
        by_file = client.post(
            "/api/upload",
            files={"file": ("clip.mp4", small_videos["mp4"].read_bytes())},
            data={"options": json.dumps(options)},
        )
        bad = client.post(
            "/api/upload",
            files={"file": ("clip.mp4", small_videos["mp4"].read_bytes())},
            data={"options": "{threshold: 2"},
        )
    assert by_url.status_code == 202 and by_file.status_code == 202, by_file.text
    for response in (by_url, by_file):
        job = Job.fetch(response.json()["jobId"], connection=redis, serializer=JSONSerializer)
        assert job.args[0]["options"] == {**options, "weights": None}
    assert bad.status_code == 400 and bad.json()["detail"].startswith(
        "options: expected JSON options"
    )
