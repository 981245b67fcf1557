"""The speech gate: silero-vad served by Triton finds speech, and only speech."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.specs import AUDIO_RATE, VAD_CONTEXT, VAD_FRAME
from dispatcher.speech import (
    BLOCK_FRAMES,
    FRAME_S,
    NO_SPEECH,
    Speech,
    find_speech,
    frame_blocks,
    segments,
    speech_probs,
)
from export.samples import read_audio


@pytest.mark.unit
def test_frames_carry_the_context_of_the_frame_before():
    audio = np.arange(3 * VAD_FRAME + 10, dtype=np.float32)
    (block,) = frame_blocks(audio)
    assert block.shape == (4, VAD_CONTEXT + VAD_FRAME)
    assert not block[0, :VAD_CONTEXT].any()  # zeros before the first frame
    np.testing.assert_array_equal(
        block[1, :VAD_CONTEXT], audio[VAD_FRAME - VAD_CONTEXT : VAD_FRAME]
    )
    np.testing.assert_array_equal(block[1, VAD_CONTEXT:], audio[VAD_FRAME : 2 * VAD_FRAME])
    assert not block[3, VAD_CONTEXT + 10 :].any()  # the last frame is zero-padded
    long = frame_blocks(np.zeros((BLOCK_FRAMES + 1) * VAD_FRAME, np.float32))
    assert [len(b) for b in long] == [BLOCK_FRAMES, 1]


@pytest.mark.unit
def test_segments_bridge_short_pauses_and_drop_blips():
    probs = np.zeros(100, np.float32)
    probs[10:30] = 0.9  # 0.64 s of speech
    probs[32:40] = 0.9  # after a 2-frame (64 ms) pause: bridged
    probs[60:63] = 0.9  # a 96 ms blip: dropped
    (seg,) = segments(probs)
    assert seg == (pytest.approx(10 * FRAME_S, abs=1e-3), pytest.approx(40 * FRAME_S, abs=1e-3))
    speech = Speech(probs, (seg,))
    assert speech.found and speech.share(0.0, 10 * FRAME_S) == 0.0
    assert speech.share(seg[0], seg[1]) == pytest.approx(1.0)
    assert not NO_SPEECH.found and NO_SPEECH.seconds == 0.0


class _Recorder:
    """Passes requests to the real client and keeps the state each one carried."""

    def __init__(self, client):
        self.client = client
        self.states = []

    def infer(self, model, inputs, outputs=None):
        self.states.append(inputs["h"].copy())
        return self.client.infer(model, inputs, outputs)


@pytest.mark.integration
def test_speech_is_found_in_a_talking_clip_and_not_in_tones_or_silence(triton, media_dir):
    clip = read_audio(media_dir / "grid" / "bbaf2n.mpg", AUDIO_RATE)
    found = find_speech(clip, triton.client)
    assert found.found and 0.8 <= found.seconds <= 3.0, found.segments

    t = np.arange(6 * AUDIO_RATE) / AUDIO_RATE
    for name, audio in {
        "440 Hz tone": 0.3 * np.sin(2 * np.pi * 440 * t),
        "silence": np.zeros_like(t),
        "white noise": np.random.default_rng(0).normal(0, 0.05, t.size),
    }.items():
        got = find_speech(audio.astype(np.float32), triton.client)
        assert not got.found, f"{name}: {got.segments}"


@pytest.mark.integration
def test_a_long_track_is_sent_in_blocks_with_the_state_carried_over(triton, media_dir):
    clip = read_audio(media_dir / "grid" / "bbaf2n.mpg", AUDIO_RATE)
    long = np.tile(clip, int(np.ceil(BLOCK_FRAMES * VAD_FRAME * 1.5 / clip.size)))
    recorder = _Recorder(triton.client)
    probs = speech_probs(long, recorder)
    assert len(recorder.states) == 2 and len(probs) == -(-long.size // VAD_FRAME)
    assert not recorder.states[0].any() and recorder.states[1].any()  # the state went on
