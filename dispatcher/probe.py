"""The ``probe`` stage, probe and validate: is this media dfd can and may process?

A video (any container with a video stream, animated GIF included) or an audio file
(WAV, FLAC, MP3, M4A/AAC, Ogg/Opus: audio streams only, analysed by the audio detectors).

Magic bytes first (``dfd.sniff``: an empty file, text, an image or random bytes are
refused without opening a demuxer), then PyAV in a child process with a hard time limit
and an address-space limit: a hostile file that makes the demuxer spin, allocate wildly
or crash costs that child, never the worker. The child checks the declared dimensions,
duration and frame count before anything is decoded, then demuxes every video packet
(bounded by the limits) to count frames and catch truncation, and decodes the first
frame.

A child killed by a signal is not taken for the file's fault at once: a crash signal
(SIGSEGV, SIGABRT, ...) may be, an outside kill (the OOM killer, an operator, a
restart) is not. The child is run once more; a second crash is the file's doing
(corrupt or hostile), a second outside kill a transient failure of the worker, retried
later. An out-of-memory kill is named as such: the kernel's OOM killer (the memory
cgroup counted a kill) or SIGKILL with the child's peak memory at its limit.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfd.errors import CorruptMediaError, DfdError, TooLargeError, UnsupportedMediaError
from dfd.sniff import HEAD_BYTES, sniff
from dispatcher.errors import ProbeKilledError, ProbeOutOfMemoryError, ProbeTimeoutError

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]
_ERRORS: dict[str, type[DfdError]] = {
    cls.__name__: cls for cls in (CorruptMediaError, TooLargeError, UnsupportedMediaError)
}
# A file whose demuxed frames fall this far short of what its header declares is truncated.
_TRUNCATED_RATIO = 0.9
# Signals a demuxer raises on itself when the file breaks it (and RLIMIT_CPU's SIGXCPU).
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGXCPU}
)
# A SIGKILLed child whose peak resident memory reached this share of its limit ran out of it.
_AT_LIMIT = 0.9


@dataclass(frozen=True)
class MediaInfo:
    """What probing found.

    Attributes:
        path: The file probed.
        size_bytes: Its size.
        container: The demuxer's name (``mov,mp4,m4a,3gp,3g2,mj2``, ``mpeg``, ``matroska,webm``).
        kind: The container by magic bytes (``dfd.sniff``: ``mp4``, ``mpeg-ps``, ...).
        video_codec: Codec of the first video stream (``h264``, ``mpeg1video``, ...), or
            ``None`` for an audio file.
        audio_codec: Codec of the first audio stream, or ``None``.
        width: Coded width, pixels.
        height: Coded height, pixels.
        fps: Average frame rate.
        duration_s: Duration, seconds.
        frame_count: Video frames demuxed (not merely declared).
        has_audio: Whether there is an audio stream.
        audio_sample_rate: Its sample rate, Hz, or ``None``.
        audio_channels: Its channel count, or ``None``.

    An audio file has no video stream: ``video_codec`` is ``None`` and ``width``,
    ``height``, ``fps`` and ``frame_count`` are 0.
    """

    path: Path
    size_bytes: int
    container: str
    kind: str
    video_codec: str | None
    audio_codec: str | None
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    has_audio: bool
    audio_sample_rate: int | None = None
    audio_channels: int | None = None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None


@dataclass(frozen=True)
class _Limits:
    max_width: int
    max_height: int
    max_duration_s: float
    max_frames: int


def probe(path: Path, settings: Settings) -> MediaInfo:
    """Probe and validate a file, within ``probe_timeout_s`` and ``probe_memory_bytes``.

    Raises:
        UnsupportedMediaError: Not a video container (text, image, audio only, unknown),
            or no video stream.
        CorruptMediaError: Unreadable, truncated or hostile (includes `ProbeTimeoutError`).
        TooLargeError: Dimensions, duration or frame count over the settings' limits.
    """
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise CorruptMediaError(f"probe: cannot read {name} ({exc.strerror})") from exc
    if size == 0:
        raise CorruptMediaError(f"probe: {name}: expected a video, got an empty file (0 bytes)")
    sniffed = sniff(head)
    if not sniffed.may_hold_media:
        raise UnsupportedMediaError(
            f"probe: {name}: expected a video or an audio file, got {sniffed.detail}"
        )

    limits = _Limits(
        settings.max_width, settings.max_height, settings.max_duration_s, settings.max_frames
    )
    if sniffed.kind == "y4m":
        _check_y4m_header(head, name, limits)
    answer = _run_child_retrying(path, limits, settings)
    if "error" in answer:
        error = answer["error"]
        raise _ERRORS.get(error["class"], CorruptMediaError)(error["message"])
    fields = answer["info"]
    return MediaInfo(path=path, size_bytes=size, kind=sniffed.kind, **fields)


def _check_y4m_header(head: bytes, name: str, limits: _Limits) -> None:
    # The raw-video header states the frame size in plain text; the demuxer would size
    # every packet from it, so an absurd claim is refused before one is opened.
    line = head.split(b"\n", 1)[0].decode("ascii", errors="replace").split()
    sizes = {tag[0]: tag[1:] for tag in line[1:] if tag[:1] in ("W", "H")}
    try:
        width, height = int(sizes["W"]), int(sizes["H"])
    except (KeyError, ValueError) as exc:
        raise CorruptMediaError(
            f"probe: {name}: the YUV4MPEG2 header declares no valid frame size"
        ) from exc
    if width > limits.max_width or height > limits.max_height:
        raise TooLargeError(
            f"probe: {name}: expected at most {limits.max_width}x{limits.max_height} pixels, "
            f"it claims {width}x{height}"
        )


@dataclass
class _Killed(Exception):
    """The probe child died by a signal."""

    signal: signal.Signals
    elapsed_s: float
    peak_rss_bytes: int
    kernel_oom: bool


def _run_child_retrying(path: Path, limits: _Limits, settings: Settings) -> dict[str, Any]:
    """`_run_child`, run once more if the child was killed by a signal."""
    try:
        return _run_child(path, limits, settings)
    except _Killed as first:
        if first.signal == signal.SIGXCPU:  # its CPU limit: the file made it spin
            raise killed_error(path.name, first, settings.probe_memory_bytes) from None
        log.warning(
            "probe: the demuxer was killed; trying once more",
            extra={"file": path.name, "signal": first.signal.name, "oom": first.kernel_oom},
        )
    try:
        return _run_child(path, limits, settings)
    except _Killed as second:
        raise killed_error(path.name, second, settings.probe_memory_bytes) from None


def killed_error(name: str, killed: _Killed, memory_limit: int) -> DfdError:
    """What the probe child's last death by a signal means, for a file called ``name``.

    Out of memory at its own limit, or a crash signal twice: the file's fault (it is
    refused). Killed by the kernel's OOM killer below its limit, or from outside
    (SIGKILL, SIGTERM): the worker's trouble, a transient error.
    """
    sig = killed.signal.name
    at_limit = killed.peak_rss_bytes >= _AT_LIMIT * memory_limit
    if killed.signal == signal.SIGKILL and at_limit:
        return CorruptMediaError(
            f"probe: {name} ran the demuxer out of memory (killed at its {memory_limit} byte "
            "limit); refusing it"
        )
    if killed.kernel_oom:
        return ProbeOutOfMemoryError(
            f"probe: the demuxer reading {name} was killed by the kernel's OOM killer "
            f"({sig} at {killed.peak_rss_bytes} bytes, below its {memory_limit} byte limit): "
            "the worker is out of memory"
        )
    if killed.signal == signal.SIGXCPU:
        return ProbeTimeoutError(
            f"probe: {name} kept the demuxer busy past its CPU limit ({killed.elapsed_s:.1f} s); "
            "refusing it as hostile or corrupt"
        )
    if killed.signal in _CRASH_SIGNALS:
        return CorruptMediaError(
            f"probe: reading {name} killed the demuxer ({sig} after {killed.elapsed_s:.1f} s, "
            "twice); refusing it as hostile or corrupt"
        )
    return ProbeKilledError(
        f"probe: the demuxer reading {name} was stopped from outside ({sig} after "
        f"{killed.elapsed_s:.1f} s, twice), not by the file"
    )


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this memory cgroup, or
    ``None`` where that is not readable (cgroup v2 ``memory.events``, v1 ``memory.oom_control``)."""
    for name in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return None


