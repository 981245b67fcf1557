"""Job functions enqueued by path in the queue tests (``tests.dispatcher.jobfuncs.<name>``).

They exercise the queue mechanics (progress, retries, failures, lost workers) through a
real worker without the media pipeline. Like ``run_job`` each takes the worker's
context first, writes to ``job.meta`` what ``run_job`` writes, and reads its upload (if
it has one) as the probe stage would; the worker releases the upload after the outcome
is recorded, as it does for ``run_job``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.job import Job

from dfd.errors import CorruptMediaError, FetchTransientError, UnsupportedMediaError
from dfd.schemas import Evidence, Result
from dfd.states import Label
from dispatcher.jobs import Progress, WorkerContext, attempt_of


def _start(payload: dict[str, Any] | None = None) -> Job:
    job = get_current_job()
    assert job is not None
    job.meta["attempt"] = attempt_of(job)
    job.meta.pop("error", None)
    job.save_meta()
    path = ((payload or {}).get("source") or {}).get("path")
    if path:
        try:  # what probing does first; a missing file would be blamed on the media
            Path(path).read_bytes()
        except OSError as exc:
            raise CorruptMediaError(
                f"probe: cannot read {Path(path).name} ({exc.strerror})"
            ) from exc
    return job


def result(job_id: str, attempts: int) -> dict[str, Any]:
    """A valid result document (what run_job returns) that says which attempt made it."""
    doc = Result(
        confidence=0.5,
        label=Label.INCONCLUSIVE,
        modalities={},
        evidence=Evidence(),
        models={},
        media={"job_id": job_id, "attempts": attempts},
    )
    return doc.model_dump(mode="json")


def marker(job_id: str, data_dir: Path) -> Path:
    """The file a job writes when it starts (attempt and pid of the process running it)."""
    return data_dir / f"{job_id}.started"


def slow_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Reports progress through two stages over ~2 s, then returns a small result."""
    job = _start(payload)
    progress = Progress(job)
    for i in range(8):
        progress("decode" if i < 4 else "infer", i / 8)
        time.sleep(0.25)
    return result(payload["job_id"], job.meta["attempt"])


def flaky_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails transiently on its first attempt, then succeeds."""
    job = _start(payload)
    Progress(job)("fetch", 0.5)
    if job.meta["attempt"] == 1:
        raise FetchTransientError("fetch: expected an answer from the test server, got a reset")
    return result(payload["job_id"], job.meta["attempt"])


def always_transient(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    Progress(_start(payload))("fetch", 0.1)
    raise FetchTransientError("fetch: expected an answer from the test server, got a reset")


def input_error_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    Progress(_start(payload))("probe", 0.2)
    raise UnsupportedMediaError("probe: expected a video stream, got none")


def buggy_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    _start(payload)
    return {}["missing"]


def stuck_once_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Writes its marker, then hangs on its first attempt (to be killed); later attempts finish."""
    job = _start(payload)
    Progress(job)("infer", 0.3)
    marker(payload["job_id"], ctx.settings.data_dir).write_text(
        f"{job.meta['attempt']} {os.getpid()}"
    )
    if job.meta["attempt"] == 1:
        time.sleep(120)
    return result(payload["job_id"], job.meta["attempt"])


def go_file(job_id: str, data_dir: Path) -> Path:
    """The file that lets a `returns_when_told` job return."""
    return data_dir / f"{job_id}.go"


def returns_when_told(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Reads its upload, writes its marker, and on its first attempt returns only once
    the test creates its go file (so the test can pause Redis first: rq's write of the
    result then blocks, and the test kills the horse in that window)."""
    job = _start(payload)
    data_dir = ctx.settings.data_dir
    marker(payload["job_id"], data_dir).write_text(f"{job.meta['attempt']} {os.getpid()}")
    if job.meta["attempt"] == 1:
        deadline = time.monotonic() + 60
        while not go_file(payload["job_id"], data_dir).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return result(payload["job_id"], job.meta["attempt"])


def chaos_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Reads its upload, notes each attempt (attempt and pid, one line), works for the
    time the payload's file name says (hundredths of a second) with progress, and returns
    a result naming the upload's size (so a result belongs to its input)."""
    job = _start(payload)
    path = Path(payload["source"]["path"])
    size = len(path.read_bytes())
    with (ctx.settings.data_dir / f"{payload['job_id']}.attempts").open("a") as fh:
        fh.write(f"{job.meta['attempt']} {os.getpid()}\n")
    work_s = int(payload["source"]["filename"].split(".")[0]) / 100
    progress = Progress(job, min_interval_s=0.1)
    steps = 10
    for i in range(steps):
        progress("decode" if i < steps // 2 else "infer", i / steps)
        time.sleep(work_s / steps)
    doc = result(payload["job_id"], job.meta["attempt"])
    doc["media"]["upload_bytes"] = size
    return doc


def echo(ctx: WorkerContext, value: Any) -> Any:
    """Returns its argument (the context, as every job function, comes first)."""
    return value
