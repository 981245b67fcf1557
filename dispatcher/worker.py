"""``dfd worker``: one RQ worker process serving the ``high``, ``default`` and ``low`` queues.

:class:`DfdWorker` is rq's forking worker holding the worker's settings, built once in
``main()``. It forks a work horse per job (a crash in a decoder kills the horse, not
the worker); in the horse it gives the job a :class:`~dispatcher.jobs.WorkerContext`
made there (the job runs as ``func(ctx, payload)``, see :class:`~dispatcher.jobs.DfdJob`).

It runs rq's scheduler beside it (rq needs it for retries with a delay) and recovers
jobs whose worker died:

- the horse is killed (OOM, SIGKILL): the worker sees it at once; the job is retried
  while it has retries left, else failed with "worker died while processing";
- the whole worker is killed: its work horse goes with it (a parent-death signal: rq
  puts the horse in a process group of its own, which a kill of the worker's group,
  as the supervisor of ``dfd serve`` does, does not reach; a horse left running would
  complete the job while another worker retries it), its job's heartbeat stops, and after
  ``job_heartbeat_grace_s`` the next maintenance pass of any live worker (every
  ``worker_maintenance_interval_s``, busy or idle) finds it abandoned and retries or
  fails it the same way. With the defaults that is within 30 s of the kill;
- the worker held rq's scheduler lock: rq's lock outlives its holder by a minute, so
  the maintenance pass frees a lock whose scheduler stopped heartbeating and a live
  worker's scheduler takes it over: delayed retries stay on time.

A job's input is released only after its outcome is recorded (see
:mod:`dispatcher.jobs`). The worker's Redis connection retries with backoff for
``worker_redis_outage_s``, so a Redis restart of a few seconds costs a pause, not the
worker.

The same maintenance pass, under a Redis lock so only one worker of many does it,
purges expired evidence from the local store and deletes uploads no job will read
(half-written by a gateway that died, or left by a job that no longer exists or is done).

Jobs are JSON-serialised and take the context first, so a plain ``rq worker`` cannot
run them: use ``dfd worker``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.serializers import JSONSerializer

from dfd.settings import Settings
from dfd.states import QUEUE_NAMES
from dispatcher import jobs

log = logging.getLogger(__name__)

_PURGE_LOCK = "dfd:maintenance:purge"
# rq's scheduler heartbeats every second; one silent this long has died.
_SCHEDULER_DEAD_S = 10.0
_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


# The first non-empty queue's head moves to that queue's intermediate list, in one step.
_MOVE_FIRST = """
for i = 1, #KEYS, 2 do
  local id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  if id then return {KEYS[i], id} end
