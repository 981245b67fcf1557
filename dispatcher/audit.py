"""The worker's audit entry: each verdict with the models and threshold it used (see
:mod:`dfd.audit`). Runs as rq's success callback, set by the gateway at enqueue."""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job

from dfd import audit
from dfd.schemas import JobOptions
from dispatcher.jobs import worker_settings

log = logging.getLogger(__name__)


def on_verdict(job: Job, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    """rq ``on_success``: record the verdict of ``job``."""
    if not isinstance(result, dict):
        return
    try:
        _append(connection, job, result, worker_settings(job))
    except Exception:  # rq would fail the job for its callback's error: the verdict stands
        log.warning("audit: could not record the verdict of job %s", job.id, exc_info=True)


def _append(connection: Any, job: Job, result: dict[str, Any], s: Any) -> None:
    payload = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    options = JobOptions.model_validate(payload["options"]) if payload.get("options") else None
    used = options.applied_to(s) if options else s  # what the verdict was made with
    audit.append(
        connection,
        "verdict",
        job_id=job.id,
        tenant=job.meta.get("tenant"),
        label=result.get("label"),
        confidence=result.get("confidence"),
        models=result.get("models"),
        threshold=used.threshold,
        inconclusive_band=used.inconclusive_band,
        weights=used.fusion_scales(),
        options=options.model_dump(mode="json", exclude_none=True) if options else None,
    )
