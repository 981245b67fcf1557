"""Prometheus metrics of the job system, read from Redis by one exporter (``dfd exporter``).

Why an exporter and not a ``/metrics`` per worker: rq forks a work horse per job, so a
worker's own counters would live in short-lived processes (prometheus-client's
multiprocess mode per pod, or a push gateway); and most of what an operator asks about
(queue depth, the oldest waiting job, which workers are busy) is not any one worker's to
say. rq already keeps all of it in Redis: the queues, the registries, the workers and,
for every ended job, its timestamps, its ``meta`` (attempt, error) and its result
(``timings_ms``, ``models``). One exporter reads them at each scrape; the workers are
untouched except for one line in each failure hook (:func:`record_attempt_failure`),
because a retried attempt's error is overwritten by the next attempt and would
otherwise never be seen.

What is read, at each scrape:

- gauges, as they are now: queue depth and age of the oldest waiting job per priority,
  jobs per registry and priority, workers by state, Redis and Triton reachable;
- histograms and counters over the jobs that ended since the exporter started: each job
  of rq's finished and failed registries is read once (the registries are sorted sets
  scored by expiry, so a watermark per registry finds the new ones); the jobs already
  there when the exporter starts are not counted, so a restart does not count them
  twice;
- failed attempts by error type and stage (retried ones included): a Redis hash the
  failure hooks increment, so it is shared by all workers and survives an exporter
  restart;
- restarts by ``dfd serve``'s supervisor, by process kind (``worker``, ``gateway``,
  ``redis``, ``triton``, ``exporter``): a Redis hash :class:`RestartCounter` increments
  from ``dfd serve`` (the supervisor serves no ``/metrics`` of its own, and its restarts
  outlive the exporter's);
- model rollouts under way (:mod:`dispatcher.rollout`): the plan, and what each version
  scored, with the drift between them on the jobs both scored.

Run one exporter per Redis: two would report the same jobs twice.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from dfd.schemas import JobError
from dfd.states import QUEUE_NAMES

log = logging.getLogger(__name__)

ATTEMPT_FAILURES_KEY = "dfd:metrics:attempt_failures"
"""Redis hash: ``"<type>|<stage>"`` -> failed attempts (the failure hooks add to it)."""

SUPERVISOR_RESTARTS_KEY = "dfd:metrics:supervisor_restarts"
"""Redis hash: process kind -> restarts by ``dfd serve``'s supervisor (:class:`RestartCounter`)."""

# The registries an operator watches (started: running now).
REGISTRIES = ("started", "scheduled", "deferred", "finished", "failed", "canceled")


def registry_key(registry: str, queue: str) -> str:
    """The Redis key of one of rq's registries of ``queue`` (rq:wip:<queue> for started...)."""
    from rq import registry as rq_registry

    classes: dict[str, type[rq_registry.BaseRegistry]] = {
        "started": rq_registry.StartedJobRegistry,
        "scheduled": rq_registry.ScheduledJobRegistry,
        "deferred": rq_registry.DeferredJobRegistry,
        "finished": rq_registry.FinishedJobRegistry,
        "failed": rq_registry.FailedJobRegistry,
        "canceled": rq_registry.CanceledJobRegistry,
    }
    return classes[registry].key_template.format(queue)


def queue_key(queue: str) -> str:
    from rq import Queue

    return f"{Queue.redis_queue_namespace_prefix}{queue}"


# A job takes seconds to many minutes: the buckets span both.
DURATION_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STAGE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

# Most ended jobs read in one scrape; the rest wait for the next.
_BATCH = 2000


def record_attempt_failure(connection: Any, error: JobError) -> None:
    """Count one failed attempt of a job (retried or final); called by the failure hooks.

    Never raises: a metric must not change how a failure is handled.
    """
    stage = error.stage.value if error.stage else "none"
    try:
        connection.hincrby(ATTEMPT_FAILURES_KEY, f"{error.type}|{stage}", 1)
    except RedisError:
        log.warning("could not count a failed attempt", extra={"error_type": error.type})


def process_kind(name: str) -> str:
    """The kind of a supervised child: ``worker-2`` -> ``worker``, ``redis`` -> ``redis``."""
    return re.sub(r"-\d+$", "", name)


