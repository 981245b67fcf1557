"""Which decoded frames to keep: pure timing logic, no I/O.

Two consumers share one rule. The visual model looks at frames sampled at
``settings.sample_fps``; the lip-sync model needs runs of ``LIPSYNC_FRAMES`` frames at
``LIPSYNC_FPS``. Both ask for *target times* and get, for each target, the decoded frame
whose timestamp is nearest to it. Nearest (not "first frame at or after") keeps a 1 fps
sample inside the second it stands for even when the stream's first timestamp is late, and
it works unchanged for variable frame rate streams, where frame times are irregular.

:class:`NearestSampler` does this while decoding, seeing each timestamp once, with one
frame of look-ahead; :func:`nearest_indices` is the same rule for a list already known
(the DALI path, tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

from dfd.specs import LIPSYNC_FPS, LIPSYNC_FRAMES

# Timestamps are rounded by containers (90 kHz, 1 ms); a target this close to the midpoint
# between two frames goes to the earlier one.
_EPS_S = 1e-6


def sample_times(fps: float, duration_s: float | None = None) -> Iterator[float]:
    """Target times ``0, 1/fps, 2/fps, ...``, below ``duration_s`` when it is known.

    Without a duration the sequence is endless; the sampler stops at the last frame.
    """
    if fps <= 0:
        raise ValueError(f"sample_fps: expected a positive rate, got {fps}")
    k = 0
    while True:
        t = k / fps
        if duration_s is not None and t >= duration_s:
            return
        yield t
        k += 1


def clip_times(start_s: float) -> list[float]:
    """The ``LIPSYNC_FRAMES`` target times of one lip-sync clip starting at ``start_s``."""
    return [start_s + k / LIPSYNC_FPS for k in range(LIPSYNC_FRAMES)]


def clip_starts(duration_s: float | None, sample_fps: float, max_clips: int) -> list[float]:
    """Start times of up to ``max_clips`` lip-sync clips spread evenly over the video.

    Starts lie on the visual sampling grid (multiples of ``1/sample_fps``) so that the
    face found on a sampled frame also places the clip's crop, at no extra detector cost.
    A clip must fit wholly inside the video; a video shorter than one clip gets none.
    """
    clip_s = LIPSYNC_FRAMES / LIPSYNC_FPS
    if not duration_s or max_clips <= 0 or duration_s + _EPS_S < clip_s:
        return []
    grid = [t for t in sample_times(sample_fps, duration_s) if t + clip_s <= duration_s + _EPS_S]
    if not grid:
        return []
    if len(grid) <= max_clips:
        return grid
    # Evenly spaced picks over the grid, first and last included.
    step = (len(grid) - 1) / (max_clips - 1) if max_clips > 1 else 0.0
    picks = sorted({round(i * step) for i in range(max_clips)})
    return [grid[i] for i in picks]


def nearest_indices(
    timestamps: Sequence[float], targets: Iterable[float], tail_s: float
) -> list[int]:
    """For each target the index of the nearest timestamp (ties go to the earlier frame).

    Args:
        timestamps: frame times in presentation order (non-decreasing).
        targets: wanted times, non-decreasing.
        tail_s: how far past the last frame a target may lie and still take it (about
            one frame duration); later targets are dropped.

    Returns:
        One index per kept target, in target order; repeats where frames are sparse.
    """
    sampler = NearestSampler(targets, tail_s)
    picks: list[int] = []
    for i, ts in enumerate(timestamps):
        picks.extend(i - 1 for _ in sampler.push(ts))
    picks.extend(len(timestamps) - 1 for _ in sampler.finish())
    return picks


class NearestSampler:
    """Streaming form of :func:`nearest_indices` with one frame of look-ahead.

    Call :meth:`push` with each frame's timestamp in order; it returns the targets that
    the *previous* frame is nearest to (now that the next frame's time is known). After
    the last frame :meth:`finish` returns the targets the last frame takes.
    """

    def __init__(self, targets: Iterable[float], tail_s: float) -> None:
        self._targets = iter(targets)
        self._tail_s = tail_s
        self._index = -1  # index of the next target, once pulled
        self._next: float | None = None
        self._prev_ts: float | None = None
        self._advance()

    def _advance(self) -> None:
        self._next = next(self._targets, None)
        self._index += 1

    @property
    def done(self) -> bool:
        """True when every target has been assigned (decoding may stop)."""
        return self._next is None

    def push(self, ts: float) -> list[int]:
        """Record frame time ``ts``; returns target indices taken by the previous frame."""
        if self._prev_ts is not None and ts < self._prev_ts - _EPS_S:
            raise ValueError(
                f"frame timestamps: expected non-decreasing, got {ts} after {self._prev_ts}"
            )
        taken: list[int] = []
        if self._prev_ts is not None:
            midpoint = (self._prev_ts + ts) / 2
            while self._next is not None and self._next <= midpoint + _EPS_S:
                taken.append(self._index)
                self._advance()
        self._prev_ts = ts
        return taken

    def finish(self) -> list[int]:
        """Targets the last frame takes: those no later than ``tail_s`` after it."""
        taken: list[int] = []
        if self._prev_ts is None:
            return taken
        limit = self._prev_ts + self._tail_s
        while self._next is not None and self._next <= limit + _EPS_S:
            taken.append(self._index)
            self._advance()
        return taken


def frame_duration_s(fps: float | None) -> float:
    """A frame's duration for a nominal rate (25 fps when the stream does not say)."""
    if not fps or not math.isfinite(fps) or fps <= 0:
        return 1 / 25
    return 1 / fps


def targets_by_frame(
    timestamps: Sequence[float], targets: Iterable[float], tail_s: float
) -> dict[int, list[int]]:
    """:func:`nearest_indices` turned round: frame index -> the targets it is nearest to
    (in target order), for the frames that take any."""
    out: dict[int, list[int]] = {}
    for target, frame in enumerate(nearest_indices(timestamps, targets, tail_s)):
        out.setdefault(frame, []).append(target)
    return out


def frame_numbers(timestamps: Sequence[float], fps: float | None) -> list[int]:
    """Frame numbers from presentation times: time x ``fps`` rounded, strictly increasing
    (the position when the rate is unknown), as :class:`dispatcher.media.SampledFrame`
    numbers them."""
    if not fps:
        return list(range(len(timestamps)))
    out: list[int] = []
    for ts in timestamps:
        index = int(round(ts * fps))
        out.append(max(index, out[-1] + 1) if out else index)
    return out
