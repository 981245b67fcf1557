"""Audio features the models expect, in numpy alone (the dispatcher imports this module).

- :func:`mfcc`: the 13-coefficient MFCC Light-ASD was trained on, numerically the same as
  ``python_speech_features.mfcc(signal, 16000, numcep=13, winlen=0.025, winstep=0.010)``
  with its defaults (pre-emphasis 0.97, 26 mel filters, 512-point FFT, rectangular
  window, log frame energy in place of c0, cepstral lifter 22).
- :func:`pad_repeat` and :func:`audio_windows`: AASIST's fixed 64,600-sample input,
  padded by repeating the signal as the AASIST repository does.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from dfd.specs import AUDIO_RATE, AUDIO_SAMPLES, MFCC_COEFFS

# Light-ASD read 16-bit WAV files as integers; float audio in [-1, 1] is scaled back.
INT16_SCALE = 32768.0
_WIN_S = 0.025
_STEP_S = 0.010
_NFFT = 512
_NFILT = 26
_PREEMPH = 0.97
_LIFTER = 22


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@cache
def _filterbank(nfilt: int, nfft: int, rate: int) -> np.ndarray:
    """Triangular mel filters on FFT bins, (nfilt, nfft // 2 + 1)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


@cache
def _dct_ortho(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of the orthonormal DCT-II matrix of size ``n``."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    mat = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    mat[0] /= np.sqrt(2.0)
    return mat


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def mfcc(signal16k: np.ndarray, *, rate: int = AUDIO_RATE, chunk: int = 4096) -> np.ndarray:
    """MFCC at 100 Hz of mono audio, (frames, 13) float32.

    Args:
        signal16k: mono samples at 16 kHz; floats are taken as [-1, 1] and scaled to the
            16-bit integer range Light-ASD was trained on; integer arrays are used as they are.
        rate: sample rate in Hz.
        chunk: frames transformed at once (memory only: the rows do not depend on it).

    Returns:
        One row per 10 ms step (25 ms windows; the last window is zero-padded), at least
        one. N samples give ``1 + ceil((N - 400) / 160)`` rows, so one second alone gives
        99: compute it over the whole track and slice 4 rows per video frame.
    """
    sig = np.asarray(signal16k).reshape(-1)
    sig = sig.astype(np.float64) * INT16_SCALE if sig.dtype.kind == "f" else sig.astype(np.float64)
    if sig.size == 0:
        raise ValueError("mfcc: expected at least one sample, got an empty signal")
    sig = np.append(sig[0], sig[1:] - _PREEMPH * sig[:-1])
    win, step = _round_half_up(_WIN_S * rate), _round_half_up(_STEP_S * rate)
    frames_n = 1 if sig.size <= win else 1 + math.ceil((sig.size - win) / step)
    padded = np.concatenate([sig, np.zeros((frames_n - 1) * step + win - sig.size)])
    bank = _filterbank(_NFILT, _NFFT, rate).T
    dct = _dct_ortho(_NFILT, MFCC_COEFFS).T
    lifter = 1 + (_LIFTER / 2.0) * np.sin(np.pi * np.arange(MFCC_COEFFS) / _LIFTER)
    eps = np.finfo(float).eps
    out = np.empty((frames_n, MFCC_COEFFS), np.float32)
    # a chunk of frames at a time: a 15-minute track's frames and spectra at once in float64
    # took about a gigabyte (each frame's row depends on that frame alone)
    for start in range(0, frames_n, chunk):
        count = min(chunk, frames_n - start)
        idx = np.arange(win)[None, :] + step * (start + np.arange(count))[:, None]
        power = np.square(np.abs(np.fft.rfft(padded[idx], _NFFT))) / _NFFT
        energy = power.sum(axis=1)
        energy = np.where(energy == 0, eps, energy)
        feat = power @ bank
        feat = np.log(np.where(feat == 0, eps, feat))
        ceps = feat @ dct
        ceps *= lifter
        ceps[:, 0] = np.log(energy)
        out[start : start + count] = ceps
    return out


def pad_repeat(wave: np.ndarray, length: int = AUDIO_SAMPLES) -> np.ndarray:
    """The first ``length`` samples of ``wave``, repeating it from the start when shorter."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        raise ValueError("audio window: expected at least one sample, got none")
    if wave.size >= length:
        return wave[:length].copy()
    return np.tile(wave, length // wave.size + 1)[:length]


def audio_windows(wave16k: np.ndarray, hop_s: float) -> np.ndarray:
    """AASIST windows over a whole track, (M, 64600) float32.

    Windows start every ``hop_s`` seconds; the last one starts early enough to end at the
    track's end (so the tail is covered without padding). A track shorter than one window
    gives a single window padded by repetition.
    """
    wave = np.asarray(wave16k, dtype=np.float32).reshape(-1)
    if hop_s <= 0:
        raise ValueError(f"audio windows: expected a positive hop in seconds, got {hop_s}")
    if wave.size <= AUDIO_SAMPLES:
        return pad_repeat(wave)[None, :]
    hop = max(1, int(round(hop_s * AUDIO_RATE)))
    last = wave.size - AUDIO_SAMPLES
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return np.stack([wave[s : s + AUDIO_SAMPLES] for s in starts])
