"""Whole frames for the frame detectors (UFD): prepared only when one is enabled, spread
over the video, each as CLIP sees it, and sent as the ensemble's ``frames`` group."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.detectors import LooksAt
from dfd.ensemble import for_settings
from dfd.settings import Settings
from dfd.specs import CLIP_SIZE
from dispatcher.faces import FaceResult
from dispatcher.frames import MAX_FRAMES, clip_frame
from dispatcher.infer import build_inputs, chunk_requests
from dispatcher.media import DecodedMedia, SampledFrame
from dispatcher.speech import NO_SPEECH

pytestmark = pytest.mark.unit
NO_FACES = FaceResult((), (), ())


@pytest.fixture
def installed(tmp_path, weights_dir):
    """Settings under which UFD counts as installed: a file where `dfd models pull ufd`
    puts OpenAI's checkpoint (nothing is loaded here: presence is what is checked)."""

    def make(detectors: str) -> Settings:
        settings = Settings(data_dir=tmp_path, weights_dir=weights_dir, detectors=detectors)
        archive = settings.weights_cache_dir / "clip" / "ViT-L-14.pt"
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(b"placeholder")
        return settings

    return make


def _media(n: int) -> DecodedMedia:
    rng = np.random.default_rng(n)
    frames = tuple(
        SampledFrame(i * 25, float(i), rng.integers(0, 256, (72, 128, 3), dtype=np.uint8))
        for i in range(n)
    )
    return DecodedMedia(frames, None, (), 128, 72, 1.0, 25.0, float(n), "pyav")


def test_frames_are_prepared_only_for_an_enabled_frame_detector(installed, weights_dir):
    media = _media(3)
    assert len(build_inputs(media, NO_FACES, NO_SPEECH, Settings()).frames) == 0
    # enabled but not installed (no CLIP checkpoint): not run, so no frames either
    absent = Settings(weights_dir=weights_dir, detectors="visual,ufd")
    assert len(build_inputs(media, NO_FACES, NO_SPEECH, absent).frames) == 0
    inputs = build_inputs(media, NO_FACES, NO_SPEECH, installed("visual,ufd"))
    assert inputs.frames.shape == (3, 3, CLIP_SIZE, CLIP_SIZE)
    assert inputs.frame_spans == ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0))
    np.testing.assert_array_equal(inputs.frames[1], clip_frame(media.frames[1].image))
    assert inputs.spans(LooksAt.FRAME) == inputs.frame_spans


def test_a_long_video_sends_at_most_the_frame_limit_spread_over_it(installed):
    inputs = build_inputs(_media(40), NO_FACES, NO_SPEECH, installed("ufd"))
    assert len(inputs.frames) == MAX_FRAMES
    assert inputs.frame_spans[0][0] == 0.0 and inputs.frame_spans[-1][0] == 39.0


def test_a_video_without_faces_still_has_its_frames_sent(installed):
    settings = installed("visual,ufd")
    graph = for_settings(settings)
    inputs = build_inputs(_media(3), NO_FACES, NO_SPEECH, settings)
    ((req, present),) = chunk_requests(inputs, graph, 16)
    assert present == {LooksAt.FRAME}
    assert req["frames"].shape == (3, 3, CLIP_SIZE, CLIP_SIZE)
    assert req["faces"].shape[0] == 1 and not req["faces"].any()  # the zero row
