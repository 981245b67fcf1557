"""The job-wide progress a running job reports, and its cancel check at stage boundaries."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from dfd.errors import JobCancelledError
from dfd.jobid import cancel_key
from dfd.states import Stage
from dispatcher.progress import STAGE_SPANS, Progress, overall


@pytest.mark.unit
def test_stage_spans_cover_zero_to_one_in_pipeline_order() -> None:
    order = [s for s in Stage if s is not Stage.STORE]  # the store is the evidence's span
    assert STAGE_SPANS[order[0]][0] == 0.0 and STAGE_SPANS[order[-1]][1] == 1.0
    for before, after in zip(order, order[1:], strict=False):
        assert STAGE_SPANS[before][1] == STAGE_SPANS[after][0]
    assert overall(Stage.DECODE, 0.5) == pytest.approx(0.305)
    assert overall(Stage.INFER, 7.0) == STAGE_SPANS[Stage.INFER][1]  # clamped


def _meta(redis, job: Job) -> dict:
    return Job.fetch(job.id, connection=redis, serializer=JSONSerializer).meta


@pytest.mark.integration
def test_progress_advances_within_a_stage_and_never_goes_back(redis) -> None:
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("builtins.len", [1])
    progress = Progress(job, min_interval_s=0.05)
    progress("faces", 0.0)
    first = _meta(redis, job)
    assert (first["stage"], first["progress"], first["seq"]) == ("faces", 0.52, 1)
    time.sleep(0.06)
    progress("faces", 0.5)
    middle = _meta(redis, job)
    assert first["progress"] < middle["progress"] < STAGE_SPANS[Stage.FACES][1]
    assert middle["updated_at"] > first["updated_at"]  # ISO 8601 UTC sorts as time
    assert middle["stage_progress"] == 0.5 and middle["seq"] == 2
    progress("faces", 0.2)  # throttled, and would be backwards anyway
    assert _meta(redis, job)["progress"] == middle["progress"]


@pytest.mark.integration
def test_throttle_drops_reports_within_the_interval_but_never_a_stage_end(redis) -> None:
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("builtins.len", [1])
    progress = Progress(job, min_interval_s=60)
    progress("decode", 0.0)
    for i in range(100):
        progress("decode", i / 1000)  # per-frame reports within the interval: not written
    assert _meta(redis, job)["seq"] == 1
    progress("decode", 1.0)  # a stage shorter than the interval still shows its end
    meta = _meta(redis, job)
    assert (meta["progress"], meta["seq"]) == (STAGE_SPANS[Stage.DECODE][1], 2)
    progress("infer", 0.0)  # a new stage is written at once
    assert _meta(redis, job)["stage"] == "infer"


@pytest.mark.integration
def test_cancel_request_stops_the_job_at_the_next_stage_boundary(redis) -> None:
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("builtins.len", [1])
    progress = Progress(job, min_interval_s=0)
    progress("decode", 0.0)
    redis.set(cancel_key(job.id), 1)
    progress("decode", 0.5)  # within a stage: the stage finishes
    with pytest.raises(JobCancelledError, match="cancelled by the client"):
        progress("faces", 0.0)
    assert _meta(redis, job)["stage"] == "decode"


@pytest.mark.unit
def test_every_stage_has_a_span() -> None:
    """A stage without a span made every report of it a KeyError (the speech stage's did,
    logged and dropped by the pipeline)."""
    assert set(STAGE_SPANS) == set(Stage)
    assert STAGE_SPANS[Stage.STORE] == STAGE_SPANS[Stage.EVIDENCE]
