"""Faults around a job's end: a lost result, a Redis outage, a dead worker, a dead
scheduler. Real ``dfd worker`` processes on a real Redis; jobs are test functions
(``tests.dispatcher.jobfuncs``) observed as a client sees them."""

from __future__ import annotations

import os
import signal
import time

import pytest
from redis import Redis

from cli.local_redis import LocalRedis
from tests.dispatcher.jobfuncs import go_file, marker
from tests.dispatcher.test_worker import FAST, _wait_marker, enqueue, finished, gone, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _app_client(settings, url: str):
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    return TestClient(create_app(settings, Redis.from_url(url)), raise_server_exceptions=False)


def test_a_retry_after_a_lost_result_finds_its_upload(make_settings, worker_process, tmp_path):
    """Redis pauses as the job returns, the horse dies while rq writes the result: the
    retry redoes the work on the upload it still has (it used to fail as corrupt-media:
    the attempt had deleted the file before rq recorded the result)."""
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    try:
        settings = make_settings(redis_url=server.url, **{**FAST, "job_retries": 1})
        upload = settings.uploads_dir / "clip.mp4"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(b"video")
        redis = Redis.from_url(server.url)
        job_id = enqueue(settings, redis, "tests.dispatcher.jobfuncs.returns_when_told", upload)
        worker = worker_process(settings)
        _, horse = _wait_marker(job_id, settings)
        marker(job_id, settings.data_dir).unlink()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            go_file(job_id, settings.data_dir).touch()
            time.sleep(1.0)  # the job has returned; rq's write of its result is blocked
            assert upload.exists(), "the upload went before the result was recorded"
            os.kill(horse, signal.SIGKILL)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        with _app_client(settings, server.url) as client:
            view, _ = wait_for(client, job_id, finished, timeout_s=40)
        assert view["status"] == "completed", view
        assert view["result"]["media"]["attempts"] == 2
        assert gone(upload), "the upload outlived its job"
        assert worker.process.poll() is None
        redis.close()
    finally:
        server.stop()


def test_workers_ride_out_a_redis_outage_under_load(make_settings, worker_process, tmp_path):
    """Redis stopped for 3 s while two workers are busy: no worker exits, every job completes."""
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    try:
        settings = make_settings(redis_url=server.url, **FAST)
        redis = Redis.from_url(server.url)
        ids = [enqueue(settings, redis, "tests.dispatcher.jobfuncs.slow_job") for _ in range(6)]
        workers = [worker_process(settings), worker_process(settings)]
        deadline = time.monotonic() + 30
        while redis.hget(f"rq:job:{ids[0]}", "status") != b"started":
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.05)
        time.sleep(0.5)  # both workers mid-job
        server.stop()
        time.sleep(3.0)
        server.start()
        with _app_client(settings, server.url) as client:
            views = [wait_for(client, job_id, finished, timeout_s=60)[0] for job_id in ids]
        assert [v["status"] for v in views] == ["completed"] * 6, views
        assert [w.process.poll() for w in workers] == [None, None], "a worker exited"
        redis.close()
    finally:
        server.stop()


def test_a_dead_worker_s_job_is_resolved_within_30_s_with_default_settings(
    gateway, redis, worker_process
) -> None:
    with gateway(job_retries=0) as client:  # the default intervals and grace
        s = client.settings
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
        first = worker_process(s)
        _wait_marker(job_id, s)
        worker_process(s)
        first.kill()
        killed = time.monotonic()
        view, _ = wait_for(client, job_id, finished, timeout_s=45)
        took = time.monotonic() - killed
    assert view["status"] == "failed"
    assert view["error"]["type"] == "worker-lost"
    assert "worker died while processing" in view["error"]["message"]
    print(f"dead worker's job resolved {took:.1f} s after the kill")
    assert took < 30, f"took {took:.1f} s"


def test_retries_stay_on_time_when_the_scheduler_s_worker_dies(
    gateway, redis, worker_process
) -> None:
    """The first worker holds rq's scheduler lock (a minute's TTL) and is killed; the
    other worker frees the dead scheduler's lock and schedules the retry itself."""
    with gateway(job_retries=2, retry_backoff_s=1) as client:
        s = client.settings
        holder = worker_process(s)
        deadline = time.monotonic() + 30
        while not redis.get("rq:scheduler-lock:default"):
            assert time.monotonic() < deadline, "no scheduler took the lock"
            time.sleep(0.05)
        other = worker_process(s)
        time.sleep(1.0)
        holder.kill()
        killed = time.monotonic()
        job_id = enqueue(s, redis, "tests.dispatcher.jobfuncs.flaky_job")
        view, seen = wait_for(client, job_id, finished, timeout_s=60)
        took = time.monotonic() - killed
    assert view["status"] == "completed", view
    assert view["attempt"] == 2
    assert other.process.poll() is None
    print(f"retry after the scheduler's worker died done {took:.1f} s after the kill")
    # rq alone waits out the dead lock's minute; freed, it is the 10 s silence + a pass.
    assert took < 25, f"took {took:.1f} s (seen {seen})"