def _run_child(path: Path, limits: _Limits, settings: Settings) -> dict[str, Any]:
    timeout = settings.probe_timeout_s
    memory = settings.probe_memory_bytes

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-s",
        "-m",
        "dispatcher.probe",
        str(path),
        json.dumps(asdict(limits)),
        json.dumps({"memory_bytes": memory, "cpu_s": int(timeout) + 1}),
    ]
    oom_before = oom_kills()
    started = time.monotonic()
    # Our own wait loop, for the child's own peak memory; its pipes are drained meanwhile (it may
    # write no files: RLIMIT_FSIZE is 0). The child sets its own limits (`_confine`) before it
    # opens the file: a ``preexec_fn`` would run Python in a fork of this worker, which is not
    # safe while the worker has threads (the overlapped pipeline's) and makes the spawn copy
    # the worker's page tables where ``vfork`` shares them.
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(_ROOT),
    )
    drained: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: drained.__setitem__(k, f.read()), daemon=True)
        for k, f in (("out", child.stdout), ("err", child.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        status, peak = _wait(child, timeout)
        for reader in readers:
            reader.join(timeout=5)
    finally:
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    elapsed = time.monotonic() - started
    if status is None:
        raise ProbeTimeoutError(
            f"probe: {path.name} was not read within {timeout:g} s; refusing it as hostile or corrupt"
        )
    if os.WIFSIGNALED(status):
        after = oom_kills()
        raise _Killed(
            signal=signal.Signals(os.WTERMSIG(status)),
            elapsed_s=elapsed,
            peak_rss_bytes=peak,
            kernel_oom=oom_before is not None and after is not None and after > oom_before,
        )
    stdout, stderr = drained.get("out", b""), drained.get("err", b"")
    try:
        return json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        if "MemoryError" in tail[0]:
            raise CorruptMediaError(
                f"probe: {path.name} needs more than {memory} bytes to open; refusing it"
            ) from exc
        raise CorruptMediaError(f"probe: {path.name} could not be read ({tail[0]})") from exc


def _peak_rss(pid: int) -> int:
    """The peak resident memory of process ``pid`` so far (``VmHWM``), in bytes; 0 once it
    has exited or when the system does not say."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _wait(child: subprocess.Popen[bytes], timeout_s: float) -> tuple[int | None, int]:
    """Wait for ``child`` up to ``timeout_s``; ``(wait status, peak resident bytes)``, or
    ``(None, peak)`` after killing it at the deadline.

    The peak is the child's own, read from ``/proc`` while it runs (a file that makes the
    demuxer grow past its limit takes far longer than the 20 ms between reads). Its rusage
    would not do: ``ru_maxrss`` of a child forked from a large worker counts the worker's
    pages it held until exec, so a child killed from outside would look out of memory.
    ``Popen`` returns once the child has exec'd, so every read here is of the probe itself."""
    deadline = time.monotonic() + timeout_s
    pause = 0.002
    peak = 0
    while True:
        peak = max(peak, _peak_rss(child.pid))
        pid, status, _ = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return status, peak
        if time.monotonic() >= deadline:
            child.kill()
            os.wait4(child.pid, 0)
            child.returncode = -signal.SIGKILL
            return None, peak
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


# --- the child ----------------------------------------------------------------------


def _probe_in_child(path: Path, limits: _Limits) -> dict[str, Any]:
    """Open, check and demux; returns the `MediaInfo` fields that need a demuxer."""
    import av  # only the child imports it

    name = path.name
    with path.open("rb") as fh:
        if sniff(fh.read(HEAD_BYTES)).kind == "webp":
            return _probe_animation(path, limits)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(
            f"probe: {name}: the container cannot be opened ({_why(exc)})"
        ) from exc
    with container:
        if not container.streams.video:
            if container.streams.audio:
                return _probe_audio(container, limits, name)
            raise UnsupportedMediaError(
                f"probe: {name}: expected a video or an audio stream, found none"
            )
        video = container.streams.video[0]
        ctx = video.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        codec = ctx.name if ctx.codec else None
        if not codec:
            raise UnsupportedMediaError(f"probe: {name}: no decoder for the video stream")
        if width <= 0 or height <= 0:
            raise CorruptMediaError(f"probe: {name}: the video stream declares no picture size")
        if width > limits.max_width or height > limits.max_height:
            raise TooLargeError(
                f"probe: {name}: expected at most {limits.max_width}x{limits.max_height} pixels, "
                f"got {width}x{height}"
            )
        rate = video.average_rate or video.guessed_rate or video.base_rate
        fps = float(rate) if rate else 0.0
        declared = _declared_duration(container, video)
        if declared is not None and declared > limits.max_duration_s:
            raise TooLargeError(
                f"probe: {name}: expected at most {limits.max_duration_s:g} s, got {declared:.1f} s"
            )
        if video.frames and video.frames > limits.max_frames:
            raise TooLargeError(
                f"probe: {name}: expected at most {limits.max_frames} frames, it declares {video.frames}"
            )
        if declared is None and fps and video.frames:
            declared = video.frames / fps

        frames, last_s, decoded, audio_end_s = _demux(container, video, limits, name)
        if frames == 0:
            raise CorruptMediaError(f"probe: {name}: the video stream holds no frames")
        if not decoded:
            raise CorruptMediaError(f"probe: {name}: no frame of the video stream could be decoded")
        if video.frames and frames < _TRUNCATED_RATIO * video.frames:
            raise CorruptMediaError(
                f"probe: {name}: truncated: {frames} of the {video.frames} frames it declares are there"
            )
        duration = declared if declared else last_s
        if not fps and duration:
            fps = frames / duration
        if duration and last_s and last_s < _TRUNCATED_RATIO * duration - 1.0:
            stream_declared = bool(video.duration and video.time_base)
            if stream_declared or audio_end_s < _TRUNCATED_RATIO * duration - 1.0:
                raise CorruptMediaError(
                    f"probe: {name}: truncated: frames end at {last_s:.1f} s of the {duration:.1f} s it declares"
                )
            # The container's duration covers an audio track that outlasts the video
            # (Matroska states none per stream): the video lasts until its last frame ends.
            duration = last_s + (1 / fps if fps else 0.0)
        audio = container.streams.audio[0] if container.streams.audio else None
        actx = audio.codec_context if audio is not None else None
        return {
            "container": container.format.name,
            "video_codec": codec,
            "audio_codec": actx.name if actx is not None and actx.codec else None,
            "width": width,
            "height": height,
            "fps": round(fps, 6),
            "duration_s": round(float(duration or 0.0), 6),
            "frame_count": frames,
            "has_audio": audio is not None,
            "audio_sample_rate": int(actx.sample_rate)
            if actx is not None and actx.sample_rate
            else None,
            "audio_channels": int(actx.channels) if actx is not None and actx.channels else None,
        }


def _probe_animation(path: Path, limits: _Limits) -> dict[str, Any]:
    """An animated WebP, read with Pillow (FFmpeg decodes no animated WebP)."""
    from PIL import Image, UnidentifiedImageError

    name = path.name
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width > limits.max_width or height > limits.max_height:
                raise TooLargeError(
                    f"probe: {name}: expected at most {limits.max_width}x{limits.max_height} "
                    f"pixels, got {width}x{height}"
                )
            count = int(getattr(image, "n_frames", 1))
            if count > limits.max_frames:
                raise TooLargeError(
                    f"probe: {name}: expected at most {limits.max_frames} frames, it holds {count}"
                )
            duration = 0.0
            for index in range(count):
                image.seek(index)
                image.load()  # Pillow reads a frame's duration when it loads the frame
                duration += float(image.info.get("duration") or 100) / 1000
            image.seek(0)
            image.load()
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError) as exc:
        raise CorruptMediaError(f"probe: {name}: the animation cannot be read ({exc})") from exc
    if duration > limits.max_duration_s:
        raise TooLargeError(
            f"probe: {name}: expected at most {limits.max_duration_s:g} s, got {duration:.1f} s"
        )
    return {
        "container": "webp",
        "video_codec": "webp",
        "audio_codec": None,
        "width": width,
        "height": height,
        "fps": round(count / duration, 6) if duration else 0.0,
        "duration_s": round(duration, 6),
        "frame_count": count,
        "has_audio": False,
    }


