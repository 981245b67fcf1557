"""Decode a video into what the detectors need: sampled frames, 16 kHz audio, 25 fps clips.

Two decoders produce the same :class:`DecodedMedia`:

- **PyAV** (the CPU path): one sequential pass over the container, no seeking (seeks in
  long-GOP streams decode the same frames again), frame-threaded decoding, and only the
  frames that :mod:`dispatcher.sampling` picks are converted to arrays. Audio is decoded
  in the same pass and resampled by libswresample to 16 kHz mono float.
- **DALI** (``fn.decoders.video``, ``mixed`` on a GPU; its CPU build decodes VP8/VP9/
  MJPEG only). Imported lazily; frame times come from demuxing packets with PyAV (cheap:
  no decoding), audio from PyAV as well, since DALI does not read audio from containers.

``settings.decoder`` chooses: ``auto`` is DALI when a GPU and DALI are both present.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from dfd.errors import ConfigurationError, CorruptMediaError, UnsupportedMediaError
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, LIPSYNC_FPS, LIPSYNC_FRAMES
from dispatcher.sampling import (
    NearestSampler,
    clip_starts,
    clip_times,
    frame_duration_s,
    nearest_indices,
    sample_times,
)

log = logging.getLogger(__name__)

# A few undecodable packets are tolerated (ffmpeg's own tools conceal them); more means
# the file is broken and the verdict would rest on garbage.
_MAX_BAD_PACKETS = 8
# Area averaging when frames are scaled down: sharper than bilinear and cheaper here.
_SCALER = "AREA"
_MIN_SIDE = 256  # a memory cap never shrinks frames below this longer side
# A jump in the audio timestamps longer than a 25 fps frame is a gap, filled with silence
# (shorter ones are container rounding).
_AUDIO_GAP_S = 0.04


@dataclass(frozen=True)
class SampledFrame:
    """One frame sampled for the visual model.

    Attributes:
        index: frame number in the source, from 0: presentation time x the stream's
            average rate (the count of frames before it in a constant-rate stream).
        time_s: presentation time from the stream's start.
        image: RGB uint8 ``[H, W, 3]`` at the decoded size.
    """

    index: int
    time_s: float
    image: np.ndarray


@dataclass(frozen=True)
class LipsyncSegment:
    """``LIPSYNC_FRAMES`` grey frames at 25 fps starting at ``start_s``.

    Attributes:
        start_s: the clip's first target time; also a visual sampling time.
        frame_indices: source frame number of each clip frame (repeats where the
            source is slower than 25 fps).
        grey: uint8 ``[LIPSYNC_FRAMES, H, W]`` at the decoded size.
    """

    start_s: float
    frame_indices: tuple[int, ...]
    grey: np.ndarray


@dataclass(frozen=True)
class DecodedMedia:
    """Everything later stages read from the media file.

    Attributes:
        frames: the sampled frames in time order.
        audio: 16 kHz mono float32 in [-1, 1], aligned so sample 0 is video time 0;
            None when the file has no audio track.
        segments: 25 fps clips for the lip-sync model (none without audio).
        width, height: size of the decoded images (after the ``decode_max_side_px`` cap).
        scale: decoded size / source size.
        fps: the stream's average frame rate, if it states one.
        duration_s: video duration (from the last decoded frame when the container
            does not say).
        decoder: ``pyav`` or ``dali``.
        frames_decoded: how many video frames the decoder produced (skipped ones not).
        quarter_turns: the display rotation applied to the coded frames, counterclockwise
            quarter turns (odd: the picture shows portrait what is stored landscape).
    """

    frames: tuple[SampledFrame, ...]
    audio: np.ndarray | None
    segments: tuple[LipsyncSegment, ...]
    width: int
    height: int
    scale: float
    fps: float | None
    duration_s: float
    decoder: str
    frames_decoded: int = 0
    quarter_turns: int = 0

    @property
    def audio_duration_s(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / AUDIO_RATE


def output_size(
    width: int, height: int, max_side: int, max_pixels: float | None = None
) -> tuple[int, int]:
    """Decoded size: the source scaled down (never up) to fit ``max_side`` and, when given,
    ``max_pixels`` per frame (but not below a 256-pixel longer side); even sides."""
    scale = min(1.0, max_side / max(width, height))
    if max_pixels is not None and width * height * scale * scale > max_pixels:
        scale = max(
            math.sqrt(max_pixels / (width * height)), min(scale, _MIN_SIDE / max(width, height))
        )
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def pixel_budget(settings: Settings, duration_s: float | None, clips: int) -> float | None:
    """Most pixels per frame so that the samples (RGB) and clips (grey) fit ``decode_max_bytes``."""
    if not duration_s:
        return None
    samples = math.ceil(duration_s * settings.sample_fps)
    bytes_per_pixel = 3 * samples + LIPSYNC_FRAMES * clips
    return settings.decode_max_bytes / max(1, bytes_per_pixel)


def choose_decoder(settings: Settings) -> str:
    """``pyav`` or ``dali`` for these settings; refuses ``dali`` when it cannot run."""
    if settings.decoder == "pyav":
        return "pyav"
    dali = _dali_available()
    gpu = _gpu_present()
    if settings.decoder == "dali":
        if not dali:
            raise ConfigurationError(
                "decoder: DFD_DECODER=dali needs NVIDIA DALI (pip install nvidia-dali-cuda120 "
                "--extra-index-url https://pypi.nvidia.com), which is not installed"
            )
        return "dali"
    return "dali" if dali and gpu else "pyav"


def decode(path: Path, settings: Settings, duration_s: float | None = None) -> DecodedMedia:
    """Decode ``path`` with the decoder ``settings.decoder`` selects.

    Args:
        path: a file that probing accepted.
        settings: sampling rate, clip count, size cap, decoder choice.
        duration_s: the probed duration; places the lip-sync clips.

    Raises:
        UnsupportedMediaError: no video stream.
        CorruptMediaError: nothing decodable, or too many broken packets.
        ConfigurationError: DALI asked for but missing.
    """
    if choose_decoder(settings) == "dali":
        return decode_dali(path, settings, duration_s)
    return decode_pyav(path, settings, duration_s)


# --- PyAV ------------------------------------------------------------------------------


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise CorruptMediaError(f"decode: cannot open {path.name}: {exc}") from exc


def _video_stream(
    container: av.container.InputContainer, path: Path
) -> av.video.stream.VideoStream:
    """The first video stream; a file without one is refused."""
    if not container.streams.video:
        raise UnsupportedMediaError(f"decode: {path.name} has no video stream")
    return container.streams.video[0]


def _stream_start(stream: av.stream.Stream) -> float:
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


def _rate(stream: av.video.stream.VideoStream) -> float | None:
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
        self.sampler = NearestSampler([t for t, _, _ in owners], tail_s)
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


def decode_pyav(
    path: Path, settings: Settings, duration_s: float | None = None, *, skip_unneeded: bool = True
) -> DecodedMedia:
    """The CPU decoder: one sequential, threaded pass with PyAV.

    With ``skip_unneeded`` the decoder drops non-reference frames (which no other frame
    is predicted from) while the stream is far from every sampling time and clip: about
    half the frames of a typical H.264 stream, never one that could be picked, so the
    result is the same as a full decode. Frame numbers come from timestamps then.
    """
    container = _open(path)
    with container:
        vstream = _video_stream(container, path)
        vstream.thread_type = "AUTO"  # frame + slice threads; ffmpeg picks the count
        astream = container.streams.audio[0] if container.streams.audio else None
        cc = vstream.codec_context
        if not cc.width or not cc.height:
            raise CorruptMediaError(f"decode: {path.name}: video stream states no frame size")
        fps = _rate(vstream)
        # Past its last frame a video lasts half a frame more, as far as "nearest" goes.
        tail = frame_duration_s(fps) / 2
        v_start = _stream_start(vstream)
        duration = duration_s or _stream_duration(container, vstream)
        starts = (
            clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips)
            if astream
            else []
        )
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
        track = _AudioTrack(v_start) if astream else None

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
        for packet in container.demux(*streams):
            if skip_unneeded and packet.stream is vstream and packet.pts is not None:
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
            for frame in decoded:
                if isinstance(frame, av.VideoFrame):
                    ts = (
                        (float(frame.time) - v_start)
                        if frame.time is not None
                        else count * 2 * tail
                    )
                    ts = max(ts, prev_ts)  # broken pts must not run backwards
                    if prev is not None:
                        take(prev, prev_index, prev_ts, samples.push(ts), clips.sampler.push(ts))
                    else:
                        samples.push(ts)
                        clips.sampler.push(ts)
                        quarter_turns = _quarter_turns(frame)
                    # Skipped frames leave gaps in the count; the timestamp knows the number.
                    index = int(round(ts * fps)) if fps and skip_unneeded else count
                    prev, prev_ts, prev_index = frame, ts, max(index, prev_index + 1)
                    count += 1
                elif isinstance(frame, av.AudioFrame) and track is not None:
                    track.add(frame)
        if prev is None:
            raise CorruptMediaError(f"decode: {path.name}: no decodable video frame")
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


def _quarter_turns(frame: av.VideoFrame) -> int:
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


class _AudioTrack:
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


# --- DALI ------------------------------------------------------------------------------


def _dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None if _has_nvidia_pkg() else False


def _has_nvidia_pkg() -> bool:
    return importlib.util.find_spec("nvidia") is not None


def _gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def _frame_times(path: Path) -> tuple[list[float], float | None, int, int]:
    """Presentation times of every video frame, from demuxing only (no decoding)."""
    container = _open(path)
    with container:
        vstream = _video_stream(container, path)
        start = _stream_start(vstream)
        pts = [
            float(p.pts * p.time_base) - start
            for p in container.demux(vstream)
            if p.pts is not None and p.size > 0
        ]
        return (
            sorted(pts),
            _rate(vstream),
            vstream.codec_context.width,
            vstream.codec_context.height,
        )


def _display_quarter_turns(path: Path) -> int:
    """The video's display rotation, read from its first decodable frame (PyAV, on the CPU).

    DALI's decoder returns the coded frames as stored; a phone's portrait video would
    come out sideways without this.
    """
    container = _open(path)
    with container:
        vstream = _video_stream(container, path)
        try:
            for frame in container.decode(vstream):
                return _quarter_turns(frame)
        except av.error.FFmpegError:
            return 0
    return 0


def _read_audio(path: Path) -> np.ndarray | None:
    container = _open(path)
    with container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        v_start = _stream_start(container.streams.video[0]) if container.streams.video else 0.0
        track = _AudioTrack(v_start)
        for frame in container.decode(astream):
            track.add(frame)
        return track.finish()


def _dali_frames(path: Path, device: str) -> np.ndarray:
    """All frames of ``path`` as RGB uint8 ``[F, H, W, 3]`` via ``fn.decoders.video``."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:
        raise ConfigurationError(
            "decoder: NVIDIA DALI is not installed (pip install nvidia-dali-cuda120 "
            "--extra-index-url https://pypi.nvidia.com)"
        ) from exc

    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)

    @pipeline_def(batch_size=1, num_threads=2, device_id=0 if device == "mixed" else None)
    def video_pipe():  # type: ignore[no-untyped-def]
        encoded = fn.external_source(name="encoded", dtype=types.UINT8)
        return fn.decoders.video(encoded, device=device)

    pipe = video_pipe()
    pipe.build()
    pipe.feed_input("encoded", [data])
    (out,) = pipe.run()
    if device == "mixed":
        out = out.as_cpu()
    return np.asarray(out.as_array()[0])


