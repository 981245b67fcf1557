"""The voice encoder's front end in numpy alone (the dispatcher and the export both use it).

Resemblyzer's GE2E encoder (``resemblyzer/audio.py``, ``hparams.py``, ``voice_encoder.py``
of the Resemblyzer 0.1.4 wheel) reads 40-band mel power spectrograms of 16 kHz audio:

- :func:`mel_spectrogram`: numerically ``librosa.feature.melspectrogram(y=wav, sr=16000,
  n_fft=400, hop_length=160, n_mels=40)`` as librosa >= 0.10 computes it (periodic Hann
  window of 400 samples, frames centred with zero padding, power 2, Slaney mel scale and
  Slaney area normalisation), transposed to (frames, 40) float32; no logarithm.
- :func:`partial_slices`: the 160-frame (1.6 s) windows the wheel averages over, taken at
  1.3 windows per second, the last one kept only if it is at least 75 % covered.
- :func:`normalize_volume`: the wheel's gain to -30 dBFS (only ever raising the level).

The wheel also trims silences with webrtcvad before embedding; the worker hands this
module speech segments its own voice-activity detector already found.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from dfd.specs import AUDIO_RATE, VOICE_FRAMES, VOICE_MELS

VOICE_WINDOW = 400  # 25 ms at 16 kHz, also the FFT size
VOICE_HOP = 160  # 10 ms
PARTIALS_PER_S = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0


def _hz_to_mel_slaney(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, freqs)


@cache
def mel_filters(
    n_mels: int = VOICE_MELS, n_fft: int = VOICE_WINDOW, rate: int = AUDIO_RATE
) -> np.ndarray:
    """Slaney-normalised triangular mel filters, (n_mels, n_fft // 2 + 1) float64."""
    fft_freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(rate / 2), n_mels + 2)
    mel_f = _mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


@cache
def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as scipy's fftbins


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Mel power spectrogram of 16 kHz mono audio, (1 + len // 160, 40) float32.

    Raises:
        ValueError: the audio is not one-dimensional or is empty.
    """
    sig = np.asarray(wav, dtype=np.float64)
    if sig.ndim != 1 or sig.size == 0:
        raise ValueError(f"voice features: expected non-empty mono samples, got shape {sig.shape}")
    pad = VOICE_WINDOW // 2
    padded = np.pad(sig, (pad, pad))
    n_frames = 1 + (padded.size - VOICE_WINDOW) // VOICE_HOP
    idx = np.arange(VOICE_WINDOW)[None, :] + VOICE_HOP * np.arange(n_frames)[:, None]
    spectrum = np.fft.rfft(padded[idx] * _hann(VOICE_WINDOW), axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return (power @ mel_filters().T).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """The mel-frame windows of ``VOICE_FRAMES`` frames an utterance is embedded over.

    The wheel's ``compute_partial_slices`` with its defaults (rate 1.3, coverage 0.75);
    the audio must be zero-padded to ``slices[-1].stop * VOICE_HOP`` samples first.
    """
    n_frames = int(np.ceil((n_samples + 1) / VOICE_HOP))
    step = int(np.round((AUDIO_RATE / PARTIALS_PER_S) / VOICE_HOP))
    steps = max(1, n_frames - VOICE_FRAMES + step + 1)
    slices = [slice(i, i + VOICE_FRAMES) for i in range(0, steps, step)]
    last = slices[-1]
    coverage = (n_samples - last.start * VOICE_HOP) / ((last.stop - last.start) * VOICE_HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


def partial_mels(wav: np.ndarray) -> np.ndarray:
    """The encoder's inputs for one utterance: (partials, 160, 40) float32."""
    sig = np.asarray(wav, dtype=np.float32).reshape(-1)
    slices = partial_slices(sig.size)
    need = slices[-1].stop * VOICE_HOP
    if need >= sig.size:
        sig = np.pad(sig, (0, need - sig.size))
    mel = mel_spectrogram(sig)
    return np.stack([mel[s] for s in slices])


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise the level of ``wav`` to ``target_dbfs`` (never lowers it), as the wheel does."""
    sig = np.asarray(wav, dtype=np.float32)
    mean_sq = float(np.mean(np.square(sig.astype(np.float64)))) if sig.size else 0.0
    if mean_sq == 0.0:
        return sig
    change = target_dbfs - 10 * np.log10(mean_sq)
    if change < 0:
        return sig
    return (sig * (10 ** (change / 20))).astype(np.float32)


def mean_embedding(partials: np.ndarray) -> np.ndarray:
    """An utterance's embedding: the L2-normalised mean of its partial embeddings."""
    raw = np.asarray(partials, dtype=np.float64).mean(axis=0)
    return (raw / np.linalg.norm(raw)).astype(np.float32)
