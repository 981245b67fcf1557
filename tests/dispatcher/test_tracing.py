"""One trace from request to verdict: the gateway's request span, the worker's job span
under it, and one span per pipeline stage under that (real Redis, real Triton, GRID clip)."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from dispatcher.worker import InProcessWorker, build_worker
from tests.fixtures.tracing import Collector

pytestmark = pytest.mark.integration

STAGES = ["probe", "decode", "speech", "faces", "infer", "evidence"]  # an upload has no fetch


def test_request_job_and_stage_spans_form_one_trace(
    gateway, redis, media_dir, triton, spans
) -> None:
    clip = media_dir / "grid" / "id2_vcd_swwp2s.mpg"
    overrides = {"triton_url": triton.grpc_url, "public_base_url": "http://127.0.0.1:9"}
    with gateway(**overrides) as client:
        response = client.post("/api/upload", files={"file": ("clip.mpg", clip.read_bytes())})
        assert response.status_code == 202, response.text
        settings = client.settings
    job_id = response.json()["jobId"]

    worker = build_worker(settings, redis, worker_class=InProcessWorker)
    worker.work(burst=True)
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED, job.meta.get("error")

    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "POST /api/upload"]
    (job_span,) = [s for s in finished if s.name == "dfd.job"]
    assert job_span.context.trace_id == request.context.trace_id
    assert job_span.parent is not None and job_span.parent.span_id == request.context.span_id
    assert dict(job_span.attributes or {}) == {
        "dfd.job.id": job_id,
        "dfd.job.attempt": 1,
        "dfd.source.kind": "upload",
    }
    stages = [s for s in finished if s.name.startswith("dfd.stage.")]
    # one span per stage; speech (the audio branch) runs beside decode and faces
    assert sorted(s.name for s in stages) == sorted(f"dfd.stage.{name}" for name in STAGES)
    for stage in stages:
        assert stage.parent is not None and stage.parent.span_id == job_span.context.span_id
        assert stage.status.is_ok


def test_a_forked_work_horse_exports_its_job_spans(make_settings, redis, worker_process) -> None:
    """``dfd worker`` runs each job in a forked work horse that leaves with ``os._exit``;
    the job's spans must still reach the collector. The job fails at probe (the upload is
    text), so no Triton is needed."""
    with Collector.running() as collector:
        settings = make_settings(triton_url="127.0.0.1:1", otlp_endpoint=collector.endpoint)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        upload = settings.uploads_dir / "clip.mp4"
        upload.write_bytes(b"not a video at all")
        payload = {"job_id": "traced-job", "source": {"kind": "upload", "path": str(upload)}}
        queue = Queue("default", connection=redis, serializer=JSONSerializer)
        queue.enqueue("dispatcher.jobs.run_job", payload, job_id="traced-job")
        worker = worker_process(settings, "--burst")
        worker.process.wait(timeout=60)
        job = Job.fetch("traced-job", connection=redis, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FAILED
        assert job.meta["error"]["stage"] == "probe"
        deadline = time.monotonic() + 10
        while len(collector.spans()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        spans = dict(collector.spans())
        assert collector.service_names() == {"dfd-worker"}
    assert set(spans) == {"dfd.job", "dfd.stage.probe"}
    assert spans["dfd.job"] == {
        "dfd.job.id": "traced-job",
        "dfd.job.attempt": 1,
        "dfd.source.kind": "upload",
    }