def _probe_audio(container: Any, limits: _Limits, name: str) -> dict[str, Any]:
    """An audio file: its duration within the limit, and a first frame that decodes."""
    import av

    audio = container.streams.audio[0]
    actx = audio.codec_context
    if not actx.codec:
        raise UnsupportedMediaError(f"probe: {name}: no decoder for the audio stream")
    declared = _declared_duration(container, audio)
    if declared is not None and declared > limits.max_duration_s:
        raise TooLargeError(
            f"probe: {name}: expected at most {limits.max_duration_s:g} s, got {declared:.1f} s"
        )
    end = 0.0
    decoded = False
    try:
        for packet in container.demux(audio):
            if packet.pts is None and packet.size == 0:
                continue
            if packet.pts is not None and packet.time_base is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if end > limits.max_duration_s:
                    raise TooLargeError(
                        f"probe: {name}: expected at most {limits.max_duration_s:g} s, it holds more"
                    )
            if not decoded:
                decoded = bool(packet.decode())
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"probe: {name}: the audio cannot be read ({_why(exc)})") from exc
    if not decoded:
        raise CorruptMediaError(f"probe: {name}: no frame of the audio stream could be decoded")
    duration = declared if declared else end
    return {
        "container": container.format.name,
        "video_codec": None,
        "audio_codec": actx.name,
        "width": 0,
        "height": 0,
        "fps": 0.0,
        "duration_s": round(float(duration or 0.0), 6),
        "frame_count": 0,
        "has_audio": True,
        "audio_sample_rate": int(actx.sample_rate) if actx.sample_rate else None,
        "audio_channels": int(actx.channels) if actx.channels else None,
    }


