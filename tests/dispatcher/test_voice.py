"""dispatcher.voice.voice_changes: pure checks, then real GRID speech through our encoder."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from dfd import voice_features as vf
from dfd.errors import InputError
from dispatcher.voice import VOICE_CHANGE_SIMILARITY, voice_changes
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
