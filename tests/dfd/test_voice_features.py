"""dfd.voice_features against the Resemblyzer wheel's own front end, on GRID speech."""

from __future__ import annotations

import numpy as np
import pytest

from dfd import voice_features as vf
from tests.fixtures.voice import grid_audio

pytestmark = pytest.mark.unit

audio = pytest.importorskip("resemblyzer.audio", reason="the Resemblyzer wheel (test extra)")


@pytest.fixture(scope="module")
def clips(media_dir):
    return grid_audio(media_dir)


@pytest.mark.slow  # librosa's first call JIT-compiles (numba): ~5-16 s here
def test_mel_spectrogram_is_the_wheels(clips):
    for name, wav in list(clips.items())[:4]:
        wav = vf.normalize_volume(wav)
        ours = vf.mel_spectrogram(wav)
        theirs = audio.wav_to_mel_spectrogram(wav)
        assert ours.shape == theirs.shape == (1 + wav.size // vf.VOICE_HOP, 40), name
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * float(theirs.max()))


def test_odd_lengths_and_a_short_clip(clips):
    wav = next(iter(clips.values()))
    for n in (1, 399, 400, 401, 16_001):
        np.testing.assert_allclose(
            vf.mel_spectrogram(wav[:n]),
            audio.wav_to_mel_spectrogram(wav[:n]),
            rtol=1e-4,
            atol=1e-6,
        )


def test_partial_slices_are_the_wheels():
    from resemblyzer import VoiceEncoder

    for n in (100, 16_000, 25_600, 25_601, 47_648, 160_000, 333_333):
        _, mel_slices = VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
        assert vf.partial_slices(n) == mel_slices, n


def test_normalize_volume_only_raises_the_level(clips):
    wav = next(iter(clips.values()))
    for gain in (0.01, 1.0, 3.0):
        x = np.clip(wav * gain, -1, 1).astype(np.float32)
        want = audio.normalize_volume(x, -30, increase_only=True)
        np.testing.assert_allclose(vf.normalize_volume(x), want, rtol=1e-5, atol=1e-7)
    silent = np.zeros(800, np.float32)
    assert not vf.normalize_volume(silent).any()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mono"):
        vf.mel_spectrogram(np.zeros((2, 400)))
    with pytest.raises(ValueError, match="non-empty"):
        vf.mel_spectrogram(np.zeros(0))
