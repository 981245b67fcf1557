"""The exporter's metrics, read from a real Redis that real ``dfd worker`` processes fill.

Jobs are enqueued as the gateway enqueues them; the collector is scraped through
prometheus-client's own text format and parser, as Prometheus would read it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dfd.jobid import new_job_id
from dfd.schemas import JobError, JobPayload, JobSource
from dfd.states import Stage
from dispatcher.metrics import (
    ATTEMPT_FAILURES_KEY,
    SUPERVISOR_RESTARTS_KEY,
    JobSystemCollector,
    RestartCounter,
    exporter_registry,
    process_kind,
    record_attempt_failure,
)
from gateway.queue import JobQueue
from tests.dispatcher.jobfuncs import marker
from tests.dispatcher.metricsfuncs import TIMINGS_MS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {
    "job_monitoring_interval_s": 1,
    "job_heartbeat_grace_s": 4,
    "worker_maintenance_interval_s": 1,
    "retry_backoff_s": 0,
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: Any) -> Samples:
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def enqueue(settings, redis, func: str, priority: str = "default", kind: str = "url") -> str:
    job_id = new_job_id()
    if kind == "upload":
        # A real file: the job functions read their upload as probing would.
        upload = settings.uploads_dir / f"{job_id}.mp4"
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"\0\0\0\x18ftypmp42")
        source = JobSource(kind="upload", path=str(upload), filename="x.mp4")
    else:
        source = JobSource(kind="url", url="http://93.184.216.34/a.mp4")
    payload = JobPayload(job_id=job_id, source=source, priority=priority)  # type: ignore[arg-type]
    JobQueue(redis, None, settings).enqueue(payload, func=func)  # type: ignore[arg-type]
    return job_id


def wait_until(check: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout_s} s")
        time.sleep(0.1)


def ended(redis) -> int:
    return sum(
        redis.zcard(f"rq:{r}:{q}")
        for r in ("finished", "failed")
        for q in ("high", "default", "low")
    )


def test_queue_depth_oldest_job_and_registries_per_priority(make_settings, redis) -> None:
    settings = make_settings()
    for _ in range(3):
        enqueue(settings, redis, "tests.dispatcher.metricsfuncs.timed_job", priority="low")
    enqueue(settings, redis, "tests.dispatcher.metricsfuncs.timed_job", priority="high")
    later = time.time() + 90
    samples = scrape(exporter_registry(JobSystemCollector(redis, clock=lambda: later)))
    assert value(samples, "dfd_redis_up") == 1
    assert value(samples, "dfd_queue_depth", priority="low") == 3
    assert value(samples, "dfd_queue_depth", priority="high") == 1
    assert value(samples, "dfd_queue_depth", priority="default") == 0
    assert 89 <= value(samples, "dfd_queue_oldest_job_age_seconds", priority="low") <= 92
    assert value(samples, "dfd_queue_oldest_job_age_seconds", priority="default") == 0
    assert value(samples, "dfd_jobs_in_registry", priority="low", registry="started") == 0
    assert value(samples, "dfd_workers", state="busy") == 0
    assert value(samples, "dfd_workers", state="idle") == 0
    # No Triton to ask: the metric is left out rather than reported as not ready.
    assert not [k for k in samples if k[0] == "dfd_triton_ready"]


def test_ended_jobs_are_counted_once_by_outcome_kind_stage_and_error(
    make_settings, redis, worker_process
) -> None:
    settings = make_settings(**FAST, job_retries=1)
    # A job that ended before the exporter started is not counted.
    enqueue(settings, redis, "tests.dispatcher.metricsfuncs.timed_job")
    worker = worker_process(settings)
    wait_until(lambda: ended(redis) == 1, what="the first job ended")
    collector = JobSystemCollector(redis)
    registry = exporter_registry(collector)
    before = scrape(registry)
    assert total(before, "dfd_job_duration_seconds_count") == 0
    assert total(before, "dfd_workers") == 1  # busy or idle: it may be finishing up

    enqueue(settings, redis, "tests.dispatcher.metricsfuncs.timed_job", kind="upload")
    enqueue(settings, redis, "tests.dispatcher.metricsfuncs.audio_only_job", priority="high")
    enqueue(settings, redis, "tests.dispatcher.jobfuncs.flaky_job")  # fails once, then completes
    enqueue(settings, redis, "tests.dispatcher.jobfuncs.always_transient", priority="low")
    enqueue(settings, redis, "tests.dispatcher.jobfuncs.input_error_job", kind="upload")
    wait_until(lambda: ended(redis) == 6, what="six jobs ended")
    samples = scrape(registry)

    count = "dfd_job_duration_seconds_count"
    assert value(samples, count, outcome="completed", kind="upload") == 1
    assert value(samples, count, outcome="completed", kind="audio-only") == 1
    assert value(samples, count, outcome="completed", kind="url") == 1  # the flaky one
    assert value(samples, count, outcome="failed", kind="url") == 1
    assert value(samples, count, outcome="failed", kind="upload") == 1
    assert total(samples, "dfd_job_latency_seconds_count") == 5
    latency = total(samples, "dfd_job_latency_seconds_sum")
    assert latency >= total(samples, "dfd_job_duration_seconds_sum") > 0
    # Stage times come from the results' timings_ms, in seconds.
    assert value(samples, "dfd_stage_duration_seconds_count", stage="inference") == 1
    assert value(samples, "dfd_stage_duration_seconds_sum", stage="inference") == pytest.approx(
        TIMINGS_MS["inference"] / 1000
    )
    assert value(samples, "dfd_job_models_total", role="audio", model="aasist@2") == 1
    # Final failures by type and stage; every failed attempt, retried ones too.
    assert value(samples, "dfd_job_failures_total", type="fetch-failed", stage="fetch") == 1
    assert value(samples, "dfd_job_failures_total", type="unsupported-media", stage="probe") == 1
    attempts = "dfd_job_attempt_failures_total"
    assert value(samples, attempts, type="fetch-failed", stage="fetch") == 3  # flaky 1 + 2
    assert value(samples, attempts, type="unsupported-media", stage="probe") == 1
    assert value(samples, "dfd_job_retries_total", outcome="completed") == 1
    assert value(samples, "dfd_job_retries_total", outcome="failed") == 1
    assert value(samples, "dfd_jobs_in_registry", priority="low", registry="failed") == 1

    # A second scrape counts nothing again.
    again = scrape(registry)
    assert total(again, count) == total(samples, count) == 5
    assert total(again, "dfd_job_failures_total") == 2
    worker.stop()


def test_a_killed_work_horse_counts_as_a_worker_lost_attempt(
    make_settings, redis, worker_process
) -> None:
    settings = make_settings(**FAST, job_retries=1)
    settings.data_dir.mkdir(parents=True)  # where the job writes its marker
    registry = exporter_registry(JobSystemCollector(redis))
    scrape(registry)
    job_id = enqueue(settings, redis, "tests.dispatcher.jobfuncs.stuck_once_job")
    worker_process(settings)
    wait_until(lambda: marker(job_id, settings.data_dir).exists(), what="the job started")
    busy = scrape(registry)
    assert value(busy, "dfd_workers", state="busy") == 1
    assert value(busy, "dfd_jobs_in_registry", priority="default", registry="started") == 1
    wait_until(lambda: bool(marker(job_id, settings.data_dir).read_text()), what="marked")
    _, horse = marker(job_id, settings.data_dir).read_text().split()
    os.kill(int(horse), signal.SIGKILL)
    wait_until(lambda: ended(redis) == 1, what="the retried job ended")
    samples = scrape(registry)
    assert value(samples, "dfd_job_attempt_failures_total", type="worker-lost", stage="infer") == 1
    assert value(samples, "dfd_job_duration_seconds_count", outcome="completed", kind="url") == 1
    assert value(samples, "dfd_job_retries_total", outcome="completed") == 1


def test_redis_down_is_reported_not_raised(redis_server) -> None:
    from redis import Redis

    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    samples = scrape(exporter_registry(JobSystemCollector(dead)))
    assert value(samples, "dfd_redis_up") == 0
    assert value(samples, "dfd_redis_connection_errors_total") == 1
    # The failure hook does not raise either.
    record_attempt_failure(dead, JobError(type="transient", message="x", stage=Stage.FETCH))


def test_supervisor_restarts_are_served_by_process_kind_and_outlive_a_redis_outage(
    tmp_path,
) -> None:
    """What ``dfd serve`` counts reaches the exporter; a count made while Redis is down
    (Redis itself crashed) is written with the next restart, Redis's own."""
    from redis import Redis

    from cli.local_redis import LocalRedis

    # fsync always: the test kills Redis with -9, and an everysec AOF may lose the last
    # second's writes (the counts made just before), which is not what is tested here
    server = LocalRedis(tmp_path / "redis", appendonly=True, fsync="always").start()
    client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        counter = RestartCounter(client)
        collector = JobSystemCollector(client)
        empty = generate_latest(exporter_registry(collector)).decode()
        # Named before any restart, so dashboards and rules find the series' name.
        families = {f.name: f.type for f in text_string_to_metric_families(empty)}
        assert families["dfd_supervisor_restarts"] == "counter"
        for name in ("worker-1", "worker-2", "gateway", "worker-1"):
            counter(name)
        samples = scrape(exporter_registry(collector))
        assert value(samples, "dfd_supervisor_restarts_total", process="worker") == 3
        assert value(samples, "dfd_supervisor_restarts_total", process="gateway") == 1

        server.kill()
        counter("exporter")  # Redis is gone: kept, nothing raised
        assert counter.pending == {"exporter": 1}
        server.start()
        counter("redis")

        assert counter.pending == {}
        assert {k.decode(): int(v) for k, v in client.hgetall(SUPERVISOR_RESTARTS_KEY).items()} == {
            "worker": 3,
            "gateway": 1,
            "exporter": 1,
            "redis": 1,
        }
        samples = scrape(exporter_registry(collector))
        assert total(samples, "dfd_supervisor_restarts_total") == 6
        assert [process_kind(n) for n in ("worker-12", "triton")] == ["worker", "triton"]
    finally:
        client.close()
        server.stop()