def _declared_duration(container: Any, video: Any) -> float | None:
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _demux(
    container: Any, video: Any, limits: _Limits, name: str
) -> tuple[int, float, bool, float]:
    """Count video packets up to the limits and decode the first frame.

    Returns:
        ``(video packets, last video time from the first, decoded, end of the last
        audio packet from the first video one)``; the audio's end tells a whole file whose
        audio outlasts the video from a truncated one.
    """
    import av

    video.codec_context.thread_count = 1  # one frame needs no thread pool
    frames, decoded = 0, False
    first_pts: int | None = None
    last_s = 0.0
    audio_end: float | None = None  # seconds, the audio stream's own clock
    tb = video.time_base or Fraction(1, 90000)
    # Only a duration from the container (no per-stream one) can be the audio's; then the
    # audio's end is worth its packets.
    stream_declared = bool(video.duration and video.time_base)
    audio = container.streams.audio[0] if container.streams.audio and not stream_declared else None
    try:
        for packet in container.demux(*(s for s in (video, audio) if s is not None)):
            if packet.size == 0 and packet.pts is None:
                continue  # the flush packet
            if packet.stream is not video:
                if packet.pts is not None and packet.time_base is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    audio_end = end if audio_end is None else max(audio_end, end)
                continue
            frames += 1
            if frames > limits.max_frames:
                raise TooLargeError(
                    f"probe: {name}: expected at most {limits.max_frames} frames, it holds more"
                )
            if packet.pts is not None:
                if first_pts is None:
                    first_pts = packet.pts
                last_s = max(last_s, float((packet.pts - first_pts) * tb))
                if last_s > limits.max_duration_s:
                    raise TooLargeError(
                        f"probe: {name}: expected at most {limits.max_duration_s:g} s, it runs longer"
                    )
            if not decoded:
                try:
                    decoded = bool(packet.decode())
                except av.error.FFmpegError:
                    if frames > 16:  # a few broken leading packets are tolerated, a stream is not
                        raise
        if not decoded:
            decoded = any(True for _ in video.codec_context.decode(None))
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(
            f"probe: {name}: the video stream is truncated or unreadable after {frames} frames ({_why(exc)})"
        ) from exc
    audio_end_s = 0.0
    if audio_end is not None and first_pts is not None:
        audio_end_s = audio_end - float(first_pts * tb)
    return frames, last_s, decoded, audio_end_s


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _confine(memory_bytes: int, cpu_s: int) -> None:
    """The probe child's limits, set by the child itself before it opens the file."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # it writes no files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _main(argv: list[str]) -> int:
    _confine(**json.loads(argv[3]))
    path, limits = Path(argv[1]), _Limits(**json.loads(argv[2]))
    try:
        out: dict[str, Any] = {"info": _probe_in_child(path, limits)}
    except DfdError as exc:
        cls = next((c for c in type(exc).__mro__ if c.__name__ in _ERRORS), CorruptMediaError)
        out = {"error": {"class": cls.__name__, "message": str(exc)}}
    except MemoryError:
        out = {
            "error": {
                "class": "CorruptMediaError",
                "message": f"probe: {path.name}: opening it needs more memory than allowed; refusing it",
            }
        }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
