"""Probe and validate: real clips probe correctly; a hostile corpus fails fast and clearly."""

import json
import os
import shutil
import struct
import subprocess
import time

import pytest

from dfd.errors import CorruptMediaError, TooLargeError, UnsupportedMediaError
from dfd.settings import Settings
from dispatcher.cleanup import job_workspace
from dispatcher.errors import ProbeTimeoutError
from dispatcher.probe import MediaInfo, probe

pytestmark = pytest.mark.unit

CLIP = "bbaf2n.mpg"
BOUND_S = 5.0  # every file, hostile or not, is decided within this


def ffmpeg(*args):
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True, timeout=120
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media_dir):
    """Valid clips and hostile files, made once for the module."""
    d = tmp_path_factory.mktemp("probe-corpus")
    grid = media_dir / "grid" / CLIP
    ffmpeg("-i", grid, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", d / "h264.mp4")
    ffmpeg(
        "-i",
        grid,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-an",
        "-movflags",
        "+faststart",
        d / "faststart.mp4",
    )
    ffmpeg("-i", grid, "-vn", "-c:a", "aac", d / "audio.m4a")
    # ten hours of 16x16 at 1 fps: a few hundred KB
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=s=16x16:r=1",
        "-t",
        36000,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        d / "long.mp4",
    )
    ffmpeg("-i", grid, "-t", 1, "-c:v", "mjpeg", "-an", d / "mjpeg.avi")

    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video, whatever its name says\n" * 20)
    (d / "random.mp4").write_bytes(os.urandom(200_000))
    (d / "random_ftyp.mp4").write_bytes(b"\0\0\0\x18ftypisom" + os.urandom(200_000))
    (d / "png.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(1000))
    (d / "copy.mpg").write_bytes(grid.read_bytes())
    data = (d / "h264.mp4").read_bytes()  # moov at the end: cut, the index is gone
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    data = (d / "faststart.mp4").read_bytes()  # moov first: cut, half the frames are missing
    (d / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])
    (d / "huge.y4m").write_bytes(
        b"YUV4MPEG2 W100000 H100000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 100_000
    )
    (d / "huge.avi").write_bytes(_claim_huge_mjpeg((d / "mjpeg.avi").read_bytes()))
    # Cases tried by hand against the service (issue 16's hostile-media list).
    lavfi = ["-f", "lavfi", "-i"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast"]
    ffmpeg(*lavfi, "color=s=64x64:r=25", "-frames:v", 1, *x264, d / "one_frame.mp4")
    # two hours at 16x16: over the duration limit
    ffmpeg(*lavfi, "color=s=16x16:r=1", "-t", 7200, *x264, d / "two_hours.mp4")
    # a burst at 1000 fps for 2 s: 2000 frames in a small file
    ffmpeg(*lavfi, "testsrc=s=32x32:r=1000", "-t", 2, *x264, d / "burst_1000fps.mp4")
    # 50 audio streams beside one short video stream
    audio_in = [a for _ in range(50) for a in ("-f", "lavfi", "-t", 1, "-i", "sine=f=440")]
    maps = [a for i in range(51) for a in ("-map", str(i))]
    ffmpeg(*lavfi, "color=s=64x64:r=25", *audio_in, "-t", 1, *maps, *x264, "-c:a", "aac",
           d / "fifty_audio.mp4")  # fmt: skip
    # 8K flat colour: at the pixel limit, tiny on disk (the decode stage bounds its frames)
    ffmpeg(*lavfi, "color=s=7680x4320:r=1", "-t", 2, *x264, d / "flat_8k.mp4")
    # a polyglot: a PNG signature glued in front of a real MP4
    (d / "polyglot.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + (d / "h264.mp4").read_bytes())
    return d


def _claim_huge_mjpeg(avi: bytes) -> bytes:
    """Every JPEG frame and the AVI headers claim 65535x65535 / 100000x100000 pixels."""
    d = bytearray(avi)
    i = d.find(b"avih") + 8 + 8 * 4
    struct.pack_into("<II", d, i, 100_000, 100_000)
    j = d.find(b"strf") + 12
    struct.pack_into("<ii", d, j, 100_000, 100_000)
    k = 0
    while (k := d.find(b"\xff\xc0", k)) >= 0:  # SOF0: marker, length, precision, height, width
        d[k + 5 : k + 9] = b"\xff\xff\xff\xff"
        k += 2
    return bytes(d)


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", probe_timeout_s=15)


def timed_probe(path, settings):
    started = time.monotonic()
    try:
        return probe(path, settings)
    finally:
        assert time.monotonic() - started < BOUND_S


def test_grid_mpeg1_clip(media_dir, settings):
    info = timed_probe(media_dir / "grid" / CLIP, settings)
    assert isinstance(info, MediaInfo)
    assert (info.kind, info.container, info.video_codec, info.audio_codec) == (
        "mpeg-ps",
        "mpeg",
        "mpeg1video",
        "mp2",
    )
    assert (info.width, info.height) == (360, 288)
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    assert info.frame_count == 75
    assert info.has_audio and info.audio_sample_rate == 44100
    assert info.size_bytes == (media_dir / "grid" / CLIP).stat().st_size


def test_h264_mp4(corpus, settings):
    info = timed_probe(corpus / "h264.mp4", settings)
    assert (info.kind, info.video_codec, info.audio_codec) == ("mp4", "h264", "aac")
    assert (info.width, info.height, info.frame_count) == (360, 288, 75)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    silent = timed_probe(corpus / "faststart.mp4", settings)
    assert not silent.has_audio and silent.audio_codec is None


def test_an_audio_file_is_probed_as_audio(corpus, settings):
    info = timed_probe(corpus / "audio.m4a", settings)
    assert not info.has_video and info.video_codec is None
    assert (info.audio_codec, info.width, info.height, info.frame_count) == ("aac", 0, 0, 0)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    assert info.has_audio and info.audio_sample_rate


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("zero.mp4", CorruptMediaError, "empty file"),
        ("text.mp4", UnsupportedMediaError, "expected a video or an audio file, got text"),
        ("random.mp4", UnsupportedMediaError, "unrecognised data"),
        ("png.mp4", UnsupportedMediaError, "PNG image"),
        ("random_ftyp.mp4", CorruptMediaError, "cannot be opened"),
        ("truncated.mp4", CorruptMediaError, "cannot be opened"),
        ("truncated_faststart.mp4", CorruptMediaError, "truncated"),
        ("huge.y4m", TooLargeError, "claims 100000x100000"),
        ("huge.avi", CorruptMediaError, "no picture size"),
        ("long.mp4", TooLargeError, "expected at most 900 s, got 36000.0 s"),
        ("two_hours.mp4", TooLargeError, "expected at most 900 s, got 7200.0 s"),
        ("polyglot.mp4", UnsupportedMediaError, "PNG image"),
    ],
)
def test_hostile_corpus_fails_clearly_fast_and_leaves_no_folder(
    corpus, settings, name, error, message
):
    with pytest.raises(error, match=message) as info, job_workspace(settings, "job-1") as work:
        shutil.copy(corpus / name, work / name)
        timed_probe(work / name, settings)
    assert name in str(info.value)
    assert list(settings.tmp_dir.iterdir()) == []


