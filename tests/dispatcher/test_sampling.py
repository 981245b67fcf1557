"""Which frames the decoder keeps: 1 fps samples, lip-sync clips, VFR streams."""

from __future__ import annotations

import itertools
import random

import pytest

from dfd.specs import LIPSYNC_FPS, LIPSYNC_FRAMES
from dispatcher.sampling import (
    NearestSampler,
    clip_starts,
    clip_times,
    frame_numbers,
    nearest_indices,
    sample_times,
    targets_by_frame,
)

pytestmark = pytest.mark.unit


def test_sample_times_stop_below_duration():
    assert list(sample_times(1.0, 3.0)) == [0.0, 1.0, 2.0]
    assert list(sample_times(2.0, 1.6)) == [0.0, 0.5, 1.0, 1.5]


def test_sample_times_without_duration_are_endless():
    assert list(itertools.islice(sample_times(1.0), 5)) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_sample_times_refuse_zero_rate():
    with pytest.raises(ValueError, match="sample_fps"):
        next(sample_times(0.0))


def test_cfr_25fps_at_1fps_takes_every_25th_frame():
    ts = [i / 25 for i in range(75)]
    assert nearest_indices(ts, sample_times(1.0, 3.0), tail_s=1 / 25) == [0, 25, 50]


def test_cfr_30000_1001_takes_the_nearest_frame():
    fps = 30000 / 1001
    ts = [i / fps for i in range(300)]
    picks = nearest_indices(ts, sample_times(1.0, 10.0), tail_s=1 / fps)
    assert picks == [round(k * fps) for k in range(10)]
    for k, i in enumerate(picks):
        assert abs(ts[i] - k) <= 0.5 / fps + 1e-9


def test_late_first_timestamp_still_samples_second_zero():
    ts = [0.2 + i / 25 for i in range(50)]
    # target 0 goes to the first frame; target 1 to the frame at 1.0
    assert nearest_indices(ts, sample_times(1.0, 2.2), tail_s=1 / 25) == [0, 20, 45]


def test_vfr_irregular_timestamps():
    ts = [0.0, 0.1, 0.9, 1.05, 1.6, 3.2, 3.25]
    picks = nearest_indices(ts, sample_times(1.0), tail_s=0.05)
    # 0 -> 0.0; 1 -> 1.05 (nearer than 0.9); 2 -> 1.6 (gap until 3.2); 3 -> 3.2
    assert picks == [0, 3, 4, 5]


def test_sparse_frames_repeat_for_clips():
    ts = [i / 10 for i in range(20)]  # 10 fps source
    picks = nearest_indices(ts, clip_times(0.0), tail_s=0.1)
    assert len(picks) == LIPSYNC_FRAMES
    assert picks[:8] == [0, 0, 1, 1, 2, 2, 2, 3]


def test_streaming_rule_matches_brute_force_nearest_on_random_vfr():
    rng = random.Random(7)
    ts = sorted(rng.uniform(0, 20) for _ in range(300))
    targets = [k * 0.37 for k in range(54)]
    picks = nearest_indices(ts, targets, tail_s=0.1)
    expected = [
        min(range(len(ts)), key=lambda i: (abs(ts[i] - t), i)) for t in targets if t <= ts[-1] + 0.1
    ]
    assert picks == expected


def test_targets_past_the_last_frame_are_dropped():
    ts = [i / 25 for i in range(30)]  # 1.2 s
    assert nearest_indices(ts, sample_times(1.0, 5.0), tail_s=1 / 25) == [0, 25]


def test_no_frames_no_picks():
    assert nearest_indices([], sample_times(1.0, 3.0), tail_s=0.04) == []


def test_streaming_sampler_reports_previous_frame_and_done():
    sampler = NearestSampler([0.0, 0.08], tail_s=0.04)
    assert sampler.push(0.0) == []
    assert sampler.push(0.04) == [0]  # frame 0 takes target 0
    assert not sampler.done
    assert sampler.push(0.08) == []  # 0.08 is nearer to frame 2 than frame 1
    assert sampler.finish() == [1]
    assert sampler.done


def test_streaming_sampler_rejects_decreasing_times():
    sampler = NearestSampler([0.0], tail_s=0.04)
    sampler.push(1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        sampler.push(0.5)


def test_clip_times_are_one_second_at_25fps():
    times = clip_times(2.0)
    assert len(times) == LIPSYNC_FRAMES
    assert times[0] == 2.0
    assert times[1] - times[0] == pytest.approx(1 / LIPSYNC_FPS)


def test_clip_starts_fit_inside_the_video_on_the_sampling_grid():
    assert clip_starts(3.0, 1.0, 8) == [0.0, 1.0, 2.0]
    assert clip_starts(2.99, 1.0, 8) == [0.0, 1.0]
    assert clip_starts(0.5, 1.0, 8) == []
    assert clip_starts(None, 1.0, 8) == []
    assert clip_starts(10.0, 1.0, 0) == []


def test_clip_starts_spread_over_long_videos():
    starts = clip_starts(600.0, 1.0, 4)
    assert starts == [0.0, 200.0, 399.0, 599.0]
    assert clip_starts(600.0, 1.0, 1) == [0.0]
    starts = clip_starts(30.0, 2.0, 5)
    assert len(starts) == 5
    assert all((t * 2).is_integer() for t in starts)


def test_targets_by_frame_inverts_nearest_indices():
    times = [0.0, 0.04, 0.5, 0.52, 1.3, 2.0]
    targets = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert nearest_indices(times, targets, 0.02) == [0, 2, 4, 4, 5]
    assert targets_by_frame(times, targets, 0.02) == {0: [0], 2: [1], 4: [2, 3], 5: [4]}


def test_frame_numbers_follow_timestamps_and_never_repeat():
    assert frame_numbers([0.0, 0.04, 0.2], 25.0) == [0, 1, 5]
    # Two frames closer than a frame duration still get distinct numbers.
    assert frame_numbers([0.0, 0.01, 0.02], 25.0) == [0, 1, 2]
    assert frame_numbers([0.3, 0.7], None) == [0, 1]
