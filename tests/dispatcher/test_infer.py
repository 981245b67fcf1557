"""Ensemble requests: tensors from the enabled detectors, empty groups as one zero row whose
scores are dropped, long videos chunked."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.detectors import LooksAt
from dfd.ensemble import ENSEMBLE_NAME, for_settings
from dfd.errors import UpstreamUnavailableError
from dfd.settings import Settings
from dfd.specs import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    FACE_SIZE,
    HEATMAP_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_COEFFS,
    MFCC_PER_FRAME,
)
from dispatcher.faces import CropGeometry, Face, FaceCrop, FaceResult, LipsyncClip
from dispatcher.infer import (
    VideoItems,
    build_inputs,
    chunk_requests,
    run_ensemble,
    window_spans,
)
from dispatcher.media import DecodedMedia, SampledFrame
from dispatcher.speech import NO_SPEECH, Speech

pytestmark = pytest.mark.unit
GRAPH = for_settings(Settings())
IN = {t.name: t for t in GRAPH.inputs}
FACES, VOICE, CLIPS = LooksAt.FACE_TRACK, LooksAt.SPEECH_WINDOW, LooksAt.FACE_AUDIO_CLIP


def counts(inputs: VideoItems) -> tuple[int, int, int]:
    return (len(inputs.faces), len(inputs.audio), len(inputs.lipsync_video))


class FakeEnsemble:
    """In-memory stand-in for deepfake_ensemble: item score = a fixed function of its pixels,
    so the dispatcher's chunk combination can be checked against one big request."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.fail_after = fail_after

    def infer(self, model, inputs, outputs=None):
        assert model == ENSEMBLE_NAME
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise UpstreamUnavailableError("triton: UNAVAILABLE")
        for t in GRAPH.inputs:
            if t.name not in inputs:
                continue
            arr = inputs[t.name]
            assert arr.dtype == np.dtype(t.numpy_dtype), t.name
            assert arr.shape[1:] == tuple(d for d in t.dims[1:]) or t.dims[0] != -1, t.name
        self.calls.append(inputs)
        out = {}
        if "faces" in inputs:
            v = inputs["faces"].mean(axis=(1, 2, 3))[:, None]
            heat = np.broadcast_to(v[:, None, :], (len(v), HEATMAP_SIZE, HEATMAP_SIZE)).copy()
            out["visual_scores"] = v.astype(np.float32)
            out["heatmaps"] = heat.astype(np.float32)
        if "audio" in inputs:
            a = (inputs["audio"].std(axis=1) * 2).clip(0, 1)[:, None]
            out["audio_scores"] = a.astype(np.float32)
        if "lipsync_video" in inputs:
            lip = (inputs["lipsync_video"].mean(axis=(1, 2, 3)) / 255)[:, None]
            out["lipsync_scores"] = lip.astype(np.float32)
        return {k: out[k] for k in (outputs or list(out))}


def make_inputs(nv: int, na: int, nl: int, seed: int = 0) -> VideoItems:
    rng = np.random.default_rng(seed)
    return VideoItems(
        faces=rng.random((nv, 3, FACE_SIZE, FACE_SIZE), dtype=np.float32),
        face_spans=tuple((float(i), i + 1.0) for i in range(nv)),
        face_tracks=tuple(i % 2 for i in range(nv)),
        audio=(rng.standard_normal((na, AUDIO_SAMPLES)) * rng.random((na, 1)) * 0.3).astype(
            np.float32
        ),
        audio_spans=tuple((2.0 * i, 2.0 * i + 4.04) for i in range(na)),
        lipsync_video=(rng.random((nl, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)) * 255).astype(
            np.float32
        ),
        lipsync_mfcc=rng.standard_normal((nl, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)).astype(
            np.float32
        ),
        lipsync_spans=tuple((float(i), i + 1.0) for i in range(nl)),
    )


def test_an_empty_group_is_one_zero_row_and_not_present():
    ((req, present),) = chunk_requests(make_inputs(3, 0, 0), GRAPH, 32)
    assert set(req) == set(IN)
    assert req["faces"].shape == (3, 3, FACE_SIZE, FACE_SIZE)
    assert req["audio"].shape == (1, AUDIO_SAMPLES) and not req["audio"].any()
    assert req["lipsync_video"].shape == (1, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)
    assert req["lipsync_mfcc"].shape == (1, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)
    assert present == {FACES}
    for name, t in IN.items():
        assert req[name].dtype == np.dtype(t.numpy_dtype)
    # the zero row's scores are dropped: only the faces were scored
    out = run_ensemble(make_inputs(3, 0, 0), FakeEnsemble(), Settings())
    assert out.items["audio"] is None and out.items["lipsync"] is None
    assert len(out.items["visual"].scores) == 3