class RestartCounter:
    """Counts ``dfd serve``'s restarts in Redis by process kind, for the exporter.

    Called with a child's name after each restart. A count Redis does not take (Redis
    is down; often it is Redis that just crashed) is kept and written with the next
    restart; the restarted Redis counts itself, so its own restart carries the counts of
    its outage. Never raises: counting must not change what the supervisor does.

    Args:
        connection: a ``redis.Redis`` client (short timeouts: it runs in the
            supervisor's loop).
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.pending: dict[str, int] = {}

    def __call__(self, name: str) -> None:
        kind = process_kind(name)
        self.pending[kind] = self.pending.get(kind, 0) + 1
        self.flush()

    def flush(self) -> bool:
        """Write the pending counts (all or none); whether Redis took them."""
        if not self.pending:
            return True
        try:
            pipe = self.connection.pipeline(transaction=True)
            for kind, count in self.pending.items():
                pipe.hincrby(SUPERVISOR_RESTARTS_KEY, kind, count)
            pipe.execute()
        except RedisError as exc:
            log.warning(
                "could not count a restart; kept for the next one",
                extra={"detail": f"{type(exc).__name__}: {exc}", "pending": dict(self.pending)},
            )
            return False
        self.pending.clear()
        return True


@dataclass
class _Watermark:
    """How far one registry has been read: the highest score seen and the ids at it."""

    score: float = -math.inf
    ids: set[str] = field(default_factory=set)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # rq keeps naive UTC


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    start, end = _as_utc(start), _as_utc(end)
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def job_kind(meta: dict[str, Any], result: dict[str, Any] | None) -> str:
    """``upload``, ``url`` or ``audio-only`` (a result whose media has no video stream).

    Failed jobs have no result, so they are counted by their source.
    """
    media = (result or {}).get("media") or {}
    if "video_codec" in media and not media["video_codec"]:
        return "audio-only"
    kind = meta.get("kind")
    return kind if kind in ("upload", "url") else "unknown"


class JobSystemCollector(Collector):
    """Reads rq's state from Redis at each scrape; see the module docstring.

    Args:
        connection: a ``redis.Redis`` client.
        queues: the rq queue names (dfd's priorities).
        triton_ready: returns whether Triton is ready; None when the exporter has no
            Triton to ask (the metric is then left out).
        clock: seconds since the epoch (tests move it).
    """

    def __init__(
        self,
        connection: Any,
        queues: Iterable[str] = QUEUE_NAMES,
        triton_ready: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.queues = tuple(queues)
        self.triton_ready = triton_ready
        self.clock = clock
        self._lock = threading.Lock()
        self._marks: dict[str, _Watermark] = {}
        # Not registered anywhere: collect() yields them after bringing them up to date.
        labels = ["outcome", "kind"]
        self.duration = Histogram(
            "dfd_job_duration_seconds",
            "Time a job's last attempt ran in a worker, by outcome and kind.",
            labels,
            buckets=DURATION_BUCKETS_S,
            registry=None,
        )
        self.latency = Histogram(
            "dfd_job_latency_seconds",
            "Time from a job's submission to its end (queueing and retries included).",
            labels,
            buckets=DURATION_BUCKETS_S,
            registry=None,
        )
        self.stage = Histogram(
            "dfd_stage_duration_seconds",
            "Time of one pipeline stage of a completed job (its result's timings_ms).",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=None,
        )
        self.failures = Counter(
            "dfd_job_failures",
            "Jobs that failed for good, by error type and the stage it happened in.",
            ["type", "stage"],
            registry=None,
        )
        self.retries = Counter(
            "dfd_job_retries",
            "Retries the ended jobs took (attempts beyond the first), by outcome.",
            ["outcome"],
            registry=None,
        )
        self.models = Counter(
            "dfd_job_models",
            "Completed jobs by model role and the model version that served it.",
            ["role", "model"],
            registry=None,
        )
        self.redis_errors = Counter(
            "dfd_redis_connection_errors",
            "Scrapes at which the exporter could not read Redis.",
            registry=None,
        )
        self.redis_errors.inc(0)

    # -- the scrape ----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily(
                "dfd_redis_up", "Whether the exporter could read Redis (1 or 0)."
            )
            try:
                gauges = list(self._gauges())
                self._read_ended_jobs()
                attempts = self._attempt_failures()
                restarts = self._supervisor_restarts()
                rollouts = list(self._rollouts())
            except RedisError as exc:
                self.redis_errors.inc()
                log.warning(
                    "could not read Redis", extra={"detail": f"{type(exc).__name__}: {exc}"}
                )
                up.add_metric([], 0)
                gauges, attempts, restarts, rollouts = [], None, None, []
            else:
                up.add_metric([], 1)
            yield up
            yield from gauges
            if attempts is not None:
                yield attempts
            if restarts is not None:
                yield restarts
            yield from rollouts
            if self.triton_ready is not None:
                ready = GaugeMetricFamily(
                    "dfd_triton_ready", "Whether Triton answers ready (1 or 0)."
                )
                ready.add_metric([], 1 if self.triton_ready() else 0)
                yield ready
            for metric in (
                self.duration,
                self.latency,
                self.stage,
                self.failures,
                self.retries,
                self.models,
                self.redis_errors,
            ):
                yield from metric.collect()

    def _gauges(self) -> Iterator[Metric]:
        from rq import Worker
        from rq.job import Job
        from rq.utils import utcparse

        now = self.clock()
        depth = GaugeMetricFamily(
            "dfd_queue_depth", "Jobs waiting in a queue, by priority.", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "dfd_queue_oldest_job_age_seconds",
            "Age of the job waiting longest in a queue (0 when empty), by priority.",
            labels=["priority"],
        )
        registries = GaugeMetricFamily(
            "dfd_jobs_in_registry",
            "Jobs in each of rq's registries (started = running now), by priority.",
            labels=["priority", "registry"],
        )
        pipe = self.connection.pipeline(transaction=False)
        for name in self.queues:
            pipe.llen(queue_key(name))
            pipe.lindex(queue_key(name), 0)  # rq pops from the left: the oldest
            for registry in REGISTRIES:
                pipe.zcard(registry_key(registry, name))
        replies = iter(pipe.execute())
        heads: dict[str, str] = {}
        for name in self.queues:
            depth.add_metric([name], next(replies))
            head = next(replies)
            if head is not None:
                heads[name] = head.decode() if isinstance(head, bytes) else head
            for registry in REGISTRIES:
                registries.add_metric([name, registry], next(replies))
        # Read, not fetched through rq: Queue.fetch_job removes an id whose job is gone,
        # and an exporter changes nothing.
        pipe = self.connection.pipeline(transaction=False)
        for name in heads:
            pipe.hget(Job.key_for(heads[name]), "enqueued_at")
        stamps = dict(zip(heads, pipe.execute(), strict=True))
        for name in self.queues:
            age = 0.0
            if stamps.get(name):
                enqueued = _as_utc(utcparse(stamps[name].decode()))
                if enqueued is not None:
                    age = max(now - enqueued.timestamp(), 0.0)
            oldest.add_metric([name], age)
        workers = GaugeMetricFamily(
            "dfd_workers", "Live rq workers, by state (busy, idle, suspended...).", labels=["state"]
        )
        counts = {"busy": 0, "idle": 0}
        for worker in Worker.all(connection=self.connection):
            raw = worker.get_state()
            state = str(getattr(raw, "value", raw))
            counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            workers.add_metric([state], count)
        yield from (depth, oldest, registries, workers)

    def _attempt_failures(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "dfd_job_attempt_failures",
            "Failed attempts of jobs (retried ones included), by error type and stage.",
            labels=["type", "stage"],
        )
        for key, value in sorted(self.connection.hgetall(ATTEMPT_FAILURES_KEY).items()):
            error_type, _, stage = key.decode().partition("|")
            family.add_metric([error_type, stage], int(value))
        return family

    def _supervisor_restarts(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        # Named even while empty (no dfd serve, as under Kubernetes, where the kubelet
        # restarts): a scrape always says what the exporter can report.
        family = CounterMetricFamily(
            "dfd_supervisor_restarts",
            "Children restarted by dfd serve's supervisor, by process kind.",
            labels=["process"],
        )
        for key, value in sorted(self.connection.hgetall(SUPERVISOR_RESTARTS_KEY).items()):
            family.add_metric([key.decode()], int(value))
        return family

    def _rollouts(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        from dispatcher import rollout

        info = GaugeMetricFamily(
            "dfd_rollout_share",
            "Share of jobs whose fused score is the candidate's, per rollout under way "
            "(0 for a shadow: scored beside, never fused).",
            labels=["role", "mode", "current", "candidate"],
        )
        scores = HistogramMetricFamily(
            "dfd_rollout_scores",
            "Video-level scores of each version in a rollout, since it started.",
            labels=["role", "version", "arm"],
        )
        flagged = CounterMetricFamily(
            "dfd_rollout_flagged",
            f"Jobs a version scored at or above {rollout.FLAG_THRESHOLD}, in a rollout.",
            labels=["role", "version", "arm"],
        )
        pairs = CounterMetricFamily(
            "dfd_rollout_shadow_pairs",
            "Jobs scored by both versions of a shadow rollout.",
            labels=["role"],
        )
        diff = CounterMetricFamily(
            "dfd_rollout_shadow_abs_diff",
            "Sum over the shadow pairs of |candidate score - current score| (divide by "
            "the pairs: the drift).",
            labels=["role"],
        )
        disagree = CounterMetricFamily(
            "dfd_rollout_shadow_disagreements",
            "Shadow pairs where one version flags the video and the other does not.",
            labels=["role"],
        )
        drift = GaugeMetricFamily(
            "dfd_rollout_score_drift",
            "Mean |candidate - current| score over the shadow pairs so far.",
            labels=["role"],
        )
        for role, plan in sorted(rollout.plans(self.connection).items()):
            share = plan.share if plan.mode is rollout.Mode.CANARY else 0.0
            info.add_metric([role, plan.mode.value, str(plan.current), str(plan.candidate)], share)
            seen = rollout.comparison(self.connection, plan)
            for arm, version in (("current", seen.current), ("candidate", seen.candidate)):
                labels = [role, str(version.version), arm]
                cumulative, running = [], 0
                for le, count in zip(rollout.SCORE_BUCKETS, version.buckets, strict=True):
                    running += count
                    cumulative.append((str(le), running))
                cumulative.append(("+Inf", running))  # every score is at most 1.0
                scores.add_metric(labels, cumulative, version.total)
                flagged.add_metric(labels, version.flagged)
            if plan.mode is rollout.Mode.SHADOW:
                pairs.add_metric([role], seen.pairs)
                diff.add_metric([role], seen.abs_diff_total)
                disagree.add_metric([role], seen.disagreements)
                if seen.drift is not None:
                    drift.add_metric([role], seen.drift)
        yield from (info, scores, flagged, pairs, diff, disagree, drift)

    # -- ended jobs, each read once -----------------------------------------------

    def _new_ids(self, key: str) -> list[str]:
        """Ids added to the registry ``key`` since the last read (none at the first)."""
        mark = self._marks.get(key)
        if mark is None:
            top = self.connection.zrevrange(key, 0, 0, withscores=True)
            mark = self._marks[key] = _Watermark()
            if top:
                mark.score = top[0][1]
                mark.ids = {
                    m.decode() for m in self.connection.zrangebyscore(key, mark.score, mark.score)
                }
            return []
        low = "-inf" if mark.score == -math.inf else mark.score
        rows = self.connection.zrangebyscore(key, low, "+inf", start=0, num=_BATCH, withscores=True)
        new = []
        for member, score in rows:
            job_id = member.decode()
            if score == mark.score and job_id in mark.ids:
                continue
            new.append(job_id)
            if score > mark.score:
                mark.score, mark.ids = score, set()
            mark.ids.add(job_id)
        return new

    def _read_ended_jobs(self) -> None:
        for name in self.queues:
            for outcome, registry in (("completed", "finished"), ("failed", "failed")):
                ids = self._new_ids(registry_key(registry, name))
                if not ids:
                    continue
                for job in self._fetch(ids):
                    self._observe(job, outcome)

    def _fetch(self, ids: list[str]) -> list[Any]:
        """The jobs of ``ids`` that still exist and decode; one by one if a batch fails."""
        from rq.job import Job
        from rq.serializers import JSONSerializer

        def fetch(batch: list[str]) -> list[Any]:
            found = Job.fetch_many(batch, connection=self.connection, serializer=JSONSerializer)
            return [job for job in found if job is not None]

        try:
            return fetch(ids)
        except RedisError:
            raise
        except Exception:  # a job another program wrote (not dfd's JSON): skip only it
            jobs = []
            for job_id in ids:
                try:
                    jobs.extend(fetch([job_id]))
                except RedisError:
                    raise
                except Exception:
                    log.warning("skipped an undecodable job", extra={"job_id": job_id})
            return jobs

    def _observe(self, job: Any, outcome: str) -> None:
        meta = job.meta or {}
        result: dict[str, Any] | None = None
        if outcome == "completed":
            try:
                value = job.return_value()
            except Exception:  # an undecodable result counts as a job without one
                value = None
            result = value if isinstance(value, dict) else None
        kind = job_kind(meta, result)
        ran = _seconds(job.started_at, job.ended_at)
        if ran is not None:
            self.duration.labels(outcome, kind).observe(ran)
        waited = _seconds(job.created_at, job.ended_at)
        if waited is not None:
            self.latency.labels(outcome, kind).observe(waited)
        attempt = int(meta.get("attempt") or 1)
        self.retries.labels(outcome).inc(max(attempt - 1, 0))
        if outcome == "failed":
            error = meta.get("error") or {}
            self.failures.labels(error.get("type") or "unknown", error.get("stage") or "none").inc()
            return
        if result is None:
            return
        for stage, ms in (result.get("timings_ms") or {}).items():
            self.stage.labels(stage).observe(float(ms) / 1000.0)
        for role, model in (result.get("models") or {}).items():
            self.models.labels(role, model).inc()


def exporter_registry(collector: JobSystemCollector) -> CollectorRegistry:
    """A registry holding only ``collector`` (no process metrics of the exporter itself)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
