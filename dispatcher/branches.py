"""The middle of the pipeline (decode -> speech -> faces -> inference) as two branches that
run at once (``settings.overlap_stages``, issue 17):

    audio branch (a thread):  audio decode -> speech (VAD) -> audio detectors' requests
    video branch (the caller): frame decode -> hashes -> faces -> visual requests
                               -> (speech known) lip-sync clips -> their requests

Decoding (PyAV) and Triton's gRPC calls release the GIL, and Triton is a process of its
own, so the audio track is decoded and its speech found and scored while the frames are
decoded and their faces detected; the face crops are scored as soon as they are cut,
before the lip-sync clips (which need the speech) exist.

The result is that of the sequential stages: the same items, cut by the same functions
(``dispatcher.infer.build_inputs``), sent in the same batches (per input group at most
``max_items`` rows, the slices the ensemble's requests would carry), to the models the
ensemble composes, at the versions it pins. The models are called directly rather than
through ``deepfake_ensemble``: a request there must carry every input group (an absent one
is a zero row, scored and dropped), which here would cost an AASIST window per video
request and a face and a lip-sync clip per audio request.

Failures keep their stage's name. When one branch fails the other stops at its next
step (a progress report or a request) and the first failure in the sequential order of
stages is raised. Progress reports come from both threads, one at a time; the inference
stage's own progress is the pipeline's (its requests here run inside decode and faces).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dfd.detectors import LooksAt
from dfd.ensemble import ALL_INPUTS, EVIDENCE_OUTPUTS, GROUPS, Ensemble, for_settings
from dfd.errors import DfdError, JobCancelledError, UpstreamUnavailableError
from dfd.known_fakes import MediaHashes
from dfd.schemas import KnownFakeMatch
from dfd.settings import Settings
from dfd.states import Stage
from dispatcher.decode import decode
from dispatcher.decode_pyav import read_audio
from dispatcher.faces import FaceResult, face_crops, with_clips
from dispatcher.infer import (
    InferenceOutput,
    VideoItems,
    build_inputs,
    collect,
    evidence_map,
    max_items,
    speech_windows,
)
from dispatcher.known_fakes import find_matches, hash_frames
from dispatcher.media import DecodedMedia
from dispatcher.speech import NO_SPEECH, Speech, find_speech
from dispatcher.triton_client import InferClient

if TYPE_CHECKING:
    from dispatcher.known_fakes import RedisBank

# The order the sequential pipeline runs its stages in: of two failures, the one it would
# have met first is raised.
_ORDER = (Stage.DECODE, Stage.SPEECH, Stage.FACES, Stage.INFER)


class Stages(Protocol):
    """What the branches need of the pipeline's stage keeper (``pipeline._Stages``)."""

    timings_ms: dict[str, float]

    def report(self, stage: Stage, fraction: float) -> None: ...

    def run(self, stage: Stage) -> AbstractContextManager[None]: ...

    def timed(self, key: str, stage: Stage) -> AbstractContextManager[None]: ...

    def failures(self, stage: Stage) -> AbstractContextManager[None]: ...


class _Aborted(DfdError):
    """The other branch failed: this one stops (never the error the job reports)."""


@dataclass(frozen=True)
class Analysed:
    """What the sequential stages decode -> speech -> faces -> infer would have made."""

    media: DecodedMedia
    hashes: MediaHashes
    matches: list[KnownFakeMatch] | None
    speech: Speech
    faces: FaceResult
    inputs: VideoItems
    out: InferenceOutput


@dataclass
class _Scored:
    """One branch's answers: per detector its score parts, per evidence output its map
    parts, in item order."""

    parts: dict[str, list[np.ndarray]]
    heat: dict[str, list[np.ndarray]]
    requests: int = 0


class _Shared:
    """What both branches see: the stop flag, the deadline and the added-up timings."""

    def __init__(self, stages: Stages, deadline: float) -> None:
        self.stages = stages
        self.deadline = deadline
        self.abort = threading.Event()
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.abort.is_set():
            raise _Aborted("stopped: the other branch failed")

    def reporter(self, stage: Stage) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            self.check()
            self.stages.report(stage, fraction)

        return report

    @contextmanager
    def adding(self, key: str, stage: Stage) -> Iterator[None]:
        """Time a step under ``key``, added to what the other branch spent there."""
        started = time.perf_counter()
        try:
            with self.stages.failures(stage):
                yield
        finally:
            ms = (time.perf_counter() - started) * 1000
            with self._lock:
                total = self.stages.timings_ms.get(key, 0.0) + ms
                self.stages.timings_ms[key] = round(total, 1)