end
return false
"""
# How often an idle worker looks at its queues again.
_POLL_S = 0.1


class DfdQueue(Queue):
    """rq's queue, dequeued at least once across several queues.

    rq takes a job from several queues with ``BLPOP``: a job whose reply is lost (Redis
    shut down or the connection dropped just after the pop) is gone from every list,
    ``queued`` for ever (the chaos suite lost one this way). Here a job moves to its
    queue's intermediate list (``LMOVE``, as rq does for a single queue), the worker
    removes it from there when it starts the job and once its outcome is recorded, and
    the maintenance pass requeues a job found there still ``queued``
    (:func:`requeue_lost`). An idle worker looks again every ``_POLL_S``.
    """

    @classmethod
    def lpop(
        cls, queue_keys: Sequence[str], timeout: int | None, connection: Redis | None = None
    ) -> Any:
        from rq.intermediate_queue import IntermediateQueue
        from rq.queue import DequeueTimeout

        assert connection is not None
        keys: list[str] = []
        for key in queue_keys:
            keys += [key, IntermediateQueue(key, connection).key]
        move = connection.register_script(_MOVE_FIRST)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = move(keys=keys)
            if found:
                return found[0], found[1]
            if deadline is None:
                return None
            if time.monotonic() >= deadline:
                raise DequeueTimeout(timeout, queue_keys)
            time.sleep(_POLL_S)


class DfdWorker(Worker):
    """rq's forking worker with dfd's context, failure handling, heartbeat grace and
    maintenance. Built by :func:`build_worker`."""

    def __init__(self, queues: Any, *, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        kwargs.setdefault("exception_handlers", [partial(jobs.handle_job_exception, settings)])
        kwargs.setdefault("work_horse_killed_handler", partial(jobs.handle_horse_killed, settings))
        super().__init__(queues, job_class=jobs.DfdJob, queue_class=DfdQueue, **kwargs)

    # --- in the work horse ------------------------------------------------------------

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        die_with_worker(self.pid)
        super().main_work_horse(job, queue)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # DfdQueue moves every job through the intermediate list, not only a single
        # queue's (rq removes it only then).
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        # Runs in the process that runs the job: its clients are made here, never shared
        # across the fork.
        if isinstance(job, jobs.DfdJob):
            job.context_factory = partial(jobs.WorkerContext, self.settings)
        return super().perform_job(job, queue)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        super().handle_job_success(job, queue, started_job_registry)
        _forget_dequeue(self.connection, job)
        # Only now is the result in Redis (rq raises if the write failed): the input can go.
        jobs.release_input(job, self.settings)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        super().handle_job_failure(job, queue, started_job_registry, exc_string)
        with contextlib.suppress(*_REDIS_ERRORS):  # else the maintenance pass drops it
            _forget_dequeue(self.connection, job)
        # rq swallows a failed write of the failure; release the input only once Redis
        # says the job failed for good (a retry will read it otherwise).
        try:
            final = job.get_status(refresh=True) == JobStatus.FAILED
        except _REDIS_ERRORS:
            return  # the maintenance sweep removes it once the job is done
        if final:
            jobs.release_input(job, self.settings)

    # --- in the worker ----------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job) -> int:
        # rq adds a fixed 60 s to the monitoring interval; the grace decides how fast a
        # dead worker's job is recovered, so it is a setting. The next heartbeat comes
        # one monitoring interval later whatever time the job has left (rq kills a
        # horse stuck past its timeout only at timeout + 60 s), so a shorter TTL near
        # the timeout would let another worker take the live job for abandoned.
        return self.job_monitoring_interval + self.settings.job_heartbeat_grace_s

    def maintain_heartbeats(self, job: Job) -> None:
        try:
            super().maintain_heartbeats(job)
        except _REDIS_ERRORS:
            # Redis stayed away longer than the connection's retries: skip this beat (the
            # TTL has a grace) rather than leave the horse running without its worker.
            log.warning("heartbeat skipped: Redis unavailable", extra={"job_id": job.id})
            return
        # A busy worker recovers abandoned jobs too: with every worker busy, none would.
        if self.should_run_maintenance_tasks:
            try:
                self.run_maintenance_tasks()
            except Exception:  # never leave the horse without its worker for it
                log.exception("maintenance failed")

    def clean_registries(self) -> None:
        # rq's, with requeue_lost in place of rq's intermediate-list clean-up, which
        # calls a job left there a failure (and can retry one that already finished).
        from rq import worker_registration
        from rq.registry import clean_registries
        from rq.utils import now

        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                requeue_lost(queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]

    def run_maintenance_tasks(self) -> None:
        try:
            free_dead_scheduler_locks(self.connection, self.queue_names())
            super().run_maintenance_tasks()
        except _REDIS_ERRORS:
            log.warning("maintenance skipped: Redis unavailable")
            self.last_cleaned_at = None
            return
        purge_evidence(self.connection, self.settings)


class InProcessWorker(DfdWorker):
    """A :class:`DfdWorker` that runs each job in the worker's own process, without a
    fork (tests, debugging)."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        from rq.worker import WorkerStatus

        self.prepare_execution(job)
        self.perform_job(job, queue)
        self.set_state(WorkerStatus.IDLE)


_PR_SET_PDEATHSIG = 1


