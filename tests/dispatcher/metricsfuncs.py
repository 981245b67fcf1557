"""Job functions of the exporter tests (``tests.dispatcher.metricsfuncs.<name>``).

Like ``tests.dispatcher.jobfuncs``, they write to ``job.meta`` what ``run_job`` writes;
``timed_job`` returns a result with the stage timings and models a real one carries.
"""

from __future__ import annotations

from typing import Any

from dfd.schemas import Evidence, Result
from dfd.states import Label
from dispatcher.jobs import WorkerContext
from tests.dispatcher.jobfuncs import _start

TIMINGS_MS = {"download": 0.0, "probe": 120.0, "decode": 1500.0, "inference": 2500.0}
MODELS = {"visual": "meso4_df@1", "audio": "aasist@2"}


def timed_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    _start()
    doc = Result(
        confidence=0.2,
        label=Label.AUTHENTIC,
        modalities={},
        evidence=Evidence(),
        models=MODELS,
        timings_ms=TIMINGS_MS,
        media={"container": "mp4", "video_codec": "h264"},
    )
    return doc.model_dump(mode="json")


def audio_only_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    _start()
    doc = Result(
        confidence=0.9,
        label=Label.MANIPULATED,
        modalities={},
        evidence=Evidence(),
        models={},
        media={"container": "wav", "video_codec": None},
    )
    return doc.model_dump(mode="json")
