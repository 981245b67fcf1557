"""Chaos at the worker level: jobs with uploads through real ``dfd worker`` processes on
a real Redis while work horses and workers are SIGKILLed and Redis is restarted, at
seeded random moments. Every job must end completed (only the service's faults are
injected, and retries outnumber them), none lost or run to completion twice, none failed
with a fault of the user's, and no upload left behind.

Seeded by ``CHAOS_SEED`` (default 16: the plan of faults and their moments; the
jobs a kill finds depend on timing); prints its figures. The stack-level suite
(``dfd serve`` with Triton restarts and URL jobs) builds on the supervisor.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from redis import Redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from cli.local_redis import LocalRedis
from dfd.jobid import new_job_id
from dfd.schemas import JobPayload, JobSource
from gateway.queue import JobQueue

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

JOBS = 24
WORKERS = 2
HORSE_KILLS = 4
WORKER_KILLS = 2
BOUND_S = 150  # every job terminal within this
# Faults of the user's input: a chaos run must never end a job with one of these.
USER_FAULTS = {"invalid-input", "too-large", "unsupported-media", "corrupt-media", "rejected-url"}


def test_jobs_survive_killed_horses_workers_and_a_redis_restart(
    make_settings, worker_process, tmp_path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "16"))
    rng = random.Random(seed)
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    redis = Redis.from_url(server.url)
    try:
        settings = make_settings(
            redis_url=server.url,
            job_monitoring_interval_s=1,
            job_heartbeat_grace_s=4,
            worker_maintenance_interval_s=1,
            retry_backoff_s=0,
            job_retries=HORSE_KILLS + WORKER_KILLS + 2,
        )
        settings.uploads_dir.mkdir(parents=True)
        queue = JobQueue(redis, None, settings)  # type: ignore[arg-type]
        ids, sizes = [], {}
        for _ in range(JOBS):
            job_id = new_job_id()
            upload = settings.uploads_dir / f"{job_id}.mp4"
            sizes[job_id] = rng.randint(1000, 50_000)
            upload.write_bytes(os.urandom(sizes[job_id]))
            work = rng.randint(30, 150)  # 0.3-1.5 s
            source = JobSource(kind="upload", path=str(upload), filename=f"{work}.mp4")
            queue.enqueue(
                JobPayload(job_id=job_id, source=source), func="tests.dispatcher.jobfuncs.chaos_job"
            )
            ids.append(job_id)

        workers = [worker_process(settings) for _ in range(WORKERS)]
        faults: list[str] = []
        done = threading.Event()

        def started_horse() -> int | None:
            for job_id in rng.sample(ids, len(ids)):
                if redis.hget(f"rq:job:{job_id}", "status") != b"started":
                    continue
                attempts = settings.data_dir / f"{job_id}.attempts"
                if attempts.exists() and attempts.read_text().strip():
                    return int(attempts.read_text().split()[-1])
            return None

        def chaos() -> None:
            plan = ["horse"] * HORSE_KILLS + ["worker"] * WORKER_KILLS + ["redis"]
            rng.shuffle(plan)
            for fault in plan:
                if done.wait(rng.uniform(0.5, 2.5)):
                    return
                if fault == "horse":
                    until = time.monotonic() + 10
                    while time.monotonic() < until and not done.is_set():
                        pid = started_horse()
                        try:
                            if pid is not None:
                                os.kill(pid, signal.SIGKILL)
                                faults.append(f"horse {pid}")
                                break
                        except ProcessLookupError:
                            pass
                        time.sleep(0.05)
                elif fault == "worker":
                    alive = [w for w in workers if w.process.poll() is None]
                    victim = rng.choice(alive)
                    victim.kill()
                    faults.append(f"worker {victim.pid}")
                    workers.append(worker_process(settings))  # what the supervisor does
                else:
                    server.stop()
                    time.sleep(rng.uniform(1.0, 3.0))
                    server.start()
                    faults.append("redis restart")

        started = time.monotonic()
        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        terminal: dict[str, str] = {}
        try:
            while len(terminal) < JOBS and time.monotonic() - started < BOUND_S:
                for job_id in ids:
                    if job_id in terminal:
                        continue
                    try:
                        status = redis.hget(f"rq:job:{job_id}", "status")
                    except Exception:  # Redis is being restarted
                        break
                    if status in (b"finished", b"failed"):
                        terminal[job_id] = status.decode()
                time.sleep(0.2)
        finally:
            done.set()
            chaos_thread.join(timeout=30)
        took = time.monotonic() - started

        jobs = {
            job_id: Job.fetch(job_id, connection=redis, serializer=JSONSerializer) for job_id in ids
        }
        attempts = {
            job_id: len((settings.data_dir / f"{job_id}.attempts").read_text().splitlines())
            for job_id in ids
        }
        print(
            f"chaos seed {seed}: {JOBS} jobs, {len(faults)} faults ({', '.join(faults)}), "
            f"{sum(attempts.values())} attempts, all terminal in {took:.1f} s"
        )
        lost = [j for j in ids if j not in terminal]
        assert not lost, f"jobs not terminal after {BOUND_S} s: {lost}"
        failed = {j: jobs[j].meta.get("error") for j in ids if terminal[j] != "finished"}
        assert not [e for e in failed.values() if e and e.get("type") in USER_FAULTS], failed
        assert not failed, failed
        for job_id, job in jobs.items():
            successes = [r for r in job.results() if r.type == Result.Type.SUCCESSFUL]
            assert len(successes) == 1, (job_id, [r.type for r in job.results()])
            assert job.return_value()["media"]["upload_bytes"] == sizes[job_id]
        deadline = time.monotonic() + 10
        while list(settings.uploads_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(settings.uploads_dir.iterdir()) == [], "uploads left behind"
        exited = sorted(w.pid for w in workers if w.process.poll() is not None)
        killed = sorted(int(f.split()[1]) for f in faults if f.startswith("worker"))
        assert exited == killed, "a worker exited that was not killed"
    finally:
        redis.close()
        server.stop()
