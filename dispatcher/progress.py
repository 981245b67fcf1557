"""A running job's progress as clients read it, and the check for a cancel request.

The pipeline reports ``(stage, fraction of that stage)``; :class:`Progress` turns that
into one job-wide ``progress`` that only moves forward (each stage owns a span of 0..1,
sized by its share of a typical job's time on CPU: ``benchmarks/results/stages_cpu.md``)
and writes it to ``job.meta`` with the stage, the stage's own fraction, a sequence number
(the server-sent events' id) and ``updated_at``, the time of the write, which the job
view reports as ``updatedAt``.

Writes within a stage are throttled to one per ``min_interval_s``, but a stage's start
and its end are always written, so a stage shorter than the interval still shows.

At each stage start the job's cancel flag (``dfd.jobid.cancel_key``, set by ``DELETE
/api/job/{id}``) is read: a cancelled job stops there with :class:`~dfd.errors.JobCancelledError`.
"""

from __future__ import annotations

import time

from rq.job import Job

from dfd.errors import JobCancelledError
from dfd.jobid import cancel_key
from dfd.schemas import timestamp
from dfd.states import Stage

STAGE_SPANS: dict[Stage, tuple[float, float]] = {
    Stage.FETCH: (0.0, 0.10),
    Stage.PROBE: (0.10, 0.13),
    Stage.DECODE: (0.13, 0.48),
    Stage.SPEECH: (0.48, 0.52),
    Stage.FACES: (0.52, 0.70),
    Stage.INFER: (0.70, 0.95),
    Stage.EVIDENCE: (0.95, 1.0),
    Stage.STORE: (0.95, 1.0),
}
"""The job-wide progress span of each stage: a stage at fraction f is at lo + (hi - lo) * f."""


def overall(stage: Stage, fraction: float) -> float:
    lo, hi = STAGE_SPANS[stage]
    return lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)


class Progress:
    """Writes a job's stage and progress to ``job.meta``; the pipeline calls it."""

    def __init__(self, job: Job | None, min_interval_s: float = 0.25) -> None:
        self._job = job
        self._min_interval_s = min_interval_s
        self._last_write = 0.0

    def __call__(self, stage: Stage | str, fraction: float) -> None:
        job = self._job
        if job is None:
            return
        stage = Stage(stage)
        new_stage = stage.value != job.meta.get("stage")
        if new_stage:
            self.check_cancelled()
        now = time.monotonic()
        if not new_stage and fraction < 1.0 and now - self._last_write < self._min_interval_s:
            return
        # Never backwards: a retried attempt or a stage revisited keeps the furthest point.
        value = round(max(overall(stage, fraction), float(job.meta.get("progress") or 0.0)), 4)
        job.meta["stage"] = stage.value
        job.meta["stage_progress"] = round(min(max(float(fraction), 0.0), 1.0), 4)
        job.meta["progress"] = value
        job.meta["seq"] = int(job.meta.get("seq") or 0) + 1
        job.meta["updated_at"] = timestamp()
        job.save_meta()
        self._last_write = now

    def check_cancelled(self) -> None:
        """Raise if the job was asked to stop (called at each stage boundary).

        Raises:
            JobCancelledError: ``DELETE /api/job/{id}`` was called for this job.
        """
        job = self._job
        if job is not None and job.connection.exists(cancel_key(job.id)):
            raise JobCancelledError(f"job: {job.id} was cancelled by the client")
