"""dispatcher.jobs: failure classification, non-retry of input errors, upload clean-up.

The rq parts run in-process on a real Redis with ``InProcessWorker`` (``dfd worker``'s
class without the fork); the end-to-end versions with real
worker processes are in ``test_worker.py``.
"""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import pytest
import redis.exceptions
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from dfd import errors
from dispatcher import jobs
from dispatcher.errors import StoreUnavailableError
from dispatcher.worker import DfdWorker, InProcessWorker, build_worker


@pytest.mark.unit
@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (errors.FetchTransientError("fetch: reset"), True),
        (errors.UpstreamUnavailableError("triton: down"), True),
        (AbandonedJobError(), True),
        (ConnectionResetError("reset"), True),
        # redis-py's connection errors are not the builtin ConnectionError.
        (redis.exceptions.ConnectionError("Redis: connection reset"), True),
        (redis.exceptions.TimeoutError("Redis: timeout reading"), True),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
        (errors.UnsupportedMediaError("probe: no video"), False),
        (errors.RejectedURLError("url: private"), False),
        (errors.ConfigurationError("weights missing"), False),
        (errors.InternalError("bug"), False),
        (KeyError("x"), False),
        (JobTimeoutException("too slow"), False),
    ],
)
def test_only_transient_failures_are_retryable(exc, retryable) -> None:
    assert jobs.is_retryable(exc) is retryable


class _Job:
    """What `jobs.describe` reads of an rq job."""

    id = "job-describe"
    timeout = 30
    meta = {"stage": "evidence"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("exc", "kind", "shown"),
    [
        # the client's own media and URL: the message as it is
        (errors.UnsupportedMediaError("probe: expected a video stream, got none"), "unsupported-media", True),
        (errors.FetchTransientError("fetch: https://example.org/v.mp4 answered 503"), "fetch-failed", True),
        # the service's own trouble: kind and stage only
        (redis.exceptions.ConnectionError("Error 111 connecting to redis.internal.corp:6379"), "transient", False),
        (FileNotFoundError("/srv/dfd/data/tmp/j/frames/0001.png"), "internal", False),
        (StoreUnavailableError("store: cannot write under /data/evidence"), "upstream-unavailable", False),
        (errors.UpstreamUnavailableError("triton: triton.internal:8001 unavailable"), "upstream-unavailable", False),
        (errors.ConfigurationError("weights: /opt/dfd/weights/x.h5 missing"), "configuration", False),
    ],
)  # fmt: skip
def test_clients_read_their_own_failures_and_only_the_kind_of_the_service_s(
    exc, kind, shown
) -> None:
    error = jobs.describe(exc, _Job())
    assert error.type == kind
    assert error.stage is not None and error.stage.value == "evidence"
    if shown:
        assert error.message == str(exc)
    else:
        assert str(exc) not in error.message
        assert error.message.startswith("evidence: ") and _Job.id in error.message
        assert str(exc) in jobs.detail(exc)


@pytest.mark.unit
def test_payload_is_validated() -> None:
    with pytest.raises(jobs.InvalidPayloadError) as info:
        jobs.parse_payload({"job_id": "x", "source": {"kind": "ftp"}})
    assert isinstance(info.value, errors.InputError)
    ok = jobs.parse_payload(
        {"job_id": "x", "source": {"kind": "url", "url": "http://93.184.216.34/"}}
    )
    assert ok.priority == "default"


@pytest.mark.unit
def test_delete_upload_only_touches_the_uploads_folder(tmp_path, make_settings) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    settings.uploads_dir.mkdir(parents=True)
    inside = settings.uploads_dir / "a.mp4"
    outside = tmp_path / "precious.mp4"
    inside.write_bytes(b"x")
    outside.write_bytes(b"x")
    for path in (inside, outside, settings.uploads_dir / ".." / ".." / "precious.mp4"):
        jobs.delete_upload({"source": {"kind": "upload", "path": str(path)}}, settings)
    assert not inside.exists()
    assert outside.exists()


