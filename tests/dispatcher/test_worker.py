"""The job lifecycle through real ``dfd worker`` processes and a real Redis.

Jobs are test functions enqueued by path (``tests.dispatcher.jobfuncs``) and observed
through the gateway's ``GET /api/job/{id}``, as a client sees them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from cli.local_redis import LocalRedis
from dfd.jobid import new_job_id
from dfd.schemas import JobPayload, JobSource
from gateway.queue import JobQueue
from tests.dispatcher.jobfuncs import marker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {
    "job_monitoring_interval_s": 1,
    # Long enough that a loaded CI machine does not make a live job look abandoned.
    "job_heartbeat_grace_s": 4,
    "worker_maintenance_interval_s": 1,
    "retry_backoff_s": 0,
}


def enqueue(settings, redis, func: str, upload: Path | None = None) -> str:
    job_id = new_job_id()
    if upload is not None:
        source = JobSource(kind="upload", path=str(upload), filename=upload.name)
    else:
        source = JobSource(kind="url", url="http://93.184.216.34/a.mp4")
    JobQueue(redis, None, settings).enqueue(JobPayload(job_id=job_id, source=source), func=func)  # type: ignore[arg-type]
    return job_id


def wait_for(
    client, job_id: str, done: Callable[[dict], bool], timeout_s: float = 30
) -> tuple[dict, list[str]]:
    """Poll the job until ``done(view)``; returns the last view and the states seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/api/job/{job_id}")
        assert response.status_code == 200, response.text
        view = response.json()
        if not seen or seen[-1] != view["status"]:
            seen.append(view["status"])
        if done(view):
            return view, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {view} after {timeout_s} s (seen {seen})")
        time.sleep(0.05)


def gone(path: Path, timeout_s: float = 5.0) -> bool:
    """Whether ``path`` is deleted within ``timeout_s``: the worker releases a job's upload
    just after it has recorded the outcome a client already reads."""
    deadline = time.monotonic() + timeout_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def finished(view: dict) -> bool:
    return view["status"] in ("completed", "failed")


def test_waiting_active_completed(gateway, redis, worker_process, tmp_path) -> None:
    upload = tmp_path / "data" / "uploads" / "clip.mp4"
    with gateway(**FAST) as client:
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"video")
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.slow_job", upload)
        view, _ = wait_for(client, job_id, lambda v: True)
        assert view["status"] == "waiting" and view["attempt"] == 1
        worker_process(client.settings)
        active, _ = wait_for(client, job_id, lambda v: v["status"] == "active" and "stage" in v)
        assert active["stage"] in ("decode", "infer")
        assert 0 <= active["progress"] < 1
        view, seen = wait_for(client, job_id, finished)
    assert seen[-2:] == ["active", "completed"]
    assert view["result"]["media"] == {"job_id": job_id, "attempts": 1}
    assert gone(upload), "the upload outlived its job"


def test_transient_failure_is_retried_then_completes(gateway, redis, worker_process) -> None:
    with gateway(**{**FAST, "retry_backoff_s": 1, "job_retries": 2}) as client:
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.flaky_job")
        worker_process(client.settings)
        # Between the attempts the job waits for its retry (a 1 s backoff, via rq's scheduler).
        retry_wait, _ = wait_for(
            client, job_id, lambda v: v["status"] == "waiting" and v["attempt"] == 2
        )
        view, _ = wait_for(client, job_id, finished)
    assert view["status"] == "completed", view
    assert view["result"]["media"]["attempts"] == 2
    assert view["attempt"] == 2


def test_failing_job_fails_after_the_configured_retries(
    gateway, redis, worker_process, tmp_path
) -> None:
    upload = tmp_path / "data" / "uploads" / "x.mp4"
    with gateway(**{**FAST, "job_retries": 2}) as client:
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"video")
        job_id = enqueue(
            client.settings, redis, "tests.dispatcher.jobfuncs.always_transient", upload
        )
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, finished)
    assert view["status"] == "failed"
    assert view["attempt"] == 3  # the first run and two retries
    assert view["error"] == {
        "type": "fetch-failed",
        "message": "fetch: expected an answer from the test server, got a reset",
        "stage": "fetch",
    }
    assert gone(upload)


