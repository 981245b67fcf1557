"""``dfd worker``: one RQ worker process serving the ``high``, ``default`` and ``low`` queues.

The worker runs rq's scheduler beside it (rq<3 needs it for retries with a delay),
forks a work horse per job (a crash in a decoder kills the horse, not the worker), and
recovers jobs whose worker died:

- the horse is killed (OOM, SIGKILL): the worker sees it at once; the job is retried
  while it has retries left, else failed with "worker died while processing";
- the whole worker is killed: its job's heartbeat stops, and after
  ``job_heartbeat_grace_s`` the next maintenance pass of any live worker (every
  ``worker_maintenance_interval_s``) finds it abandoned and retries or fails it the same
  way. No job stays ``active`` forever while a worker runs.

The same maintenance pass, under a Redis lock so only one worker of many does it,
purges expired evidence from the local store and deletes uploads no job will read
(half-written by a gateway that died, or left by a job that no longer exists).

Jobs are JSON-serialised. A plain ``rq worker`` can run them too, given
``--serializer rq.serializers.JSONSerializer --exception-handler
dispatcher.jobs.handle_job_exception --with-scheduler``, but without the heartbeat
grace, the upload sweep and the evidence purge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dfd.settings import Settings
from dfd.states import QUEUE_NAMES

log = logging.getLogger(__name__)

_PURGE_LOCK = "dfd:maintenance:purge"


def _worker_class() -> Any:
    from rq import Worker

    class DfdWorker(Worker):
        """rq's forking worker with a configurable heartbeat grace and evidence purging."""

        heartbeat_grace_s = 60
        settings: Settings | None = None

        def get_heartbeat_ttl(self, job: Any) -> int:
            # rq adds a fixed 60 s to the monitoring interval; the grace decides how fast a
            # dead worker's job is recovered, so it is a setting. The next heartbeat comes
            # one monitoring interval later whatever time the job has left (rq kills a
            # horse stuck past its timeout only at timeout + 60 s), so a shorter TTL near
            # the timeout would let another worker take the live job for abandoned.
            return self.job_monitoring_interval + self.heartbeat_grace_s

        def run_maintenance_tasks(self) -> None:
            super().run_maintenance_tasks()
            if self.settings is not None:
                purge_evidence(self.connection, self.settings)

    return DfdWorker


def sweep_uploads(connection: Any, settings: Settings, now: float | None = None) -> int:
    """Delete uploads no job will read: half-written ones from a gateway that died
    mid-upload, and finished ones whose job no longer exists.

    Each upload is named after its job id; a young file is left alone, since the gateway
    renames it just before it enqueues the job. Returns how many files were removed.
    """
    import time

    from rq.job import Job

    folder = settings.uploads_dir
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    grace_s = 2 * settings.request_timeout_s + 60
    removed = 0
    for path in folder.iterdir():
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < grace_s or not path.is_file():
            continue
        stem = path.name.split(".", 1)[0]
        if path.suffix == ".part" or not connection.exists(Job.key_for(stem)):
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


def build_worker(
    settings: Settings,
    connection: Any,
    queues: Sequence[str] = QUEUE_NAMES,
    name: str | None = None,
):
    """An rq worker wired with dfd's exception handling, heartbeats and maintenance."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from dispatcher import jobs

    jobs.configure(settings)
    worker_class = _worker_class()
    worker_class.heartbeat_grace_s = settings.job_heartbeat_grace_s
    worker_class.settings = settings
    return worker_class(
        [Queue(q, connection=connection, serializer=JSONSerializer) for q in queues],
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        exception_handlers=[jobs.handle_job_exception],
        work_horse_killed_handler=jobs.handle_horse_killed,
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
    from redis import Redis

    from dfd.errors import ConfigurationError
    from dfd.logs import configure_logging
    from dfd.tracing import setup_tracing

    configure_logging(settings)
    setup_tracing(settings, "dfd-worker")
    if not settings.redis_url:
        raise ConfigurationError("worker: expected DFD_REDIS_URL, got none; `dfd serve` sets it")
    from dispatcher.cleanup import sweep_orphans

    # Temp folders of jobs whose worker was killed on this machine.
    sweep_orphans(settings)
    connection = Redis.from_url(settings.redis_url)
    worker = build_worker(settings, connection, queues, name)
    worker.work(
        burst=burst,
        with_scheduler=True,
        max_jobs=max_jobs,
        logging_level=settings.log_level.upper(),
    )
    return 0
