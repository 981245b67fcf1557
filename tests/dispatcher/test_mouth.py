"""Mouth sync: the signal maths on synthetic signals, then real GRID clips and a dub."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfd.errors import InputError
from dfd.specs import AUDIO_RATE, LIPSYNC_FPS, MESH_POINTS
from dispatcher.mouth import (
    DETREND_FRAMES,
    SAMPLES_PER_FRAME,
    MouthClip,
    detrend,
    energy_envelope,
    lag_correlations,
    mesh_box,
    mouth_opening,
    sync_chart,
    track_sync,
)
from dispatcher.speech import FRAME_S, Speech

pytestmark = pytest.mark.unit


def _syllables(frames: int, seed: int) -> np.ndarray:
    """A mouth-like signal: random openings at syllable rate (~4 Hz), smoothed, >= 0."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.uniform(0, 1, frames + 6), np.ones(4) / 4, "valid")[:frames]
    return np.maximum(x - 0.3, 0.0)


def _voice(envelope: np.ndarray, lag: int, seed: int) -> np.ndarray:
    """16 kHz noise whose loudness follows ``envelope`` ``lag`` frames later."""
    rng = np.random.default_rng(seed)
    gain = np.concatenate([np.zeros(max(lag, 0)), envelope])[: len(envelope)]
    gain = np.repeat(0.01 + gain, SAMPLES_PER_FRAME)
    return (rng.standard_normal(gain.size) * gain * 0.3).astype(np.float32)


def _speech_all(seconds: float) -> Speech:
    frames = int(seconds / FRAME_S)
    return Speech(np.ones(frames), ((0.0, seconds),))


@pytest.mark.parametrize("lag", [-5, -2, 0, 3, 6])
def test_lag_correlations_recovers_a_known_lag(lag):
    v = _syllables(100, seed=1)
    a = np.concatenate([np.zeros(8), v, np.zeros(8)])
    a = np.roll(a, lag) + np.random.default_rng(2).normal(0, 0.02, a.size)
    curve = lag_correlations([v], [a], 8)
    assert int(np.argmax(curve)) - 8 == lag
    assert curve.max() > 0.9


def test_clips_are_pooled_and_flat_signals_give_zero():
    v = [_syllables(25, seed=s) for s in (3, 4)]
    a = [np.concatenate([np.zeros(4), x, np.zeros(4)]) for x in v]
    assert lag_correlations(v, a, 4)[4] == pytest.approx(1.0)
    assert np.all(lag_correlations([np.ones(25)], [np.ones(33)], 4) == 0.0)
    with pytest.raises(InputError, match="audio of 30 frames for 25 video frames"):
        lag_correlations([np.ones(25)], [np.ones(30)], 4)


def test_detrend_removes_the_slow_envelope_and_keeps_syllables():
    ramp = np.linspace(0, 1, 50)
    assert np.allclose(detrend(ramp)[DETREND_FRAMES:-DETREND_FRAMES], 0.0, atol=1e-9)
    x = _syllables(50, seed=5)
    assert np.corrcoef(detrend(x + 3 * ramp), x)[0, 1] > 0.8
    gappy = x.copy()
    gappy[10] = np.nan
    out = detrend(gappy)
    assert np.isnan(out[10]) and np.isfinite(np.delete(out, 10)).all()


def test_mouth_opening_is_the_lip_gap_over_the_eye_distance():
    pts = np.zeros((2, MESH_POINTS, 3))
    pts[:, 33, 0], pts[:, 263, 0] = 40.0, 140.0  # eyes 100 px apart
    for upper, lower in ((13, 14), (82, 87), (312, 317)):
        pts[0, upper, 1], pts[0, lower, 1] = 120.0, 120.0  # closed
        pts[1, upper, 1], pts[1, lower, 1] = 120.0, 135.0  # 15 px open
    opening = mouth_opening(pts.reshape(2, -1))
    assert opening == pytest.approx([0.0, 0.15])
    assert mouth_opening((pts * 2).reshape(2, -1)) == pytest.approx([0.0, 0.15])


def test_energy_envelope_follows_loudness_and_floors_silence():
    audio = np.concatenate([np.zeros(SAMPLES_PER_FRAME), np.full(SAMPLES_PER_FRAME, 0.1)])
    env = energy_envelope(audio.astype(np.float32), -1 / LIPSYNC_FPS, 4)
    assert env[0] == env[1] == -60.0 and env[3] == -60.0  # before, silence, after the track
    assert env[2] == pytest.approx(-20.0, abs=0.01)