@pytest.mark.parametrize(
    ("func", "error_type", "stage"),
    [("input_error_job", "unsupported-media", "probe"), ("buggy_job", "internal", None)],
)
def test_input_errors_and_bugs_fail_once(
    gateway, redis, worker_process, tmp_path, func, error_type, stage
) -> None:
    upload = tmp_path / "data" / "uploads" / "x.mp4"
    with gateway(**{**FAST, "job_retries": 3}) as client:
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"video")
        job_id = enqueue(client.settings, redis, f"tests.dispatcher.jobfuncs.{func}", upload)
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, finished)
        time.sleep(1.5)  # a retry, had one been scheduled, would have run by now
        again = client.get(f"/api/job/{job_id}").json()
    assert view["status"] == again["status"] == "failed"
    assert again["attempt"] == 1
    assert again["error"]["type"] == error_type
    assert again["error"].get("stage") == stage
    assert gone(upload)


def test_jobs_survive_a_redis_restart(make_settings, worker_process, tmp_path) -> None:
    """Jobs enqueued, Redis stopped and started again on its AOF, then a worker runs them all."""
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    server = LocalRedis(tmp_path / "redis-aof", appendonly=True).start()
    try:
        settings = make_settings(redis_url=server.url, **FAST)
        redis = Redis.from_url(server.url)
        ids = [enqueue(settings, redis, "tests.dispatcher.jobfuncs.flaky_job") for _ in range(3)]
        server.stop()
        assert not server.running
        server.start()
        worker_process(settings)
        with TestClient(create_app(settings, Redis.from_url(server.url))) as client:
            views = [wait_for(client, job_id, finished)[0] for job_id in ids]
        assert [v["status"] for v in views] == ["completed"] * 3
        redis.close()
    finally:
        server.stop()