def score_group(
    arrays: dict[str, np.ndarray],
    group: LooksAt,
    graph: Ensemble,
    client: InferClient,
    per_request: int,
    shared: _Shared,
) -> _Scored:
    """The items of one input group through each step that looks at it, ``per_request``
    rows a request, as the ensemble's requests slice them."""
    steps = [s for s in graph.steps if s.detector.looks_at is group]
    scored = _Scored({s.detector.name: [] for s in steps}, {})
    count = len(arrays[graph.group_inputs(group)[0].name]) if steps else 0
    for lo in range(0, count, per_request):
        for step in steps:
            shared.check()
            if time.monotonic() > shared.deadline:
                raise UpstreamUnavailableError(
                    f"inference: {step.model.name} did not answer within the job's time "
                    f"({scored.requests} requests done)"
                )
            req = {
                mine: np.ascontiguousarray(
                    arrays[theirs][lo : lo + per_request], dtype=ALL_INPUTS[theirs].numpy_dtype
                )
                for mine, theirs in step.inputs.items()
            }
            out = client.infer(step.model.name, req, list(step.outputs), version=step.model.version)
            scored.requests += 1
            scored.parts[step.detector.name].append(np.asarray(out["score"]).reshape(-1))
            for mine, theirs in step.outputs.items():
                if theirs in EVIDENCE_OUTPUTS:
                    scored.heat.setdefault(theirs, []).append(evidence_map(out[mine], theirs))
    return scored


def overlapped(
    path: Path,
    info: Any,
    settings: Settings,
    triton: InferClient,
    stages: Stages,
    deadline: float,
    bank: RedisBank | None = None,
    job_id: str = "",
) -> Analysed:
    """Decode, find speech and faces, and score a video (``info.has_video``) in two branches.

    Args:
        path: the probed file.
        info: its probe (``duration_s``, ``kind``).
        settings: the job's settings (sampling already bounded).
        triton: reaches Triton; called from both threads.
        stages: times the stages, reports progress, names failures.
        deadline: ``time.monotonic()`` past which no request is sent (the job's time).
        bank: the known fakes, as in ``analyze``.
        job_id: the job whose hashes ``bank`` keeps.
    """
    graph = for_settings(settings)
    per_request = max_items(settings, graph)
    shared = _Shared(stages, deadline)
    speech_ready: Future[tuple[np.ndarray | None, Speech]] = Future()
    started = time.perf_counter()
    errors: list[BaseException] = []
    video: tuple[
        DecodedMedia, MediaHashes, list[KnownFakeMatch] | None, FaceResult, VideoItems, _Scored
    ]
    with ThreadPoolExecutor(1, thread_name_prefix="dfd-audio") as pool:
        # the job's context (its trace span, its log fields) goes with the thread
        audio_branch = pool.submit(
            contextvars.copy_context().run,
            _audio_branch,
            path,
            settings,
            triton,
            graph,
            per_request,
            shared,
            speech_ready,
        )
        try:
            video = _video_branch(
                path, info, settings, triton, graph, per_request, shared, speech_ready, bank, job_id
            )
        except BaseException as exc:  # noqa: BLE001 - raised below, after the audio branch
            shared.abort.set()
            errors.append(exc)
        try:
            heard = audio_branch.result()
        except BaseException as exc:  # noqa: BLE001
            shared.abort.set()
            errors.append(exc)
    stages.timings_ms["branches"] = round((time.perf_counter() - started) * 1000, 1)
    if errors:
        raise _first(errors)
    media, hashes, matches, faces, inputs, seen = video
    audio, speech = speech_ready.result()
    total = _Scored({s.detector.name: [] for s in graph.steps}, {})
    for branch in (seen, heard):  # the video's items first, as the sequential requests
        _add(total, branch)
    out = collect(inputs, graph, total.parts, total.heat, total.requests)
    return Analysed(media, hashes, matches, speech, faces, inputs, out)


