"""dispatcher.voice.voice_changes: pure checks, then real GRID speech through our encoder."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dfd import voice_features as vf
from dfd.errors import InputError
from dispatcher.voice import (
    MAX_BATCH,
    VOICE_CHANGE_SIMILARITY,
    VoiceSegment,
    check_voice,
    decide,
    describe,
    voice_changes,
    voice_segments,
)
from tests.fixtures.voice import SAME_SPEAKER, grid_audio, speaker

pytestmark = pytest.mark.unit


def test_a_change_is_reported_at_the_start_of_the_new_voice():
    a, b = np.eye(3)[0], np.eye(3)[1]
    near = np.array([0.9, 0.1, 0.0])
    spans = [(0.0, 2.0), (2.5, 4.0), (4.0, 6.0), (7.2, 9.0)]
    changes = voice_changes(np.stack([a, near, b, b * 3]), spans, threshold=0.5)
    assert changes == [(4.0, pytest.approx(0.1 / np.hypot(0.9, 0.1)))]
    assert voice_changes(np.stack([a, near]), spans[:2], threshold=0.999)[0][0] == 2.5
    assert voice_changes(np.zeros((0, 256)), []) == []
    assert voice_changes(np.ones((1, 256)), [(0.0, 1.0)]) == []


@pytest.mark.parametrize(
    ("embeddings", "spans", "match"),
    [
        (np.ones(256), [(0.0, 1.0)], "shape"),
        (np.ones((2, 4)), [(0.0, 1.0)], "2 embeddings for 1 spans"),
        (np.array([[1.0, np.nan]]), [(0.0, 1.0)], "NaN"),
        (np.zeros((1, 4)), [(0.0, 1.0)], "zero embedding"),
        (np.ones((1, 4)), [(2.0, 1.0)], "start_s, end_s"),
        (np.ones((2, 4)), [(3.0, 4.0), (1.0, 2.0)], "time order"),
    ],
)
def test_bad_input_is_refused(embeddings, spans, match):
    with pytest.raises(InputError, match=match):
        voice_changes(embeddings, spans)


@pytest.fixture(scope="module")
def embed(weights_dir: Path):
    from export.models import resemblyzer

    net = resemblyzer.build(weights_dir / "resemblyzer" / "pretrained.pt")

    def run(wav: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = net(torch.from_numpy(vf.partial_mels(vf.normalize_volume(wav)))).numpy()
        return vf.mean_embedding(parts)

    return run


@pytest.fixture(scope="module")
def clips(media_dir):
    return grid_audio(media_dir)


def _joined(clips, embed, names):
    """Clips played one after the other: per-clip embeddings and their spans in seconds."""
    spans, t = [], 0.0
    for name in names:
        dur = clips[name].size / vf.AUDIO_RATE
        spans.append((t, t + dur))
        t += dur
    return np.stack([embed(clips[n]) for n in names]), spans


@pytest.mark.parametrize(("first", "second"), [("swiz3n", "lbbc2a"), ("lrwp9a", "pwij3p")])
def test_two_grid_speakers_change_once_at_the_join(clips, embed, first, second):
    embeddings, spans = _joined(clips, embed, [first, second])
    changes = voice_changes(embeddings, spans)
    assert len(changes) == 1, changes
    assert changes[0][0] == pytest.approx(clips[first].size / vf.AUDIO_RATE)
    assert changes[0][1] < VOICE_CHANGE_SIMILARITY


def test_one_speakers_clips_show_no_change_and_a_third_voice_does(clips, embed):
    embeddings, spans = _joined(clips, embed, [*SAME_SPEAKER, "swiz3n"])
    changes = voice_changes(embeddings, spans)
    assert [t for t, _ in changes] == [pytest.approx(spans[2][0])], changes
    assert voice_changes(embeddings[:2], spans[:2]) == []


def test_the_threshold_is_the_equal_error_point_of_grid_half_clips(clips, embed):
    # every clip cut in two 1.5 s halves: same-speaker vs different-speaker cosines
    halves = []
    for name, wav in clips.items():
        mid = wav.size // 2
        halves += [(speaker(name), embed(wav[:mid])), (speaker(name), embed(wav[mid:]))]
    same, diff = [], []
    for (s1, e1), (s2, e2) in itertools.combinations(halves, 2):
        (same if s1 == s2 else diff).append(float(e1 @ e2))
    same_a, diff_a = np.array(same), np.array(diff)
    assert (len(same_a), len(diff_a)) == (15, 216)
    grid = np.arange(0.5, 0.85, 0.005)
    gap = [abs((same_a < t).mean() - (diff_a >= t).mean()) for t in grid]
    assert float(grid[int(np.argmin(gap))]) == pytest.approx(VOICE_CHANGE_SIMILARITY, abs=0.01)
    # the figures the module quotes
    assert (round(same_a.min(), 2), round(same_a.max(), 2)) == (0.60, 0.80)
    assert (round(diff_a.min(), 2), round(diff_a.max(), 2)) == (0.39, 0.82)


# --- segments, the decision, and the check the pipeline runs -------------------------


def test_turns_split_at_pauses_short_turns_are_left_out_and_long_ones_cut():
    runs = [(0.0, 1.0), (1.2, 2.0), (3.0, 3.5), (5.0, 12.0)]
    segs = voice_segments(runs)
    # 0-2 s is one turn (a 0.2 s pause) of 1.8 s; 3.0-3.5 is too short; 7 s cut in two
    assert [s.runs for s in segs] == [((0.0, 1.0), (1.2, 2.0)), ((5.0, 8.5),), ((8.5, 12.0),)]
    assert [round(s.speech_s, 3) for s in segs] == [1.8, 3.5, 3.5]
    assert voice_segments([(0.0, 1.5)]) == []
    assert voice_segments([]) == []


def test_the_group_rule_reports_one_change_at_the_clearest_boundary():
    a, b = np.eye(4)[0], np.eye(4)[1]
    mix = (a + b) / np.sqrt(2)
    emb = np.stack([a, a, mix, b, b])
    segs = [VoiceSegment(float(k), k + 0.9, ((float(k), k + 0.9),)) for k in range(5)]
    one = decide(emb, segs, threshold=0.75, group=1)
    assert [t for t, _ in one.changes] == [2.0, 3.0]  # a -> mix and mix -> b
    two = decide(emb, segs, threshold=0.75, group=2)
    assert len(two.changes) == 1 and two.changes[0][0] in (2.0, 3.0), two
    assert len(two.similarities) == 4
    assert decide(emb[:1], segs[:1]).changes == ()


class _Onnx:
    """The speech gate and the voice encoder in onnxruntime, answering as Triton does."""

    def __init__(self, settings):
        import onnxruntime as ort

        from export.onnx_export import export_one

        self.sessions = {
            role: ort.InferenceSession(
                str(export_one(c, settings)), providers=["CPUExecutionProvider"]
            )
            for role, c in (("vad", "silero_vad"), ("voice", "resemblyzer"))
        }
        self.calls: list[tuple[str, int]] = []

    def infer(self, model, inputs, outputs=None, *, version=None):
        s = self.sessions[model]
        self.calls.append((model, len(next(iter(inputs.values())))))
        return {o.name: v for o, v in zip(s.get_outputs(), s.run(None, dict(inputs)), strict=True)}


@pytest.fixture(scope="module")
def onnx(weights_dir):
    from tests.fixtures.triton import triton_settings

    return _Onnx(triton_settings(weights_dir))


def _ffmpeg_join(media_dir: Path, names, out: Path) -> np.ndarray:
    from dispatcher.decode_pyav import read_audio

    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{media_dir / 'grid' / n}.mpg'\n" for n in names))
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            str(out),
        ],
        check=True,
    )
    audio = read_audio(out)
    assert audio is not None
    return audio


def test_a_join_of_two_grid_speakers_is_one_change_and_one_speaker_none(onnx, media_dir, tmp_path):
    from dispatcher.speech import find_speech

    joined = _ffmpeg_join(media_dir, ["swiz3n", "lwbsza"], tmp_path / "join.wav")
    found = check_voice(joined, find_speech(joined, onnx).segments, onnx)
    assert len(found.segments) == 2, found
    assert [round(t, 1) for t, _ in found.changes] == [round(found.segments[1].start_s, 1)]
    assert 3.0 < found.changes[0][0] < 4.0  # the second clip starts at 3 s, speech after
    assert describe(found).startswith("voice changes at 3.")
    assert all(n <= MAX_BATCH for m, n in onnx.calls if m == "voice")

    same = _ffmpeg_join(media_dir, list(SAME_SPEAKER), tmp_path / "same.wav")
    found = check_voice(same, find_speech(same, onnx).segments, onnx)
    assert len(found.segments) == 2 and found.changes == (), found
    assert describe(found) == "one voice across 2 speech segments"
    assert check_voice(None, [], onnx).segments == ()
