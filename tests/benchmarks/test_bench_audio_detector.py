"""The audio detector benchmark's windows: the service's, and the speech alone."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.bench_audio_detector import _OrtVad, speech_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, AUDIO_SAMPLES
from export.samples import read_audio


def _silent_share(windows: np.ndarray) -> float:
    """The share of 100 ms blocks of ``windows`` that are silence (RMS below 1e-3)."""
    blocks = windows[:, : AUDIO_SAMPLES // 1600 * 1600].reshape(-1, 1600)
    return float((np.sqrt((blocks**2).mean(axis=1)) < 1e-3).mean())


def _write_wav(path: Path, audio: np.ndarray) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.integration
def test_speech_only_windows_hold_no_pauses(media_dir, onnx_models, tmp_path):
    # A GRID sentence with 3 s of silence on either side: the service's windows keep the
    # pauses around the speech, the speech-only windows only the speech.
    speech = read_audio(media_dir / "grid" / "bbaf2n.mpg")
    silence = np.zeros(3 * AUDIO_RATE, np.float32)
    path = tmp_path / "padded.wav"
    _write_wav(path, np.concatenate([silence, speech, silence]))
    settings, vad = Settings(), _OrtVad(onnx_models["silero_vad"])

    service = speech_windows(path, settings, vad)
    alone = speech_windows(path, settings, vad, speech_only=True)
    assert len(service) and len(alone)
    assert _silent_share(service) > 0.2
    assert _silent_share(alone) < 0.05
    assert len(alone) <= len(service)