def test_chunking_bounds_every_request():
    reqs = chunk_requests(make_inputs(70, 5, 33), GRAPH, 32)
    assert len(reqs) == 3
    assert [len(r["faces"]) for r, _ in reqs] == [32, 32, 6]
    assert [p for _, p in reqs] == [{FACES, VOICE, CLIPS}, {FACES, CLIPS}, {FACES}]
    assert [len(r["lipsync_video"]) for r, _ in reqs] == [32, 1, 1]


def test_only_the_enabled_detectors_inputs_are_sent():
    voice = for_settings(Settings(detectors="audio"))
    ((req, present),) = chunk_requests(make_inputs(3, 2, 1), voice, 32)
    assert set(req) == {"audio"} and present == {VOICE}
    out = run_ensemble(make_inputs(3, 2, 1), FakeEnsemble(), Settings(detectors="audio"))
    assert set(out.items) == {"audio"} and len(out.items["audio"].scores) == 2


def test_chunked_result_equals_one_request():
    inputs = make_inputs(9, 4, 5, seed=3)
    one = run_ensemble(inputs, FakeEnsemble(), Settings(max_items_per_request=32))
    client = FakeEnsemble()
    many = run_ensemble(inputs, client, Settings(max_items_per_request=2))
    assert one.requests == 1 and many.requests == 5 and len(client.calls) == 5
    for m in ("visual", "audio", "lipsync"):
        assert np.allclose(one.items[m].scores, many.items[m].scores)
        assert one.items[m].spans == many.items[m].spans
    assert many.heatmaps.shape == (9, HEATMAP_SIZE, HEATMAP_SIZE)
    assert np.allclose(one.heatmaps, many.heatmaps)


def test_no_items_at_all_sends_nothing():
    client = FakeEnsemble()
    out = run_ensemble(make_inputs(0, 0, 0), client, Settings())
    assert out.items == {"visual": None, "audio": None, "lipsync": None}
    assert out.requests == 0 and client.calls == []
    assert out.heatmaps.shape == (0, HEATMAP_SIZE, HEATMAP_SIZE)


def test_unavailable_triton_propagates_as_transient():
    with pytest.raises(UpstreamUnavailableError):
        run_ensemble(
            make_inputs(40, 1, 0), FakeEnsemble(fail_after=1), Settings(max_items_per_request=32)
        )


def test_deadline_bounds_all_chunks():
    class Slow(FakeEnsemble):
        def infer(self, model, inputs, outputs=None):
            import time

            time.sleep(0.05)
            return super().infer(model, inputs, outputs)

    with pytest.raises(UpstreamUnavailableError, match="within"):
        run_ensemble(
            make_inputs(10, 0, 0), Slow(), Settings(max_items_per_request=1), deadline_s=0.1
        )


def test_window_spans_match_audio_windows():
    from dfd.features import audio_windows

    for seconds in (1.0, AUDIO_SAMPLES / AUDIO_RATE, 5.0, 9.3, 30.0):
        wave = np.zeros(int(seconds * AUDIO_RATE), np.float32)
        wins = audio_windows(wave, 2.0)
        spans = window_spans(wave.size, 2.0, len(wins))
        assert len(spans) == len(wins)
        assert spans[0][0] == 0.0
        assert spans[-1][1] == pytest.approx(wave.size / AUDIO_RATE)  # the tail is covered
        if len(wins) > 2:  # the hop between full windows; the last one is pulled back to the end
            assert spans[1][0] == 2.0


def _media(audio: np.ndarray | None) -> DecodedMedia:
    frames = tuple(
        SampledFrame(i * 25, float(i), np.zeros((64, 64, 3), np.uint8)) for i in range(3)
    )
    return DecodedMedia(frames, audio, (), 64, 64, 1.0, 25.0, 3.0, "pyav")


