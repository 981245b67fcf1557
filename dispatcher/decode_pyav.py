"""The PyAV decoder (the CPU path): one sequential pass over the container, no seeking
(seeks in long-GOP streams decode the same frames again), frame-threaded decoding, and only
the frames that :mod:`dispatcher.sampling` picks are converted to arrays. Audio is decoded
in the same pass and resampled by libswresample to 16 kHz mono float.

Which frames are picked is known before decoding: a demux-only pass (:func:`frame_plan`,
no decoding, a few milliseconds) reads every video packet's timestamp, so the frames
nearest the sampling times and the clips' targets are found first, and the decoding pass
drops every other non-reference frame (``skip_frame``): the decoder produces the reference
frames (later frames are predicted from them) and the picked ones. Where the timestamps
cannot be trusted before decoding (missing, repeated, or the decoder produces a frame the
plan does not list) the pass decodes every frame near a target instead, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from dfd.errors import CorruptMediaError, UnsupportedMediaError
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, LIPSYNC_FPS, LIPSYNC_FRAMES
from dispatcher.media import DecodedMedia, LipsyncSegment, SampledFrame, output_size, pixel_budget
from dispatcher.sampling import (
    NearestSampler,
    clip_starts,
    clip_times,
    frame_duration_s,
    frame_numbers,
    nearest_indices,
    sample_times,
    targets_by_frame,
)

log = logging.getLogger(__name__)

# A few undecodable packets are tolerated (ffmpeg's own tools conceal them); more means
# the file is broken and the verdict would rest on garbage.
_MAX_BAD_PACKETS = 8
# Area averaging when frames are scaled down: sharper than bilinear and cheaper here.
_SCALER = "AREA"
# A jump in the audio timestamps longer than a 25 fps frame is a gap, filled with silence
# (shorter ones are container rounding).
_AUDIO_GAP_S = 0.04


def open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise CorruptMediaError(f"decode: cannot open {path.name}: {exc}") from exc


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream; a file without one is refused."""
    if not container.streams.video:
        raise UnsupportedMediaError(f"decode: {path.name} has no video stream")
    return container.streams.video[0]