def test_mesh_box_is_the_box_squared_and_enlarged():
    assert mesh_box((10, 20, 50, 100)) == (-30.0, 0.0, 90.0, 120.0)


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_track_sync_finds_the_lag_of_a_synthetic_voice(lag):
    mouth = _syllables(75, seed=7)
    audio = _voice(mouth, lag, seed=8)
    clips = [MouthClip(track=0, start_s=k, opening=mouth[25 * k : 25 * k + 25]) for k in (0, 1, 2)]
    (sync,) = track_sync(clips, audio, _speech_all(3.0))
    assert sync.lag_s == pytest.approx(lag / LIPSYNC_FPS)
    assert sync.frames == 75 and sync.track == 0
    if lag <= 1:
        assert sync.correlation > 0.6 and sync.score < 0.2
    else:  # outside the score's +-1 frame: the correlation it reads is low
        assert sync.correlation < sync.correlations[3 + 8] - 0.2
    # another voice: no match
    (other,) = track_sync(clips, _voice(_syllables(75, seed=9), 0, seed=8), _speech_all(3.0))
    assert other.correlation < 0.4 and other.score > sync.score


def test_sync_chart_is_a_png_of_the_track():
    mouth = _syllables(50, seed=7)
    clips = [MouthClip(0, 0.0, mouth[:25]), MouthClip(0, 1.0, mouth[25:])]
    audio = _voice(mouth, 0, seed=1)
    (sync,) = track_sync(clips, audio, _speech_all(2.0))
    png = sync_chart(clips, audio, sync)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (900, 260)
    # both curves are drawn: blue and orange pixels
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert ((pixels == (30, 90, 200)).all(axis=1)).sum() > 50
    assert ((pixels == (230, 120, 20)).all(axis=1)).sum() > 50
    with pytest.raises(InputError, match="no clips of track 5"):
        sync_chart(clips, audio, type(sync)(**{**sync.__dict__, "track": 5}))


# --- real clips ------------------------------------------------------------------------

REAL = "lwbsza.mpg"
DUB_AUDIO = "pwij3p.mpg"


@pytest.fixture(scope="module")
def ort_models(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path):
    from benchmarks.bench_mouth_sync import mouth_models
    from dfd.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("dfd-mouth"), weights_dir=weights_dir)
    return settings, mouth_models(settings)


def _sync(path: Path, ort_models):
    from benchmarks.bench_mouth_sync import measure

    settings, models = ort_models
    return measure(path, settings, models)


def test_a_real_grid_clip_is_in_sync_and_a_dub_is_not(ort_models, media_dir, tmp_path):
    real = _sync(media_dir / "grid" / REAL, ort_models)
    assert real["tracks"] == 1 and real["frames"] >= 50
    assert real["correlation"] > 0.3
    assert abs(real["lag_s"]) <= 0.12
    dub = tmp_path / "dub.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "grid" / REAL)]
        + ["-i", str(media_dir / "grid" / DUB_AUDIO), "-map", "0:v:0", "-map", "1:a:0"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(dub)],
        check=True,
    )
    dubbed = _sync(dub, ort_models)
    assert dubbed["correlation"] < real["correlation"] - 0.2
    assert dubbed["score"] > real["score"]


def test_speech_rate_constant_matches_the_audio():
    assert SAMPLES_PER_FRAME * LIPSYNC_FPS == AUDIO_RATE


class _MemoryStore:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        key = f"{job_id}/{name}"
        self.files[key] = (data, content_type)
        return key

    def url(self, key: str) -> str:
        return f"https://evidence.example/{key}"


def test_the_detector_stores_a_chart_per_track_and_says_what_it_found(ort_models, media_dir):
    from dispatcher.decode import decode
    from dispatcher.faces import find_faces
    from dispatcher.mouth import find_mouth_sync
    from dispatcher.pipeline import detector_results
    from dispatcher.probe import probe
    from dispatcher.speech import find_speech

    settings, models = ort_models
    path = media_dir / "grid" / REAL
    media = decode(path, settings, probe(path, settings).duration_s)
    speech = find_speech(media.audio, models)
    faces = find_faces(media, models, settings, speech=speech.found)
    store = _MemoryStore()
    found = find_mouth_sync("job1", media, faces, speech, models, store)
    assert len(found.tracks) == 1 and found.charts == ("job1/mouth_sync_t0.png",)
    data, kind = store.files["job1/mouth_sync_t0.png"]
    assert kind == "image/png" and Image.open(io.BytesIO(data)).format == "PNG"
    assert found.score == pytest.approx(found.tracks[0].score)
    assert found.detail.startswith("track 0: r ")
    # silence: nothing to compare, and the result says so
    quiet = find_mouth_sync("job2", media, faces, Speech(np.zeros(3), ()), models, store)
    assert quiet.tracks == () and quiet.score is None
    from dfd.settings import Settings
    from dfd.states import Label
    from dispatcher.aggregate import Verdict

    wanted = Settings(detectors="visual, mouth_sync")
    final = Verdict(0.5, Label.INCONCLUSIVE, (), {}, {}, {}, {}, {})
    rows = detector_results(final, speech, True, wanted, mouth=found)
    assert rows["mouth_sync"].used and not rows["mouth_sync"].fused
    assert rows["mouth_sync"].score == pytest.approx(found.score, abs=1e-4)
    assert rows["mouth_sync"].model == "mediapipe_face_mesh@1"
    rows = detector_results(final, speech, True, wanted, mouth=quiet)
    assert not rows["mouth_sync"].used and rows["mouth_sync"].reason == "no-speaking-face"