def _faces(n_clips: int) -> FaceResult:
    face = Face((10, 10, 40, 40), np.zeros((5, 2), np.float32), 0.9)
    crop = FaceCrop(
        1, face, CropGeometry(25, 25, 39, 0), np.full((3, FACE_SIZE, FACE_SIZE), 0.5, np.float32)
    )
    clip = LipsyncClip(
        1.0,
        np.zeros((LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE), np.float32),
        np.zeros((LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS), np.float32),
    )
    return FaceResult(((), (face,), ()), (crop,), (clip,) * n_clips)


def _tone(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_build_inputs_keeps_the_windows_and_clips_with_speech():
    speech = Speech(np.ones(94, np.float32), ((0.5, 2.5),))
    inputs = build_inputs(_media(_tone()), _faces(1), speech, Settings())
    assert counts(inputs) == (1, 1, 1)
    assert inputs.face_spans == ((1.0, 2.0),)
    assert inputs.audio.shape == (1, AUDIO_SAMPLES)
    assert inputs.lipsync_spans == ((1.0, 2.0),)


def test_crops_cut_into_one_block_are_sent_as_it_is_not_copied():
    # face_crops cuts every crop into a row of one array; stacking them again would hold
    # each crop twice (a 15-minute video: 700 MiB more at its peak).
    from dataclasses import replace

    one = _faces(0)
    block = np.stack([one.crops[0].pixels * k for k in (0.2, 0.4, 0.6)])
    crops = tuple(replace(one.crops[0], frame_pos=i, pixels=block[i]) for i in range(3))
    faces = FaceResult((one.detections[1],) * 3, crops, ())
    sent = build_inputs(_media(None), faces, NO_SPEECH, Settings()).faces
    assert sent is block
    # crops that are not the block's rows in its order (a subset, reordered) are stacked
    for picked in (crops[:2], crops[::-1]):
        other = replace(faces, crops=picked)
        sent = build_inputs(_media(None), other, NO_SPEECH, Settings()).faces
        assert sent is not block and not np.shares_memory(sent, block)
        np.testing.assert_array_equal(sent, np.stack([c.pixels for c in picked]))


def test_no_speech_disables_audio_and_lipsync_whatever_the_level():
    # A loud tone with no speech in it, silence and no track at all: the audio and
    # lip-sync detectors would be judging what they were never trained on.
    for audio in (None, np.zeros(3 * AUDIO_RATE, np.float32), _tone()):
        inputs = build_inputs(_media(audio), _faces(1), NO_SPEECH, Settings())
        assert counts(inputs) == (1, 0, 0)


def test_only_windows_that_hold_enough_speech_are_scored():
    audio = np.concatenate([_tone(4.04), _tone(4.04)])
    # speech only in the second window (4.04 s .. 8.08 s), and a blip in the first
    speech = Speech(np.zeros(0, np.float32), ((0.1, 0.4), (5.0, 7.5)))
    inputs = build_inputs(_media(audio), _faces(1), speech, Settings(audio_hop_s=4.04))
    assert len(inputs.audio_spans) >= 1
    assert all(start >= 4.0 for start, _ in inputs.audio_spans)  # not the first window
    assert inputs.lipsync_spans == ()  # the clip at 1-2 s holds no speech


def test_requests_never_exceed_what_the_served_models_batch():
    # DFD_MAX_ITEMS_PER_REQUEST above a composing model's max_batch_size (audio, lip-sync:
    # 32) made every long video fail as if its media were bad (InputError from the client).
    from dispatcher.triton_client import check_inputs, known_models

    ensemble = known_models(GRAPH)[ENSEMBLE_NAME]

    class Checked(FakeEnsemble):
        def infer(self, model, inputs, outputs=None):
            check_inputs(model, ensemble, inputs)
            return super().infer(model, inputs, outputs)

    client = Checked()
    out = run_ensemble(make_inputs(40, 40, 40), client, Settings(max_items_per_request=64))
    assert out.requests == len(client.calls) == 2
    assert [len(c["audio"]) for c in client.calls] == [32, 8]
    assert len(out.items["audio"].scores) == 40
    # exactly the chunk size is one request; one more is two
    assert len(chunk_requests(make_inputs(32, 32, 32), GRAPH, 32)) == 1
    reqs = chunk_requests(make_inputs(33, 1, 0), GRAPH, 32)
    assert [len(r["faces"]) for r, _ in reqs] == [32, 1]
    assert [p for _, p in reqs] == [{FACES, VOICE}, {FACES}]