def stream_start(stream: av.stream.Stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stream_duration(
    container: av.container.InputContainer, stream: av.stream.Stream
) -> float | None:
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return None


def frame_rate(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


class _ClipCollector:
    """Fills the lip-sync clips from a stream of frames, via one sampler over all clip targets."""

    def __init__(self, starts: list[float], tail_s: float) -> None:
        self.starts = starts
        # All clips' targets flattened in time order; clips may overlap when sample_fps > 1.
        owners = sorted(
            ((t, c, j) for c, s in enumerate(starts) for j, t in enumerate(clip_times(s))),
            key=lambda x: (x[0], x[1], x[2]),
        )
        self._owners = [(c, j) for _, c, j in owners]
        self.targets = [t for t, _, _ in owners]
        self.sampler = NearestSampler(self.targets, tail_s)
        # Filled in place: no copy of the whole clip at the end. Allocated at a clip's
        # first frame, whose shape (display orientation) is known only then.
        self._grey: list[np.ndarray | None] = [None] * len(starts)
        self._index: list[list[int]] = [[-1] * LIPSYNC_FRAMES for _ in starts]

    def windows(self, margin_s: float) -> list[tuple[float, float]]:
        """Time ranges the clips need decoded in full."""
        return [(s - margin_s, s + LIPSYNC_FRAMES / LIPSYNC_FPS + margin_s) for s in self.starts]

    def assign(self, targets: list[int], frame_index: int, grey: np.ndarray) -> None:
        for target in targets:
            c, j = self._owners[target]
            clip = self._grey[c]
            if clip is None:
                clip = self._grey[c] = np.empty((LIPSYNC_FRAMES, *grey.shape), np.uint8)
            clip[j] = grey
            self._index[c][j] = frame_index

    def segments(self) -> tuple[LipsyncSegment, ...]:
        out = []
        for c, start in enumerate(self.starts):
            grey = self._grey[c]
            if min(self._index[c]) < 0 or grey is None:
                continue  # the video ended early; a partial clip would be misread as silence
            out.append(
                LipsyncSegment(start_s=start, frame_indices=tuple(self._index[c]), grey=grey)
            )
        return tuple(out)


def _needed(
    t: float, sample_fps: float, windows: list[tuple[float, float]], margin_s: float
) -> bool:
    """Whether a frame at ``t`` may be picked: near a sampling time or inside a clip window."""
    nearest = round(t * sample_fps) / sample_fps
    return abs(t - nearest) <= margin_s or any(lo <= t <= hi for lo, hi in windows)


@dataclass(frozen=True)
class Wanted:
    """What one frame of a :class:`FramePlan` is decoded for.

    Attributes:
        index: its frame number (:func:`dispatcher.sampling.frame_numbers`).
        samples: the sampling targets it is nearest to.
        clips: the lip-sync clip targets it is nearest to (``_ClipCollector``'s order).
    """

    index: int
    samples: list[int]
    clips: list[int]


@dataclass(frozen=True)
class FramePlan:
    """The frames one pass must produce, from the packets' timestamps before decoding.

    Attributes:
        pts: every frame's timestamp in the stream's time base.
        wanted: timestamp -> what that frame is for, for the frames that are picked.
    """

    pts: frozenset[int]
    wanted: dict[int, Wanted]


@dataclass(frozen=True)
class _Layout:
    """Rate, timing and the targets of a video stream, as both passes compute them."""

    fps: float | None
    tail_s: float
    start_s: float
    duration_s: float | None
    clip_starts: list[float]


def _layout(
    container: av.container.InputContainer,
    vstream: av.video.stream.VideoStream,
    settings: Settings,
    duration_s: float | None,
) -> _Layout:
    fps = frame_rate(vstream)
    duration = duration_s or _stream_duration(container, vstream)
    starts = (
        clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips)
        if container.streams.audio
        else []
    )
    # Past its last frame a video lasts half a frame more, as far as "nearest" goes.
    return _Layout(fps, frame_duration_s(fps) / 2, stream_start(vstream), duration, starts)


def read_timestamps(path: Path, stream_index: int) -> list[int] | None:
    """Every frame's timestamp in one video stream, sorted, by demuxing alone (no decoding);
    ``None`` when they cannot place the frames before decoding (a packet without one, two
    packets with the same one)."""
    out = []
    with open_container(path) as container:
        for packet in container.demux(container.streams[stream_index]):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's end marker; a packet the decoder drops (edit lists)
            if packet.pts is None:
                return None
            out.append(packet.pts)
    if len(set(out)) != len(out):
        return None
    return sorted(out)


def plan_frames(
    pts: Sequence[int],
    time_base: Fraction,
    layout: _Layout,
    sample_targets: list[float],
    clip_targets: list[float],
) -> FramePlan:
    """Which of the frames at ``pts`` (sorted) the samples and clips take, by the same
    nearest-frame rule the streaming samplers apply while decoding."""
    times = [float(p * time_base) - layout.start_s for p in pts]
    numbers = frame_numbers(times, layout.fps)
    samples = targets_by_frame(times, sample_targets, layout.tail_s)
    clips = targets_by_frame(times, clip_targets, layout.tail_s)
    wanted = {
        pts[i]: Wanted(numbers[i], samples.get(i, []), clips.get(i, []))
        for i in sorted(samples.keys() | clips.keys())
    }
    return FramePlan(frozenset(pts), wanted)


def frame_plan(path: Path, settings: Settings, duration_s: float | None = None) -> FramePlan | None:
    """The frames :func:`decode_pyav` takes from ``path``, known before decoding (``None``
    when the timestamps cannot tell)."""
    with open_container(path) as container:
        vstream = video_stream(container, path)
        layout = _layout(container, vstream, settings, duration_s)
        index, time_base = vstream.index, vstream.time_base
    if time_base is None:
        return None
    pts = read_timestamps(path, index)
    if not pts:
        return None
    clips = _ClipCollector(layout.clip_starts, layout.tail_s)
    return plan_frames(
        pts,
        Fraction(time_base),
        layout,
        list(sample_times(settings.sample_fps, layout.duration_s)),
        clips.targets,
    )


class _PlanMismatch(Exception):
    """The decoder produced other frames than the plan listed."""


def decode_pyav(
    path: Path,
    settings: Settings,
    duration_s: float | None = None,
    *,
    skip_unneeded: bool = True,
    progress: Callable[[float], None] | None = None,
    with_audio: bool = True,
) -> DecodedMedia:
    """The CPU decoder: one sequential, threaded pass with PyAV.

    With ``skip_unneeded`` the decoder drops the non-reference frames (which no other
    frame is predicted from) that nothing picks: about half the frames of a typical H.264
    stream. The picked frames are known from a demux-only pass when the timestamps allow
    (:func:`frame_plan`); otherwise every frame near a sampling time or inside a clip is
    decoded. Either way the result is that of a full decode. Frame numbers come from
    timestamps then. Without ``with_audio`` the audio packets are not read (``audio`` is
    None; :func:`read_audio` reads the same track on its own).
    """
    plan = frame_plan(path, settings, duration_s) if skip_unneeded else None
    if plan is not None:
        try:
            return _decode_pass(path, settings, duration_s, plan, True, progress, with_audio)
        except _PlanMismatch as exc:
            log.info("decode: %s: %s; decoding every frame near a target instead", path.name, exc)
    return _decode_pass(path, settings, duration_s, None, skip_unneeded, progress, with_audio)


def _decode_pass(
    path: Path,
    settings: Settings,
    duration_s: float | None,
    plan: FramePlan | None,
    skip_unneeded: bool,
    progress: Callable[[float], None] | None,
    with_audio: bool = True,
) -> DecodedMedia:
    """One pass: the frames ``plan`` lists (raising :class:`_PlanMismatch` when the decoder
    disagrees with it), or without a plan the streaming samplers' picks."""
    container = open_container(path)
    with container:
        vstream = video_stream(container, path)
        vstream.thread_type = "AUTO"  # frame + slice threads; ffmpeg picks the count
        astream = container.streams.audio[0] if container.streams.audio else None
        cc = vstream.codec_context
        if not cc.width or not cc.height:
            raise CorruptMediaError(f"decode: {path.name}: video stream states no frame size")
        layout = _layout(container, vstream, settings, duration_s)
        fps, tail, v_start, duration = layout.fps, layout.tail_s, layout.start_s, layout.duration_s
        starts = layout.clip_starts
        out_w, out_h = output_size(
            cc.width,
            cc.height,
            settings.decode_max_side_px,
            pixel_budget(settings, duration, len(starts)),
        )

        samples = NearestSampler(sample_times(settings.sample_fps, duration), tail)
        clips = _ClipCollector(starts, tail)
        # Three frames either side of a target are always decoded, so "nearest" is exact.
        margin = 6 * tail
        windows = clips.windows(margin)
        skipping = False
        track = AudioTrack(v_start) if astream else None
        if not with_audio:
            astream = track = None

        frames: list[SampledFrame] = []
        # One scaler per output format, kept across frames (building one costs more than
        # converting a frame).
        to_rgb, to_grey = VideoReformatter(), VideoReformatter()
        prev: av.VideoFrame | None = None
        prev_ts = 0.0
        prev_index = -1
        count = 0
        bad = 0
        quarter_turns = 0  # the stream's display rotation, counterclockwise
        produced: set[int] = set()  # the planned frames the decoder produced

        def take(
            frame: av.VideoFrame,
            index: int,
            ts: float,
            sample_hits: list[int],
            clip_hits: list[int],
        ) -> None:
            if sample_hits:
                rgb = _upright(
                    to_rgb.reformat(frame, out_w, out_h, "rgb24", interpolation=_SCALER),
                    quarter_turns,
                )
                frames.append(SampledFrame(index=index, time_s=ts, image=rgb))
            if clip_hits:
                grey = _upright(
                    to_grey.reformat(frame, out_w, out_h, "gray", interpolation=_SCALER),
                    quarter_turns,
                )
                clips.assign(clip_hits, index, grey)

        streams = [s for s in (vstream, astream) if s is not None]
        furthest = 0.0
        for packet in container.demux(*streams):
            if skip_unneeded and packet.stream is vstream and packet.pts is not None:
                if plan is not None:
                    skip = packet.pts not in plan.wanted
                else:
                    t = float(packet.pts * packet.time_base) - v_start
                    skip = not _needed(t, settings.sample_fps, windows, margin)
                if skip != skipping:
                    cc.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                bad += 1
                log.warning(
                    "decode: skipped a broken %s packet in %s: %s",
                    packet.stream.type,
                    path.name,
                    exc,
                )
                if bad > _MAX_BAD_PACKETS:
                    raise CorruptMediaError(
                        f"decode: {path.name}: more than {_MAX_BAD_PACKETS} undecodable packets"
                    ) from exc
                continue
            if progress is not None and packet.stream is vstream and packet.pts is not None:
                # How far into the stream, by time (packets come in decode order, so
                # timestamps may step back: report the furthest); the caller throttles.
                reached = float(packet.pts * packet.time_base) - v_start
                if reached > furthest:
                    furthest = reached
                    progress(min(furthest / (duration or 1.0), 1.0))
            for frame in decoded:
                if isinstance(frame, av.VideoFrame):
                    ts = (
                        (float(frame.time) - v_start)
                        if frame.time is not None
                        else count * 2 * tail
                    )
                    ts = max(ts, prev_ts)  # broken pts must not run backwards
                    if prev is None:
                        quarter_turns = rotation_turns(frame)
                    if plan is not None:
                        if frame.pts not in plan.pts:
                            raise _PlanMismatch(f"a frame at pts {frame.pts} not demuxed")
                        wanted = plan.wanted.get(frame.pts)
                        if wanted is not None:
                            take(frame, wanted.index, ts, wanted.samples, wanted.clips)
                            produced.add(frame.pts)
                    elif prev is not None:
                        take(prev, prev_index, prev_ts, samples.push(ts), clips.sampler.push(ts))
                    else:
                        samples.push(ts)
                        clips.sampler.push(ts)
                    # Skipped frames leave gaps in the count; the timestamp knows the number.
                    index = int(round(ts * fps)) if fps and skip_unneeded else count
                    prev, prev_ts, prev_index = frame, ts, max(index, prev_index + 1)
                    count += 1
                elif isinstance(frame, av.AudioFrame) and track is not None:
                    track.add(frame)
        if prev is None:
            raise CorruptMediaError(f"decode: {path.name}: no decodable video frame")
        if plan is not None:
            if len(produced) != len(plan.wanted):
                raise _PlanMismatch(
                    f"{len(plan.wanted) - len(produced)} picked frames were not produced"
                )
        else:
            take(prev, prev_index, prev_ts, samples.finish(), clips.sampler.finish())

        audio = track.finish() if track is not None else None

        return DecodedMedia(
            frames=tuple(frames),
            audio=audio,
            segments=clips.segments(),
            width=out_h if quarter_turns % 2 else out_w,
            height=out_w if quarter_turns % 2 else out_h,
            scale=out_w / cc.width,
            fps=fps,
            duration_s=duration if duration else prev_ts + 2 * tail,
            decoder="pyav",
            frames_decoded=count,
            quarter_turns=quarter_turns,
        )


def rotation_turns(frame: av.VideoFrame) -> int:
    """The frame's display rotation (``DISPLAYMATRIX``) in counterclockwise quarter turns."""
    try:
        degrees = frame.rotation or 0
    except (AttributeError, ValueError):  # no usable display matrix
        return 0
    return int(round(degrees / 90)) % 4


def _upright(frame: av.VideoFrame, quarter_turns: int) -> np.ndarray:
    """The converted frame as an array, rotated as players show it (ffmpeg's autorotate)."""
    image: np.ndarray = frame.to_ndarray()
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, quarter_turns))
    return image