def _wait_marker(job_id: str, settings, timeout_s: float = 30) -> tuple[int, int]:
    path = marker(job_id, settings.data_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            attempt, pid = path.read_text().split()
            return int(attempt), int(pid)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started")


def test_killed_worker_job_is_retried_by_another_worker(gateway, redis, worker_process) -> None:
    with gateway(**{**FAST, "job_retries": 1}) as client:
        s = client.settings
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
        first = worker_process(s)
        _wait_marker(job_id, s)
        assert client.get(f"/api/job/{job_id}").json()["status"] == "active"
        first.kill()
        marker(job_id, s.data_dir).unlink()
        worker_process(s)
        view, seen = wait_for(client, job_id, finished, timeout_s=40)
    assert view["status"] == "completed", view
    assert view["result"]["media"]["attempts"] == 2


def test_killed_worker_job_without_retries_fails_with_a_message(
    gateway, redis, worker_process
) -> None:
    with gateway(**{**FAST, "job_retries": 0}) as client:
        s = client.settings
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
        first = worker_process(s)
        _wait_marker(job_id, s)
        first.kill()
        worker_process(s)
        view, _ = wait_for(client, job_id, finished, timeout_s=40)
    assert view["status"] == "failed"
    assert view["error"]["type"] == "worker-lost"
    assert "worker died while processing" in view["error"]["message"]


def test_a_worker_killed_alone_takes_its_work_horse_with_it(gateway, redis, worker_process) -> None:
    """SIGKILL of the worker process only, as ``dfd serve``'s supervisor sees a crash (rq
    puts the horse in a group of its own): an orphaned horse would complete the job while
    another worker retries it as abandoned, so the job would run to completion twice."""
    import os
    import signal

    import psutil

    with gateway(**{**FAST, "job_retries": 1}) as client:
        s = client.settings
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
        first = worker_process(s)
        _, horse = _wait_marker(job_id, s)
        assert os.getpgid(horse) != os.getpgid(first.pid)  # out of reach of a group kill
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(horse) and time.monotonic() < deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(horse).status() == psutil.STATUS_ZOMBIE:
                    break
            time.sleep(0.05)
        alive = psutil.pid_exists(horse) and psutil.Process(horse).status() != "zombie"
        assert not alive, "the work horse outlived its worker"
        marker(job_id, s.data_dir).unlink()
        worker_process(s)
        view, _ = wait_for(client, job_id, finished, timeout_s=40)
    assert view["status"] == "completed", view
    assert view["result"]["media"]["attempts"] == 2


def test_killed_work_horse_is_noticed_at_once(gateway, redis, worker_process) -> None:
    """Only the process running the job dies (an OOM kill): its worker retries the job."""
    import os
    import signal

    with gateway(**{**FAST, "job_retries": 1}) as client:
        s = client.settings
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
        worker = worker_process(s)
        _, horse = _wait_marker(job_id, s)
        assert horse != worker.pid
        marker(job_id, s.data_dir).unlink()
        os.kill(horse, signal.SIGKILL)
        view, _ = wait_for(client, job_id, finished, timeout_s=20)
    assert view["status"] == "completed", view
    assert view["result"]["media"]["attempts"] == 2


def test_upload_through_the_real_pipeline(
    gateway, redis, worker_process, triton, weights_dir, media_dir
) -> None:
    """A real clip: gateway upload -> real worker -> real pipeline on the real Triton -> result and evidence."""
    from dfd.schemas import Result

    grid_clip = media_dir / "grid" / "id2_vcd_swwp2s.mpg"
    overrides = {
        **FAST,
        "job_retries": 0,
        "triton_url": triton.grpc_url,
        "weights_dir": weights_dir,
    }
    with gateway(**overrides) as client:
        response = client.post("/api/upload", files={"file": ("clip.mpg", grid_clip.read_bytes())})
        assert response.status_code == 202, response.text
        job_id = response.json()["jobId"]
        assert len(list(client.settings.uploads_dir.iterdir())) == 1
        worker_process(client.settings)
        view, seen = wait_for(client, job_id, finished, timeout_s=300)
        assert view["status"] == "completed", view
        assert seen[0] == "waiting" and "active" in seen
        result = Result.model_validate(view["result"])
        assert 0 <= result.confidence <= 1
        assert result.evidence.timeline, "no timeline"
        assert all(gone(p) for p in client.settings.uploads_dir.iterdir()), (
            "the upload outlived its job"
        )
        # Evidence links are signed URLs served by this gateway.
        for url in result.evidence.thumbnails[:1] + result.evidence.heatmaps[:1]:
            path = url.removeprefix(client.settings.public_base_url)
            evidence = client.get(path)
            assert evidence.status_code == 200, path
            assert evidence.headers["content-type"].startswith("image/")


def test_job_over_its_timeout_fails_without_retry(gateway, redis, worker_process) -> None:
    with gateway(**{**FAST, "job_timeout_s": 1, "job_retries": 2}) as client:
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, finished)
    assert view["status"] == "failed"
    assert view["attempt"] == 1
    assert view["error"]["type"] == "timeout"
    assert view["error"]["message"] == "job: expected to finish within 1 s, took longer"


def test_heartbeat_outlasts_the_gap_to_the_next_one_near_the_timeout(make_settings, redis) -> None:
    """A job close to (or past) its timeout still heartbeats every monitoring interval
    until rq kills its horse: each heartbeat must cover the gap to the next one, or
    another worker finds the running job 'abandoned' and starts it a second time."""
    from rq.job import Job

    from dispatcher.worker import build_worker

    settings = make_settings(job_monitoring_interval_s=30, job_heartbeat_grace_s=5)
    worker = build_worker(settings, redis)
    job = Job.create("tests.dispatcher.jobfuncs.marker", connection=redis, timeout=600)
    for working_s in (0, 580, 600, 640):  # rq kills a horse stuck past its timeout at +60 s
        worker.current_job_working_time = working_s
        assert worker.get_heartbeat_ttl(job) > settings.job_monitoring_interval_s, working_s