def _queue_and_worker(redis, settings) -> tuple[Queue, DfdWorker]:
    """The default queue and an in-process worker wired as ``dfd worker`` wires its own."""
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    worker = build_worker(settings, redis, ["default"], worker_class=InProcessWorker)
    return queue, worker


def _run(redis, settings, func: str, payload: dict, retries: int) -> Job:
    queue, worker = _queue_and_worker(redis, settings)
    job = queue.enqueue(func, payload, retry=Retry(max=retries), meta={"retries": retries})
    worker.work(burst=True)
    job.refresh()
    return job


@pytest.fixture
def upload(make_settings, tmp_path) -> tuple[object, Path, dict]:
    settings = make_settings()
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    path = settings.uploads_dir / "clip.mp4"
    path.write_bytes(b"video")
    payload = {"job_id": "j1", "source": {"kind": "upload", "path": str(path)}}
    return settings, path, payload


@pytest.mark.integration
def test_input_error_fails_once_without_retry(redis, upload) -> None:
    settings, path, payload = upload
    job = _run(redis, settings, "tests.dispatcher.jobfuncs.input_error_job", payload, retries=3)
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["attempt"] == 1
    assert job.retries_left == 0
    assert job.meta["error"] == {
        "type": "unsupported-media",
        "message": "probe: expected a video stream, got none",
        "stage": "probe",
    }
    assert not path.exists()


@pytest.mark.integration
def test_transient_error_is_retried_until_it_passes(redis, upload) -> None:
    settings, path, payload = upload
    job = _run(redis, settings, "tests.dispatcher.jobfuncs.flaky_job", payload, retries=3)
    assert job.get_status() == JobStatus.FINISHED
    assert job.meta["attempt"] == 2
    assert "error" not in job.meta
    assert not path.exists()


@pytest.mark.integration
def test_upload_is_kept_while_a_retry_is_due(redis, upload) -> None:
    """A transient failure with retries left keeps the file; the last failure deletes it."""
    settings, path, payload = upload
    queue, worker = _queue_and_worker(redis, settings)
    job = queue.enqueue(
        "tests.dispatcher.jobfuncs.always_transient",
        payload,
        retry=Retry(max=1, interval=60),
        meta={"retries": 1},
    )
    worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED
    assert path.exists()
    queue.enqueue_job(job)  # what the scheduler does when the backoff is over
    worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["type"] == "fetch-failed"
    assert not path.exists()


@pytest.mark.integration
def test_bad_payload_fails_once(redis, make_settings) -> None:
    job = _run(redis, make_settings(), "dispatcher.jobs.run_job", {"job_id": "x"}, retries=3)
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["type"] == "invalid-payload"
    assert job.retries_left == 0


@pytest.mark.integration
def test_maintenance_purges_expired_evidence_once_per_interval(redis, make_settings) -> None:
    import os
    import time

    from dispatcher.store import LocalStore
    from dispatcher.worker import purge_evidence

    settings = make_settings(evidence_ttl_s=60, worker_maintenance_interval_s=30)
    store = LocalStore(settings)
    old = store.path(store.put("job1", "thumb.jpg", b"old", "image/jpeg"))
    fresh = store.path(store.put("job2", "thumb.jpg", b"new", "image/jpeg"))
    past = time.time() - 120
    os.utime(old, (past, past))
    purge_evidence(redis, settings)
    assert not old.exists()
    assert fresh.exists()
    # Another worker's pass within the interval does nothing (one purge per interval).
    os.utime(fresh, (past, past))
    purge_evidence(redis, settings)
    assert fresh.exists()
    assert 0 < redis.ttl("dfd:maintenance:purge") <= 30