class AudioTrack:
    """The audio track resampled to 16 kHz mono, with silence where its timestamps skip.

    Decoded frames are contiguous only while the timestamps say so: a track joined from
    recordings, or with lost packets, jumps ahead, and joined end to end without the gap
    everything after it would play early against the video.
    """

    def __init__(self, v_start: float) -> None:
        self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        self._v_start = v_start
        self._parts: list[np.ndarray] = []
        self._first_s: float | None = None
        self._next_s: float | None = None  # where the previous frame ended

    def add(self, frame: av.AudioFrame) -> None:
        if frame.time is not None:
            t = float(frame.time) - self._v_start
            if self._first_s is None:
                self._first_s = t
            elif self._next_s is not None and t - self._next_s > _AUDIO_GAP_S:
                self._parts.append(
                    np.zeros(int(round((t - self._next_s) * AUDIO_RATE)), np.float32)
                )
            if frame.sample_rate and frame.samples:
                self._next_s = t + frame.samples / frame.sample_rate
        self._parts.extend(out.to_ndarray()[0] for out in self._resampler.resample(frame))

    def finish(self) -> np.ndarray | None:
        self._parts.extend(out.to_ndarray()[0] for out in self._resampler.resample(None))
        return _align_audio(self._parts, self._first_s or 0.0)