def test_triton_readiness_is_reported(redis) -> None:
    up = scrape(exporter_registry(JobSystemCollector(redis, triton_ready=lambda: True)))
    down = scrape(exporter_registry(JobSystemCollector(redis, triton_ready=lambda: False)))
    assert value(up, "dfd_triton_ready") == 1 and value(down, "dfd_triton_ready") == 0
    assert not redis.exists(ATTEMPT_FAILURES_KEY)


def test_each_registry_entry_is_read_once_through_ties_and_new_scores(redis) -> None:
    collector = JobSystemCollector(redis)
    key = "rq:finished:default"
    redis.zadd(key, {"old-a": 100, "old-b": 100})
    assert collector._new_ids(key) == []  # the first read only sets the watermark
    redis.zadd(key, {"tie": 100, "later": 105})
    assert sorted(collector._new_ids(key)) == ["later", "tie"]
    assert collector._new_ids(key) == []
    redis.zadd(key, {"same-as-later": 105, "last": 110})
    assert sorted(collector._new_ids(key)) == ["last", "same-as-later"]
    # Expired entries removed by rq's cleanup change nothing.
    redis.zremrangebyscore(key, 0, 105)
    assert collector._new_ids(key) == []
    empty = JobSystemCollector(redis)
    assert empty._new_ids("rq:failed:low") == []
    redis.zadd("rq:failed:low", {"first": 1})
    assert empty._new_ids("rq:failed:low") == ["first"]


def test_a_job_that_is_not_dfds_does_not_break_the_scrape(make_settings, redis) -> None:
    registry = exporter_registry(JobSystemCollector(redis))
    scrape(registry)
    foreign = {"data": b"\x80\x04not json", "meta": b"\x80\x04", "started_at": "yesterday"}
    redis.hset("rq:job:foreign", mapping=foreign)
    redis.zadd("rq:finished:default", {"foreign": time.time() + 100})
    from datetime import UTC, datetime

    from rq.utils import utcformat

    ours = enqueue(make_settings(), redis, "tests.dispatcher.metricsfuncs.timed_job")
    redis.hset(f"rq:job:{ours}", "ended_at", utcformat(datetime.now(UTC)))
    redis.zadd("rq:finished:default", {ours: time.time() + 100})
    samples = scrape(registry)
    assert value(samples, "dfd_redis_up") == 1
    # The foreign job is skipped; dfd's own in the same batch is counted.
    assert value(samples, "dfd_job_latency_seconds_count", outcome="completed", kind="url") == 1