@pytest.mark.integration
def test_maintenance_sweeps_orphaned_uploads(redis, make_settings) -> None:
    import os
    import time

    from dfd.jobid import new_job_id
    from dfd.schemas import JobPayload, JobSource
    from dispatcher.worker import sweep_uploads
    from gateway.queue import JobQueue

    settings = make_settings(request_timeout_s=10)
    settings.uploads_dir.mkdir(parents=True)
    live_id = new_job_id()
    live = settings.uploads_dir / f"{live_id}.mp4"
    payload = JobPayload(job_id=live_id, source=JobSource(kind="upload", path=str(live)))
    JobQueue(redis, None, settings).enqueue(payload)  # type: ignore[arg-type]
    orphan = settings.uploads_dir / f"{new_job_id()}.mp4"  # its job expired
    partial = settings.uploads_dir / f"{new_job_id()}.part"  # its gateway died mid-upload
    young = settings.uploads_dir / f"{new_job_id()}.webm"  # about to be enqueued
    old = time.time() - 3600
    for path in (live, orphan, partial, young):
        path.write_bytes(b"x")
        if path is not young:
            os.utime(path, (old, old))
    assert sweep_uploads(redis, settings) == 2
    assert live.exists() and young.exists()
    assert not orphan.exists() and not partial.exists()


@pytest.mark.integration
@pytest.mark.parametrize(("running_s", "expected"), [(700.0, "timeout"), (5.0, "worker-lost")])
def test_horse_killed_past_its_timeout_is_a_timeout_not_retried(
    redis, upload, running_s, expected
) -> None:
    """rq kills a horse stuck past its timeout (SIGALRM could not interrupt it) at
    timeout + 60 s; that is the job's timeout, not a lost worker, and is not retried."""
    import signal
    from datetime import datetime, timedelta

    settings, path, payload = upload
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(
        "tests.dispatcher.jobfuncs.marker",
        payload,
        retry=Retry(max=3),
        meta={"retries": 3},
        job_timeout=600,
    )
    job.started_at = datetime.now(UTC) - timedelta(seconds=running_s)
    jobs.handle_horse_killed(settings, job, 1234, signal.SIGKILL, None)
    assert job.meta["error"]["type"] == expected
    assert job.should_retry is (expected == "worker-lost")
    assert path.exists(), "the input is released only once the failure is recorded"


@pytest.mark.integration
def test_a_dequeued_job_whose_reply_was_lost_is_requeued_once(redis, make_settings) -> None:
    """rq's BLPOP over several queues loses a job whose reply never reaches the worker;
    dfd's dequeue moves it to the intermediate list, and maintenance puts it back."""
    from dispatcher.worker import DfdQueue, requeue_lost

    queue = DfdQueue("default", connection=redis, serializer=JSONSerializer)
    lost = queue.enqueue("builtins.len", [1])
    done = queue.enqueue("builtins.len", [2])
    # Both dequeued (moved to the intermediate list); the worker never heard of `lost`,
    # `done` ran and finished, its entry left behind.
    for job in (lost, done):
        key, job_id = DfdQueue.lpop([queue.key], None, connection=redis)
        assert (key.decode(), job_id.decode()) == (queue.key, job.id)
    done.set_status(JobStatus.FINISHED)
    assert requeue_lost(queue, grace_s=30) == []  # first seen now
    assert requeue_lost(queue, grace_s=30) == []  # within the grace
    later = time.time() + 60
    assert requeue_lost(queue, grace_s=30, now=later) == [lost.id]
    assert requeue_lost(queue, grace_s=30, now=later) == []  # once
    assert queue.get_job_ids() == [lost.id]
    assert redis.llen(queue.intermediate_queue_key) == 0


@pytest.mark.integration
def test_the_worker_takes_jobs_by_priority_and_leaves_no_intermediate_entries(
    redis, make_settings
) -> None:
    settings = make_settings()
    worker = build_worker(settings, redis, worker_class=InProcessWorker)
    queues = {q.name: q for q in worker.queues}
    order = [("low", "a"), ("default", "b"), ("high", "c")]
    for name, arg in order:
        queues[name].enqueue("tests.dispatcher.jobfuncs.echo", arg)
    worker.work(burst=True)
    finished = [
        Job.fetch(j, connection=redis, serializer=JSONSerializer)
        for q in queues.values()
        for j in q.finished_job_registry.get_job_ids()
    ]
    by_start = sorted(finished, key=lambda j: j.started_at)
    assert [j.args[0] for j in by_start] == ["c", "b", "a"]
    assert all(redis.llen(q.intermediate_queue_key) == 0 for q in queues.values())