def _align_audio(parts: list[np.ndarray], offset_s: float) -> np.ndarray | None:
    """Concatenate resampled audio so that sample 0 is video time 0."""
    if not parts:
        return None
    audio = np.concatenate(parts).astype(np.float32, copy=False)
    shift = int(round(offset_s * AUDIO_RATE))
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    if audio.size == 0:
        return None
    # A float track may hold NaN or infinities (PCM float, broken encoders); one NaN would
    # make the whole track's level NaN, read as silence, and switch audio and lip-sync off.
    audio = np.nan_to_num(audio, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(audio, -1.0, 1.0)


def read_audio(path: Path) -> np.ndarray | None:
    """The first audio track as 16 kHz mono, sample 0 at the video's time 0 (or the
    audio's own start in an audio file), read in a pass of its own; ``None`` without a
    track. Audio files, the DALI decoder and the overlapped pipeline's audio branch read
    the track with it, as :func:`decode_pyav`'s pass reads it beside the frames.

    A few undecodable packets (up to ``_MAX_BAD_PACKETS``, 8) are skipped with a warning,
    as ffmpeg's own tools conceal them: the track goes on after them, the time they held
    silent where it is longer than 40 ms (:class:`AudioTrack` fills a jump in the
    timestamps), so what follows stays in time with the video.

    Raises:
        CorruptMediaError: the file cannot be opened, or more than 8 of its audio packets
            cannot be decoded.
    """
    container = open_container(path)
    with container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        v_start = stream_start(container.streams.video[0]) if container.streams.video else 0.0
        track = AudioTrack(v_start)
        bad = 0
        for packet in container.demux(astream):
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                bad += 1
                log.warning("decode: skipped a broken audio packet in %s: %s", path.name, exc)
                if bad > _MAX_BAD_PACKETS:
                    raise CorruptMediaError(
                        f"decode: {path.name}: more than {_MAX_BAD_PACKETS} undecodable "
                        "audio packets"
                    ) from exc
                continue
            for frame in decoded:
                if isinstance(frame, av.AudioFrame):
                    track.add(frame)
        return track.finish()


def decode_audio_file(
    path: Path, settings: Settings, duration_s: float | None = None
) -> DecodedMedia:
    """An audio file (no video stream): its track only (:func:`read_audio`: a few broken
    packets skipped), no frames and no clips."""
    audio = read_audio(path)
    if audio is None or audio.size == 0:
        raise CorruptMediaError(f"decode: {path.name}: no audio could be decoded")
    return DecodedMedia(
        frames=(),
        audio=audio,
        segments=(),
        width=0,
        height=0,
        scale=1.0,
        fps=None,
        duration_s=duration_s or audio.size / AUDIO_RATE,
        decoder="pyav",
    )


def decode_animation(
    path: Path, settings: Settings, duration_s: float | None = None
) -> DecodedMedia:
    """An animated WebP with Pillow (FFmpeg decodes none): the frames nearest each sampling
    time, no audio. Frame numbers count the animation's frames."""
    from PIL import Image

    with Image.open(path) as image:
        count = int(getattr(image, "n_frames", 1))
        starts, t = [], 0.0
        for index in range(count):
            image.seek(index)
            image.load()  # Pillow reads a frame's duration when it loads the frame
            starts.append(t)
            t += float(image.info.get("duration") or 100) / 1000
        duration = duration_s or t
        width, height = image.size
        out_w, out_h = output_size(width, height, settings.decode_max_side_px)
        tail = (t / count) / 2 if count else 0.0
        picks = nearest_indices(starts, sample_times(settings.sample_fps, duration), tail)
        frames = []
        for index in dict.fromkeys(picks):
            image.seek(index)
            rgb = image.convert("RGB")
            if rgb.size != (out_w, out_h):
                rgb = rgb.resize((out_w, out_h), Image.Resampling.BILINEAR)
            frames.append(SampledFrame(index=index, time_s=starts[index], image=np.asarray(rgb)))
    return DecodedMedia(
        frames=tuple(frames),
        audio=None,
        segments=(),
        width=out_w,
        height=out_h,
        scale=out_w / width,
        fps=count / t if t else None,
        duration_s=duration,
        decoder="pillow",
        frames_decoded=count,
    )