def test_limits_come_from_settings(corpus, tmp_path):
    small = Settings(data_dir=tmp_path, max_width=320, max_height=240)
    with pytest.raises(TooLargeError, match="at most 320x240 pixels, got 360x288"):
        probe(corpus / "h264.mp4", small)
    with pytest.raises(TooLargeError, match="at most 2 s"):
        probe(corpus / "h264.mp4", Settings(data_dir=tmp_path, max_duration_s=2))
    with pytest.raises(TooLargeError, match="at most 50 frames"):
        probe(corpus / "copy.mpg", Settings(data_dir=tmp_path, max_frames=50))


def test_a_probe_that_overruns_its_time_limit_is_killed(corpus, tmp_path):
    s = Settings(data_dir=tmp_path, probe_timeout_s=0.01)
    started = time.monotonic()
    with pytest.raises(ProbeTimeoutError, match="not read within 0.01 s"):
        probe(corpus / "h264.mp4", s)
    assert time.monotonic() - started < 2.0


def test_a_probe_without_enough_memory_is_refused_not_crashing_the_worker(corpus, tmp_path):
    s = Settings(data_dir=tmp_path, probe_memory_bytes=30_000_000)
    with pytest.raises(CorruptMediaError, match="h264.mp4"):
        probe(corpus / "h264.mp4", s)


def test_the_probe_child_confines_itself_before_it_opens_the_file(tmp_path):
    # The limits are the child's own first step (no preexec_fn in a fork of a threaded
    # worker): its address space, CPU seconds, no files written, no core dumps.
    import sys

    code = (
        "import json, resource; from dispatcher.probe import _confine; "
        "_confine(memory_bytes=400_000_000, cpu_s=16); "
        "print(json.dumps([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) "
        "for n in ('AS', 'CPU', 'FSIZE', 'CORE')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == [[400_000_000] * 2, [16, 16], [0, 0], [0, 0]]


def test_audio_outlasting_the_video_is_not_truncation(media_dir, settings, tmp_path):
    # Matroska states no per-stream duration; the container's covers the audio, which here
    # runs 3 s past the last frame. The file is whole; the video lasts 3 s.
    grid = media_dir / "grid" / CLIP
    longer = tmp_path / "audio_longer.mkv"
    ffmpeg("-i", grid, "-af", "apad=pad_dur=3", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "flac", longer)  # fmt: skip
    info = timed_probe(longer, settings)
    assert info.frame_count == 75
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    # Cut in half, the same file is truncated (audio and video end early alike).
    cut = tmp_path / "audio_longer_cut.mkv"
    data = longer.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptMediaError, match="truncated"):
        timed_probe(cut, settings)


