"""The DALI decoder (``fn.decoders.video``, ``mixed`` on a GPU; DALI's CPU build decodes
VP8/VP9/MJPEG only). DALI is imported lazily and its absence is said plainly; frame times
come from demuxing packets with PyAV (cheap: no decoding), audio from PyAV as well, since
DALI does not read audio from containers."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dfd.errors import ConfigurationError, CorruptMediaError
from dfd.settings import Settings
from dfd.specs import LIPSYNC_FRAMES
from dispatcher.decode_pyav import (
    frame_rate,
    open_container,
    read_audio,
    rotation_turns,
    stream_start,
    video_stream,
)
from dispatcher.media import (
    DecodedMedia,
    LipsyncSegment,
    SampledFrame,
    luma,
    output_size,
    pixel_budget,
)
from dispatcher.sampling import (
    clip_starts,
    clip_times,
    frame_duration_s,
    nearest_indices,
    sample_times,
)


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None if _has_nvidia_pkg() else False


def _has_nvidia_pkg() -> bool:
    return importlib.util.find_spec("nvidia") is not None


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def _frame_times(path: Path) -> tuple[list[float], float | None, int, int]:
    """Presentation times of every video frame, from demuxing only (no decoding)."""
    container = open_container(path)
    with container:
        vstream = video_stream(container, path)
        start = stream_start(vstream)
        pts = [
            float(p.pts * p.time_base) - start
            for p in container.demux(vstream)
            if p.pts is not None and p.size > 0
        ]
        return (
            sorted(pts),
            frame_rate(vstream),
            vstream.codec_context.width,
            vstream.codec_context.height,
        )


def _display_quarter_turns(path: Path) -> int:
    """The video's display rotation, read from its first decodable frame (PyAV, on the CPU).

    DALI's decoder returns the coded frames as stored; a phone's portrait video would
    come out sideways without this.
    """
    container = open_container(path)
    with container:
        vstream = video_stream(container, path)
        try:
            for frame in container.decode(vstream):
                return rotation_turns(frame)
        except av.error.FFmpegError:
            return 0
    return 0


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
    if not dali_available():
        raise ConfigurationError(
            "decoder: NVIDIA DALI is not installed (pip install nvidia-dali-cuda120 "
            "--extra-index-url https://pypi.nvidia.com); use DFD_DECODER=pyav"
        )
    device = device or ("mixed" if gpu_present() else "cpu")
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

    audio = read_audio(path)
    segments: list[LipsyncSegment] = []
    if audio is not None:
        for start in clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips):
            idx = nearest_indices(times, clip_times(start), tail)
            if len(idx) < LIPSYNC_FRAMES:
                continue
            grey = np.stack([luma(resized(i)) for i in idx])
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