def _first(errors: list[BaseException]) -> BaseException:
    """The failure to report: a cancellation, else the one of the earliest stage (a
    branch stopped because of the other's failure is never it)."""
    real = [e for e in errors if not isinstance(e, _Aborted)] or errors
    for e in real:
        if isinstance(e, JobCancelledError) or not isinstance(e, Exception):
            return e

    def rank(e: BaseException) -> int:
        stage = getattr(e, "stage", None)
        return _ORDER.index(stage) if stage in _ORDER else len(_ORDER)

    return min(real, key=rank)


def _audio_branch(
    path: Path,
    settings: Settings,
    triton: InferClient,
    graph: Ensemble,
    per_request: int,
    shared: _Shared,
    speech_ready: Future[tuple[np.ndarray | None, Speech]],
) -> _Scored:
    """Audio track -> speech -> the speech windows' scores; publishes the track and its
    speech in ``speech_ready`` for the lip-sync clips as soon as they are known."""
    try:
        with shared.stages.timed("decode_audio", Stage.DECODE):
            audio = read_audio(path)
        # no check for a stop here: the speech stage comes before any failure of the
        # video branch's stages (faces, inference) in the sequential order
        with shared.stages.run(Stage.SPEECH):
            speech = find_speech(audio, triton)
        speech_ready.set_result((audio, speech))
    except BaseException as exc:
        speech_ready.set_exception(_Aborted(f"no speech: {exc}"))
        raise
    with shared.adding("inference", Stage.INFER):
        wins, _ = speech_windows(audio, speech, settings)
        arrays = {GROUPS[LooksAt.SPEECH_WINDOW][0].name: wins}
        return score_group(arrays, LooksAt.SPEECH_WINDOW, graph, triton, per_request, shared)


def _video_branch(
    path: Path,
    info: Any,
    settings: Settings,
    triton: InferClient,
    graph: Ensemble,
    per_request: int,
    shared: _Shared,
    speech_ready: Future[tuple[np.ndarray | None, Speech]],
    bank: RedisBank | None,
    job_id: str,
) -> tuple[DecodedMedia, MediaHashes, list[KnownFakeMatch] | None, FaceResult, VideoItems, _Scored]:
    """Frames -> hashes -> faces -> visual scores -> (with the speech) lip-sync clips and
    the scores of every other group."""
    stages = shared.stages
    with stages.run(Stage.DECODE):
        frames_only = decode(
            path,
            settings,
            info.duration_s,
            animation=info.kind == "webp",
            progress=shared.reporter(Stage.DECODE),
            with_audio=False,
        )
    matches = None
    with stages.timed("hashes", Stage.DECODE):
        hashes = hash_frames(frames_only.frames, settings)
        if bank is not None:
            matches = find_matches(hashes, bank.entries(), settings)
            bank.keep(job_id, hashes)
    shared.check()
    with stages.run(Stage.FACES):
        found = face_crops(frames_only, triton, settings, progress=shared.reporter(Stage.FACES))
    scored = _Scored({s.detector.name: [] for s in graph.steps}, {})
    with shared.adding("inference", Stage.INFER):
        # the face crops' arrays, as build_inputs stacks them (speech plays no part)
        face_items = build_inputs(frames_only, found, NO_SPEECH, settings).arrays()
        _add(
            scored, score_group(face_items, LooksAt.FACE_TRACK, graph, triton, per_request, shared)
        )
    audio, speech = speech_ready.result()
    media = replace(frames_only, audio=audio)
    with shared.adding("faces", Stage.FACES):
        faces = with_clips(media, found, speech=speech.found)
    with shared.adding("inference", Stage.INFER):
        inputs = build_inputs(media, faces, speech, settings)
        arrays = inputs.arrays()
        later = {s.detector.looks_at for s in graph.steps} - {
            LooksAt.FACE_TRACK,
            LooksAt.SPEECH_WINDOW,
        }
        for group in sorted(later, key=lambda g: g.value):
            _add(scored, score_group(arrays, group, graph, triton, per_request, shared))
    scored.parts = {k: v for k, v in scored.parts.items() if v}
    return media, hashes, matches, faces, inputs, scored


def _add(total: _Scored, part: _Scored) -> None:
    for name, arrays in part.parts.items():
        total.parts.setdefault(name, []).extend(arrays)
    for name, maps in part.heat.items():
        total.heat.setdefault(name, []).extend(maps)
    total.requests += part.requests