def die_with_worker(worker_pid: int | None) -> None:
    """In a freshly forked work horse: SIGKILL it when its worker dies (Linux only).

    A horse that outlives its worker runs the job unwatched: no heartbeat, so another
    worker retries the job as abandoned while the orphan completes it too (the job runs
    to completion twice, and the retry finds the upload released). If the worker died
    before this was set, the horse exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if worker_pid is not None and os.getppid() != worker_pid:
        os._exit(1)


def _forget_dequeue(connection: Any, job: Job) -> None:
    """Drop ``job`` from its queue's intermediate list: its outcome is recorded."""
    from rq.intermediate_queue import IntermediateQueue

    connection.lrem(
        IntermediateQueue.get_intermediate_queue_key(
            Queue.redis_queue_namespace_prefix + job.origin
        ),
        0,
        job.id,
    )


def requeue_lost(queue: Queue, grace_s: float = 30.0, now: float | None = None) -> list[str]:
    """Put back on ``queue`` the jobs dequeued but never started (a reply lost between
    Redis and the worker), and drop entries of jobs that moved on.

    A job sits in the intermediate list from its dequeue until its worker starts it
    (milliseconds); one still ``queued`` there after ``grace_s`` was lost on the way.
    Returns the ids requeued.
    """
    from rq.intermediate_queue import IntermediateQueue

    connection = queue.connection
    inter = IntermediateQueue(queue.key, connection)
    now = time.time() if now is None else now
    requeued = []
    for job_id in inter.get_job_ids():
        status = connection.hget(Job.key_for(job_id), "status")
        if status != JobStatus.QUEUED.value.encode():
            if status is None or status != JobStatus.STARTED.value.encode():
                # Gone, done, failed, scheduled or deferred: nothing in flight here.
                inter.remove(job_id)
                connection.delete(inter.get_first_seen_key(job_id))
            continue
        if inter.set_first_seen(job_id):
            continue
        first = inter.get_first_seen(job_id)
        if first is None or now - first.timestamp() < grace_s:
            continue
        if connection.lpos(queue.key, job_id) is not None or job_id in queue.started_job_registry:
            # Requeued already (a retry) or running: only this entry is stale.
            inter.remove(job_id)
            connection.delete(inter.get_first_seen_key(job_id))
            continue
        with connection.pipeline() as pipe:
            pipe.lrem(inter.key, 0, job_id)
            pipe.delete(inter.get_first_seen_key(job_id))
            pipe.rpush(queue.key, job_id)
            pipe.execute()
        requeued.append(job_id)
        log.warning("requeued a job lost between Redis and a worker", extra={"job_id": job_id})
    return requeued


def free_dead_scheduler_locks(
    connection: Any, queue_names: Sequence[str], now: float | None = None
) -> list[str]:
    """Release the scheduler locks of ``queue_names`` whose scheduler stopped heartbeating.

    rq's scheduler lock lives a minute past its last refresh; when the worker holding it
    dies, no delayed retry of its queues is enqueued for up to that minute. The owner's
    scheduler hash says when it last beat (every second); a lock whose owner is silent
    for ``_SCHEDULER_DEAD_S`` is released (only if still that owner's), so the next
    ``acquire_locks`` of a live worker takes it. Returns the queues released.
    """
    from rq.scheduler import SCHEDULER_KEY_TEMPLATE
    from rq.utils import utcparse

    now = time.time() if now is None else now
    freed = []
    for name in queue_names:
        key = RQScheduler.get_locking_key(name)
        owner = connection.get(key)
        if not owner:
            continue
        owner = owner.decode() if isinstance(owner, bytes) else owner
        beat = connection.hget(SCHEDULER_KEY_TEMPLATE % owner, "last_heartbeat")
        if beat:
            if now - utcparse(beat.decode()).timestamp() < _SCHEDULER_DEAD_S:
                continue
        elif connection.ttl(key) > 60 - _SCHEDULER_DEAD_S + 1:
            continue  # a scheduler just taking the lock, before its first heartbeat
        if release_lock(connection, key, owner):
            freed.append(name)
            log.info("freed the scheduler lock of a dead worker", extra={"queue": name})
    return freed


