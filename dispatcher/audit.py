"""The worker's audit entry: each verdict with the models and threshold it used (see
:mod:`dfd.audit`). Runs as rq's success callback, set by the gateway at enqueue."""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job

from dfd import audit
from dispatcher.jobs import settings as worker_settings

log = logging.getLogger(__name__)


def on_verdict(job: Job, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    """rq ``on_success``: record the verdict of ``job``."""
    if not isinstance(result, dict):
        return
    s = worker_settings()
    try:
        _append(connection, job, result, s)
    except Exception:  # rq would fail the job for its callback's error: the verdict stands
        log.warning("audit: could not record the verdict of job %s", job.id, exc_info=True)


def _append(connection: Any, job: Job, result: dict[str, Any], s: Any) -> None:
    audit.append(
        connection,
        "verdict",
        job_id=job.id,
        tenant=job.meta.get("tenant"),
        label=result.get("label"),
        confidence=result.get("confidence"),
        models=result.get("models"),
        threshold=s.threshold,
        inconclusive_band=s.inconclusive_band,
        weights=dict(zip(("visual", "audio", "lipsync"), s.fusion_weights(), strict=True)),
    )
