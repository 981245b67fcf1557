"""Jobs put into Redis as a worker leaves them, without a worker: waiting, active,
completed with a result and real evidence files, failed with a recorded error.

The page and console tests read these through the gateway, so no Triton is needed.
"""

from __future__ import annotations

import io
import secrets
import time
from datetime import timedelta
from typing import Any

from PIL import Image, ImageDraw
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.results import Result as RQResult
from rq.utils import now

from dfd import signing
from dfd.jobid import new_job_id
from dfd.schemas import (
    Evidence,
    FaceTrack,
    Ingredient,
    JobPayload,
    JobSource,
    KnownFakeMatch,
    MetadataFinding,
    ModalityResult,
    Provenance,
    ProvenanceAction,
    Result,
    Signer,
    TimelinePoint,
)
from dfd.settings import Settings
from dfd.states import Label
from gateway.queue import SERIALIZER, JobQueue

SECONDS = 6


def enqueue(
    redis: Redis, settings: Settings, priority: str = "default", url: str | None = None
) -> Job:
    payload = JobPayload(
        job_id=new_job_id(),
        source=JobSource(kind="url", url=url or "http://93.184.216.34/clip.mp4"),
        priority=priority,  # type: ignore[arg-type]
    )
    return JobQueue(redis, None, settings).enqueue(payload)  # type: ignore[arg-type]


def queue_of(job: Job) -> Queue:
    return Queue(job.origin, connection=job.connection, serializer=SERIALIZER)


def start(job: Job, stage: str, progress: float) -> None:
    """As the worker reports progress (``dispatcher.progress``): each write numbered."""
    job.meta.update({"stage": stage, "progress": progress, "attempt": 1, "seq": seq(job) + 1})
    job.save_meta()
    job.set_status(JobStatus.STARTED)


def seq(job: Job) -> int:
    """The job's last progress write number (the events stream's event id)."""
    return int(job.meta.get("seq") or 0)


def _picture(seed: int, heat: bool) -> bytes:
    image = Image.new("RGB", (160, 120), (40 + seed * 30, 90, 140))
    draw = ImageDraw.Draw(image)
    draw.rectangle((50, 20, 110, 95), outline=(0, 255, 0), width=3)
    if heat:
        draw.ellipse((60, 35, 100, 80), fill=(255, 60, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _face(seed: int) -> bytes:
    """A square face crop, as the worker keeps one per face track."""
    image = Image.new("RGB", (256, 256), (200 - seed * 60, 150, 120 + seed * 60))
    ImageDraw.Draw(image).ellipse((60, 40, 196, 220), fill=(230, 190, 160))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _chart() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 100), (250, 250, 250)).save(out, "PNG")
    return out.getvalue()


