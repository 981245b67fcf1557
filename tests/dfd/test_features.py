"""Audio features: MFCC equal to python_speech_features, AASIST windows."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.features import audio_windows, mfcc, pad_repeat
from dfd.specs import AUDIO_SAMPLES
from export.samples import read_audio

pytestmark = pytest.mark.unit


def test_mfcc_equals_python_speech_features(media_dir):
    psf = pytest.importorskip("python_speech_features")
    wave = read_audio(media_dir / "grid" / "bbaf2n.mpg")
    for signal in (wave, wave[:401], wave[:16_000]):
        ours = mfcc(signal)
        ref = psf.mfcc(
            signal.astype(np.float64) * 32768, 16000, numcep=13, winlen=0.025, winstep=0.010
        )
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)


def test_mfcc_is_100_hz_and_integers_are_not_rescaled():
    signal = (np.sin(np.arange(32_000) / 7.0) * 10_000).astype(np.int16)
    feats = mfcc(signal)
    assert feats.shape == (199, 13)
    np.testing.assert_allclose(mfcc(signal.astype(np.float32) / 32768), feats, rtol=1e-5, atol=1e-3)


def test_mfcc_rows_do_not_depend_on_the_chunks_it_is_computed_in():
    # a long track is transformed a chunk of frames at a time, for memory alone
    signal = np.random.default_rng(2).normal(0, 0.1, 16_000 * 2 + 77).astype(np.float32)
    whole = mfcc(signal, chunk=10**9)
    for chunk in (4096, 50, 1):
        np.testing.assert_array_equal(mfcc(signal, chunk=chunk), whole)


def test_pad_repeat_repeats_from_the_start():
    wave = np.arange(10, dtype=np.float32)
    out = pad_repeat(wave, 25)
    np.testing.assert_array_equal(out, np.concatenate([wave, wave, wave[:5]]))
    np.testing.assert_array_equal(pad_repeat(np.arange(30, dtype=np.float32), 25), np.arange(25))
    with pytest.raises(ValueError):
        pad_repeat(np.zeros(0), 25)


def test_audio_windows_cover_the_track_to_its_end():
    wave = np.arange(AUDIO_SAMPLES + 20_000, dtype=np.float32)
    windows = audio_windows(wave, hop_s=1.0)
    assert windows.shape == (3, AUDIO_SAMPLES)
    assert windows[0, 0] == 0 and windows[1, 0] == 16_000
    assert windows[-1, -1] == wave[-1]  # the last window ends at the track's end
    short = audio_windows(np.ones(1000, np.float32), hop_s=1.0)
    assert short.shape == (1, AUDIO_SAMPLES)
    with pytest.raises(ValueError):
        audio_windows(wave, hop_s=0)