def sweep_uploads(connection: Any, settings: Settings, now: float | None = None) -> int:
    """Delete uploads no job will read: half-written ones from a gateway that died
    mid-upload, finished ones whose job no longer exists, and those of jobs that are done
    (finished or failed) whose worker could not release them (Redis dropped just then).

    Each upload is named after its job id; a young file is left alone, since the gateway
    renames it just before it enqueues the job. Returns how many files were removed.
    """
    folder = settings.uploads_dir
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    grace_s = 2 * settings.request_timeout_s + 60
    done = {JobStatus.FINISHED.value.encode(), JobStatus.FAILED.value.encode()}
    removed = 0
    for path in folder.iterdir():
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < grace_s or not path.is_file():
            continue
        stem = path.name.split(".", 1)[0]
        if path.suffix == ".part" or connection.hget(Job.key_for(stem), "status") in (None, *done):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def purge_evidence(connection: Any, settings: Settings) -> None:
    """Delete expired evidence and orphaned uploads, at most once per maintenance interval
    (one worker of many does it, under a Redis lock)."""
    if not connection.set(_PURGE_LOCK, "1", nx=True, ex=settings.worker_maintenance_interval_s):
        return
    try:
        swept = sweep_uploads(connection, settings)
    except Exception:  # maintenance must never take the worker down
        log.exception("upload sweep failed")
    else:
        if swept:
            log.info("removed orphaned uploads", extra={"removed": swept})
    if settings.store != "local":
        return  # S3 expires objects with a bucket lifecycle rule
    try:
        from dispatcher.cleanup import purge_expired
        from dispatcher.store import make_store

        removed = purge_expired(make_store(settings), settings)
    except Exception:  # maintenance must never take the worker down
        log.exception("evidence purge failed")
        return
    if removed:
        log.info("purged expired evidence", extra={"removed": removed})


def redis_connection(settings: Settings) -> Redis:
    """The worker's Redis client: each command retries with backoff (0.1 s doubling to
    1 s) for about ``worker_redis_outage_s`` before the error reaches rq, which would
    stop the worker."""
    assert settings.redis_url
    # 0.1 + 0.2 + 0.4 + 0.8 s, then 1 s a try.
    retries = 4 + max(0, math.ceil(settings.worker_redis_outage_s - 1.5))
    return Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=settings.redis_timeout_s,
    )


def build_worker(
    settings: Settings,
    connection: Any,
    queues: Sequence[str] = QUEUE_NAMES,
    name: str | None = None,
    worker_class: type[DfdWorker] = DfdWorker,
) -> DfdWorker:
    """A worker wired with dfd's context, exception handling, heartbeats and maintenance."""
    return worker_class(
        [
            DfdQueue(q, connection=connection, serializer=JSONSerializer, job_class=jobs.DfdJob)
            for q in queues
        ],
        settings=settings,
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        default_result_ttl=settings.result_ttl_s,
        job_monitoring_interval=settings.job_monitoring_interval_s,
        maintenance_interval=settings.worker_maintenance_interval_s,
        # An idle worker blocks on the queues for worker_ttl - 15 s before its next
        # maintenance pass; keep that close to the maintenance interval.
        worker_ttl=settings.worker_maintenance_interval_s + 15,
    )


def main(
    settings: Settings,
    burst: bool = False,
    queues: Sequence[str] = QUEUE_NAMES,
    name: str | None = None,
    max_jobs: int | None = None,
) -> int:
    """Run one worker until stopped (or, with ``burst``, until the queues are empty)."""
    from dfd.errors import ConfigurationError
    from dfd.logs import configure_logging
    from dfd.tracing import setup_tracing
    from dispatcher.cleanup import sweep_orphans

    configure_logging(settings)
    setup_tracing(settings, "dfd-worker")
    if not settings.redis_url:
        raise ConfigurationError("worker: expected DFD_REDIS_URL, got none; `dfd serve` sets it")
    # Temp folders of jobs whose worker was killed on this machine.
    sweep_orphans(settings)
    worker = build_worker(settings, redis_connection(settings), queues, name)
    worker.work(
        burst=burst,
        with_scheduler=True,
        max_jobs=max_jobs,
        logging_level=settings.log_level.upper(),
    )
    return 0