def _put(settings: Settings, job_id: str, name: str, data: bytes, base_url: str) -> str:
    key = f"{job_id}/{secrets.token_hex(10)}-{name}"
    path = signing.evidence_path(settings, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    exp = int(time.time()) + settings.evidence_url_ttl_s
    return signing.signed_url(base_url, key, exp, signing.load_secret(settings))


def result_with_evidence(settings: Settings, job_id: str, base_url: str) -> dict[str, Any]:
    """A manipulated verdict with two suspicious frames, their heatmaps and a timeline."""
    frames = (75, 125)  # 25 fps: seconds 3 and 5
    thumbs = [
        _put(settings, job_id, f"thumb_{i:02d}_f{f}.jpg", _picture(i, False), base_url)
        for i, f in enumerate(frames)
    ]
    heats = [
        _put(settings, job_id, f"heatmap_{i:02d}_f{f}.jpg", _picture(i, True), base_url)
        for i, f in enumerate(frames)
    ]
    timeline = [
        TimelinePoint(
            frame=25 * s,
            time_s=float(s),
            score=[0.2, 0.3, 0.5, 0.9, 0.6, 0.95][s],
            visual=[0.1, 0.2, 0.6, 0.92, 0.5, 0.97][s],
            audio=None,
            lipsync=None,
        )
        for s in range(SECONDS)
    ]
    return Result(
        confidence=0.87,
        label=Label.MANIPULATED,
        modalities={
            "visual": ModalityResult(score=0.91, weight=1.0, used=True),
            "audio": ModalityResult(score=None, weight=0.0, used=False),
            "lipsync": ModalityResult(score=None, weight=0.0, used=False),
        },
        evidence=Evidence(
            thumbnails=thumbs,
            heatmaps=heats,
            timeline=timeline,
            timeline_chart=_put(settings, job_id, "timeline.png", _chart(), base_url),
            expires_in_s=settings.evidence_url_ttl_s,
        ),
        models={"visual": "meso4_df@1", "face": "yunet_n@1"},
        timings_ms={"download": 12.0, "decode": 340.5, "inference": 1200.0},
        media={
            "duration_s": 6.0,
            "width": 360,
            "height": 288,
            "fps": 25.0,
            "video_codec": "mpeg1video",
            "audio_codec": None,
            "frames_sampled": 6,
            "faces": 4,
            "audio_windows": 0,
            "lipsync_clips": 0,
        },
    ).model_dump(mode="json")


def result_with_facts(settings: Settings, job_id: str, base_url: str) -> dict[str, Any]:
    """``result_with_evidence`` plus what is read from the file and the bank: Content
    Credentials signed by an AI generator, tell-tale tags, a known-fake match, three face
    tracks (the second one shown; the first two pictured, the third past the bound) and a spectrogram with the voice's scores."""
    doc = result_with_evidence(settings, job_id, base_url)
    doc["evidence"]["face_track"] = 1
    doc["evidence"]["tracks"] = [
        FaceTrack(
            track=0,
            frames=4,
            first_s=0.0,
            last_s=3.0,
            score=0.12,
            thumbnail=_put(settings, job_id, "track_00_f50.jpg", _face(0), base_url),
            thumbnail_s=2.0,
        ).model_dump(),
        FaceTrack(
            track=1,
            frames=6,
            first_s=0.0,
            last_s=5.0,
            score=0.91,
            thumbnail=_put(settings, job_id, "track_01_f125.jpg", _face(1), base_url),
            thumbnail_s=5.0,
        ).model_dump(),
        # past the bound of pictured tracks (as with DFD_MAX_FACES_PER_FRAME=2): no picture
        FaceTrack(track=2, frames=1, first_s=4.0, last_s=4.0, score=0.05).model_dump(),
    ]
    doc["evidence"]["spectrogram"] = _put(
        settings, job_id, "spectrogram.png", _picture(3, True), base_url
    )
    for point, audio in zip(
        doc["evidence"]["timeline"], [0.1, 0.2, 0.3, 0.8, 0.4, 0.7], strict=True
    ):
        point["audio"] = audio
    doc["provenance"] = Provenance(
        present=True,
        state="valid",
        signer=Signer(
            issuer="C2PA Test Signing Cert", common_name="gen.example", time="2026-11-30T10:00:00Z"
        ),
        claim_generator="VideoGen/2.1 c2pa-rs/0.36",
        actions=[
            ProvenanceAction(
                action="c2pa.created",
                software_agent="VideoGen 2.1",
                digital_source_type="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
            ),
            ProvenanceAction(action="c2pa.converted", software_agent="ffmpeg"),
        ],
        ai_generated=True,
        ingredients=[Ingredient(title="prompt.png", format="image/png", relationship="inputTo")],
    ).model_dump(mode="json")
    doc["metadata"] = [
        MetadataFinding(
            key="format.encoder",
            value="Lavf61.7.100",
            kind="tool",
            explanation="the program that wrote the container: FFmpeg's libavformat muxed this file",
        ).model_dump(mode="json")
    ]
    doc["matches"] = [
        KnownFakeMatch(
            entry_id="0123456789abcdef",
            label="senator speech swap",
            note="debunked 2026-11-02",
            distance=12,
            matched_share=0.8,
            entry_share=0.6,
        ).model_dump(mode="json")
    ]
    return doc


def finish(job: Job, result: dict[str, Any], took_s: float = 2.0) -> None:
    """As a worker leaves a job it finished: off its queue, in the finished registry."""
    queue_of(job).remove(job)
    job.ended_at = now()
    job.started_at = job.ended_at - timedelta(seconds=took_s)
    job.enqueued_at = job.created_at = job.started_at - timedelta(seconds=1)
    job.save()
    job.set_status(JobStatus.FINISHED)
    RQResult.create(job, RQResult.Type.SUCCESSFUL, ttl=600, return_value=result)
    FinishedJobRegistry(job.origin, connection=job.connection).add(job, 600)


def fail(
    job: Job, error_type: str = "fetch-failed", message: str = "fetch: expected 200, got 404"
) -> None:
    """As rq leaves a job that used up its retries: off its queue, in the failed registry."""
    job.meta["error"] = {"type": error_type, "message": message, "stage": "fetch"}
    job.save_meta()
    queue_of(job).remove(job)
    job.ended_at = now()
    job.save()
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(job.origin, connection=job.connection).add(job, 600, exc_string=message)
    RQResult.create_failure(job, ttl=600, exc_string=message)