def decode_dali(
    path: Path, settings: Settings, duration_s: float | None = None, device: str | None = None
) -> DecodedMedia:
    """The DALI decoder. ``device``: ``mixed`` (GPU, the default when one is present) or ``cpu``.

    DALI returns every frame of the clip; the same nearest-time rule as the PyAV path
    then picks the samples and clip frames, so both decoders agree frame for frame.
    """
    if not _dali_available():
        raise ConfigurationError(
            "decoder: NVIDIA DALI is not installed (pip install nvidia-dali-cuda120 "
            "--extra-index-url https://pypi.nvidia.com); use DFD_DECODER=pyav"
        )
    device = device or ("mixed" if _gpu_present() else "cpu")
    times, fps, src_w, src_h = _frame_times(path)
    if not times:
        raise CorruptMediaError(f"decode: {path.name}: no video packets")
    try:
        video = _dali_frames(path, device)
    except ConfigurationError:
        raise
    except Exception as exc:  # DALI raises RuntimeError for anything it cannot decode
        raise CorruptMediaError(
            f"decode: DALI ({device}) cannot decode {path.name}: {exc}"
        ) from exc
    n = min(len(times), video.shape[0])
    times = times[:n]
    tail = frame_duration_s(fps) / 2
    duration = duration_s or (times[-1] + 2 * tail)
    n_clips = len(clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips))
    coded_w, coded_h = output_size(
        src_w, src_h, settings.decode_max_side_px, pixel_budget(settings, duration, n_clips)
    )
    # Upright as players show it, like the PyAV path (ffmpeg's autorotate).
    quarter_turns = _display_quarter_turns(path)
    out_w, out_h = (coded_h, coded_w) if quarter_turns % 2 else (coded_w, coded_h)

    def resized(i: int) -> np.ndarray:
        from PIL import Image

        img = video[i]
        if quarter_turns:
            img = np.ascontiguousarray(np.rot90(img, quarter_turns))
        if (img.shape[1], img.shape[0]) == (out_w, out_h):
            return img
        return np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.Resampling.BILINEAR))

    def number(i: int) -> int:
        # the PyAV path's numbering: presentation time x average rate
        return int(round(times[i] * fps)) if fps else i

    picks = nearest_indices(times, sample_times(settings.sample_fps, duration), tail)
    frames = tuple(
        SampledFrame(index=number(i), time_s=times[i], image=resized(i))
        for i in dict.fromkeys(picks)
    )

    audio = _read_audio(path)
    segments: list[LipsyncSegment] = []
    if audio is not None:
        for start in clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips):
            idx = nearest_indices(times, clip_times(start), tail)
            if len(idx) < LIPSYNC_FRAMES:
                continue
            grey = np.stack([_luma(resized(i)) for i in idx])
            segments.append(
                LipsyncSegment(
                    start_s=start, frame_indices=tuple(number(i) for i in idx), grey=grey
                )
            )
    return DecodedMedia(
        frames=frames,
        audio=audio,
        segments=tuple(segments),
        width=out_w,
        height=out_h,
        scale=coded_w / src_w,
        fps=fps,
        duration_s=duration,
        decoder="dali",
        frames_decoded=n,
        quarter_turns=quarter_turns,
    )


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, as ffmpeg's ``gray`` conversion and OpenCV's ``COLOR_RGB2GRAY`` compute it."""
    y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def audio_energy_db(audio: np.ndarray) -> float:
    """RMS level in dBFS (``-inf`` for silence); used to tell a silent track from speech."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else float("-inf")