class _ProbeKiller:
    """Kills the probe children of this process with ``sig`` as soon as they run the
    probe (the first ``times`` of them), as the OOM killer or a crash would."""

    def __init__(self, sig: int, times: int) -> None:
        import threading

        self.sig, self.times, self.killed = sig, times, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        seen: set[int] = set()
        while not self._stop.is_set() and self.killed < self.times:
            for child in me.children():
                try:
                    if child.pid in seen or "dispatcher.probe" not in child.cmdline():
                        continue
                    os.kill(child.pid, self.sig)
                except (psutil.Error, ProcessLookupError):
                    continue
                seen.add(child.pid)
                self.killed += 1
            time.sleep(0.002)

    def __enter__(self) -> "_ProbeKiller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_a_probe_killed_once_from_outside_is_tried_again(media_dir, settings):
    """A valid clip whose demuxer is SIGKILLed once (an OOM kill, a restart) still probes."""
    import signal

    with _ProbeKiller(signal.SIGKILL, times=1) as killer:
        info = probe(media_dir / "grid" / CLIP, settings)
    assert killer.killed == 1
    assert info.frame_count > 0


def test_a_probe_killed_from_outside_twice_is_transient_not_the_file_s_fault(media_dir, settings):
    import signal

    from dfd.errors import InputError, TransientError
    from dispatcher.errors import ProbeKilledError

    with _ProbeKiller(signal.SIGKILL, times=2) as killer, pytest.raises(ProbeKilledError) as info:
        probe(media_dir / "grid" / CLIP, settings)
    assert killer.killed == 2
    assert isinstance(info.value, TransientError) and not isinstance(info.value, InputError)
    assert "SIGKILL" in str(info.value) and "not by the file" in str(info.value)


def test_a_large_worker_does_not_make_a_killed_probe_look_out_of_memory(media_dir, tmp_path):
    # The probe child is forked from the worker: until it execs it holds the worker's pages,
    # which its rusage counts. A worker holding more than the child's limit must still see a
    # child killed from outside as killed, not as a file that ran it out of memory.
    import signal

    import numpy as np

    from dispatcher.errors import ProbeKilledError

    limit = 700_000_000
    settings = Settings(data_dir=tmp_path / "data", probe_timeout_s=15, probe_memory_bytes=limit)
    held = np.ones(limit // 8, dtype=np.float64)  # resident: every page written
    try:
        with _ProbeKiller(signal.SIGKILL, times=2), pytest.raises(ProbeKilledError):
            probe(media_dir / "grid" / CLIP, settings)
        assert probe(media_dir / "grid" / CLIP, settings).frame_count > 0  # it fits its limit
    finally:
        del held


def test_a_demuxer_that_crashes_twice_is_refused_as_hostile(media_dir, settings):
    import signal

    with _ProbeKiller(signal.SIGSEGV, times=2) as killer, pytest.raises(CorruptMediaError) as info:
        probe(media_dir / "grid" / CLIP, settings)
    assert killer.killed == 2
    assert "SIGSEGV" in str(info.value) and "twice" in str(info.value)


def test_out_of_memory_kills_are_named_and_blamed_where_they_belong() -> None:
    import signal

    from dfd.errors import InputError, TransientError
    from dispatcher.errors import ProbeOutOfMemoryError
    from dispatcher.probe import _Killed, killed_error

    limit = 1_000_000_000
    # SIGKILLed with its memory at its own limit: the file needs too much of it.
    at_limit = killed_error("a.mp4", _Killed(signal.SIGKILL, 2.0, 950_000_000, True), limit)
    assert isinstance(at_limit, CorruptMediaError)
    assert "out of memory" in str(at_limit)
    # The kernel's OOM killer, well below its limit: the worker's machine is short.
    kernel = killed_error("a.mp4", _Killed(signal.SIGKILL, 2.0, 80_000_000, True), limit)
    assert isinstance(kernel, ProbeOutOfMemoryError) and isinstance(kernel, TransientError)
    assert not isinstance(kernel, InputError)
    assert kernel.type == "out-of-memory" and "OOM killer" in str(kernel)
    # Its CPU limit (RLIMIT_CPU): the file made it spin.
    cpu = killed_error("a.mp4", _Killed(signal.SIGXCPU, 16.0, 80_000_000, False), limit)
    assert isinstance(cpu, ProbeTimeoutError)


def test_the_oom_kill_counter_is_read_where_the_cgroup_shows_it() -> None:
    from pathlib import Path

    from dispatcher.probe import oom_kills

    readable = any(
        Path(p).exists()
        for p in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
    )
    count = oom_kills()
    assert (count is not None) is readable
    assert count is None or count >= 0


@pytest.mark.parametrize(
    ("name", "frames", "size"),
    [
        ("one_frame.mp4", 1, (64, 64)),
        ("burst_1000fps.mp4", 2000, (32, 32)),
        ("fifty_audio.mp4", 25, (64, 64)),
        ("flat_8k.mp4", 2, (7680, 4320)),
    ],
)
def test_odd_but_valid_media_probe_within_the_bound(corpus, settings, name, frames, size):
    """Valid files at the edges (one frame, 1000 fps, 50 audio streams, 8K) are accepted
    as they are, within the time bound; what later stages do with them is theirs."""
    info = timed_probe(corpus / name, settings)
    assert info.frame_count == frames
    assert (info.width, info.height) == size
