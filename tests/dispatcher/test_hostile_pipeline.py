"""Hostile media through the whole pipeline (``dispatcher.pipeline.analyze``, real decoders,
the session Triton), each case bounded in time and in the memory of the process running
it (this one, as a worker's work horse would: its RSS and its probe child's, sampled with
psutil). ``test_probe.py`` checks the probe stage alone on its corpus; these files are the
ones that pass the probe's header checks or reach the later stages, made with ffmpeg here.
Each gets its documented outcome: a clear input error naming the file, or a bounded result.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from dfd.errors import CorruptMediaError, InputError, TooLargeError
from dfd.schemas import Result
from dfd.settings import Settings
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIME_BOUND_S = 60.0  # per case, on a loaded two-core machine
# Growth of this process and its children over the case. The probe child alone is a fresh
# Python of about 250-300 MiB, and a long test session's allocator adds noise (a truncated
# MP4 measured +281 MiB alone and +607 MiB late in a full run), so the bound is set to
# catch a runaway allocation (several GiB), not to measure a case's footprint.
MEMORY_BOUND_BYTES = 1024 * 2**20
# Tighter bounds where a case's footprint is known. The 3000-frame 16x16 GIF measured
# +48 MiB (its probe child about 36 of it); it grew +309 to +380 MiB while the face
# detector took 16 upscaled 640x640 frames a request (``dispatcher.faces.detect_batch``).
CASE_MEMORY_BOUND_BYTES = {"many_frames.gif": 160 * 2**20}


def ffmpeg(*args: object) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True, timeout=120
    )


LAVFI = ("-f", "lavfi", "-i")
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def _ebml(element_id: bytes, payload: bytes) -> bytes:
    """One EBML element with an 8-byte size."""
    return element_id + struct.pack(">Q", len(payload) | (1 << 56)) + payload


def _nested_tags(depth: int) -> bytes:
    """A Matroska ``Tags`` element whose ``SimpleTag`` nests ``depth`` levels deep."""
    inner = _ebml(b"\x45\xa3", b"DEEP") + _ebml(b"\x44\x87", b"x")  # TagName, TagString
    for _ in range(depth):
        inner = _ebml(b"\x67\xc8", _ebml(b"\x45\xa3", b"DEEP") + inner)  # SimpleTag
    return _ebml(b"\x12\x54\xc3\x67", _ebml(b"\x73\x73", inner))  # Tags > Tag


def _huge_wav(sample_rate: int = 16_000) -> bytes:
    """One second of a 16-bit tone whose RIFF and data chunks declare 4 GiB of samples."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *LAVFI, f"sine=f=440:r={sample_rate}"]
        + ["-t", "1", "-ac", "1", "-f", "s16le", "pipe:"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pcm = result.stdout
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    huge = 0xFFFFFFF0
    return (
        b"RIFF"
        + struct.pack("<I", huge)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", huge)
        + pcm
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hostile files, made once for the module (never committed)."""
    d = tmp_path_factory.mktemp("hostile-media")
    # Three frames whose timestamps are stretched 12000 times: ten hours declared.
    ffmpeg(*LAVFI, "color=s=64x64:r=1", "-t", 3, *X264, d / "three_frames.mp4")
    ffmpeg("-itsscale", 18000, "-i", d / "three_frames.mp4", "-c", "copy", d / "ten_hours.mp4")
    # A short clip whose header is followed by 50,000 levels of nested tags.
    piped = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *LAVFI, "testsrc=s=64x48:r=5", "-t", "1"]
        + [*X264, "-f", "matroska", "pipe:"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout  # through a pipe: the segment's size is unknown, so an element can be inserted
    cluster = piped.find(b"\x1f\x43\xb6\x75")
    assert cluster > 0
    (d / "deep_tags.mkv").write_bytes(piped[:cluster] + _nested_tags(50_000) + piped[cluster:])
    # Three frames of 16x16 stretched to two hours.
    ffmpeg(*LAVFI, "color=s=16x16:r=1", "-t", 3, *X264, d / "three_tiny.mp4")
    ffmpeg("-itsscale", 3600, "-i", d / "three_tiny.mp4", "-c", "copy", d / "two_hours_16x16.mp4")
    (d / "huge_samples.wav").write_bytes(_huge_wav())
    # 3000 frames of 16x16 in a GIF.
    ffmpeg(*LAVFI, "testsrc=s=16x16:r=100", "-t", 30, d / "many_frames.gif")
    # moov first, then cut at 60 %: the index promises frames the file no longer has.
    ffmpeg(*LAVFI, "testsrc=s=320x240:r=25", "-t", 4, *X264, "-movflags", "+faststart",
           d / "whole.mp4")  # fmt: skip
    data = (d / "whole.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    return d


class PeakMemory:
    """Samples the RSS of this process and of the children it starts (the probe's) every
    20 ms; keeps the peak. Children already running (the session's Triton) are not counted,
    nor a child caught between its fork and its exec: its command line is still this
    process's and its pages are this process's, shared (a CI run, its test process grown to
    2.6 GiB, once caught the probe's spawn there and counted +2164 MiB for a one-second WAV)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.servers = {child.pid for child in self.process.children(recursive=True)}
        self.cmdline = self.process.cmdline()
        self.baseline = self._rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            if child.pid in self.servers:
                continue
            with contextlib.suppress(psutil.Error):  # it ended between the listing and the read
                if child.cmdline() != self.cmdline:
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _bounded(run: Callable[[], Result], name: str) -> tuple[Result | Exception, float, int]:
    """Run one case; its outcome (result or error), seconds and memory growth."""
    bound = CASE_MEMORY_BOUND_BYTES.get(name, MEMORY_BOUND_BYTES)
    started = time.monotonic()
    with PeakMemory() as memory:
        try:
            outcome: Result | Exception = run()
        except InputError as exc:
            outcome = exc
    elapsed = time.monotonic() - started
    print(f"hostile {name}: {type(outcome).__name__} in {elapsed:.1f} s, "
          f"peak +{memory.growth / 2**20:.0f} MiB (RSS {memory.peak / 2**20:.0f} MiB)")  # fmt: skip
    assert elapsed < TIME_BOUND_S, f"{name} took {elapsed:.1f} s"
    assert memory.growth < bound, f"{name} grew {memory.growth / 2**20:.0f} MiB"
    return outcome, elapsed, memory.growth


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        decoder="pyav",
        public_base_url="http://127.0.0.1:9",
        probe_timeout_s=15,
        **overrides,
    )


CASES: list[tuple[str, dict[str, Any], type[Exception] | type[Result], str]] = [  # fmt: skip
    ("ten_hours.mp4", {}, TooLargeError, "expected at most 900 s, got 36001.0 s"),
    ("deep_tags.mkv", {}, Result, "no-face"),
    ("two_hours_16x16.mp4", {}, TooLargeError, "expected at most 900 s, got 7201.0 s"),
    ("two_hours_16x16.mp4", {"max_duration_s": 7300}, Result, "no-face"),
    ("huge_samples.wav", {}, Result, "no-video"),
    ("many_frames.gif", {}, Result, "no-face"),
    ("truncated.mp4", {}, CorruptMediaError, "truncated"),
]


@pytest.mark.parametrize(
    ("name", "overrides", "expected", "message"),
    CASES,
    ids=[c[0] + ("-limit-raised" if c[1] else "") for c in CASES],
)
def test_hostile_media_gets_its_outcome_within_time_and_memory(
    hostile, tmp_path, triton, name, overrides, expected, message
) -> None:
    settings = _settings(tmp_path, **overrides)
    store = LocalStore(settings)
    outcome, _, _ = _bounded(
        lambda: analyze(hostile / name, settings, triton.client, store, job_id="job-hostile"),
        name,
    )
    assert isinstance(outcome, expected), f"{name}: {outcome!r}"
    if isinstance(outcome, Exception):  # a clear error naming the file
        assert message in str(outcome) and name in str(outcome), str(outcome)
    else:  # a bounded result that says why it could not look
        assert isinstance(outcome, Result)
        assert message in {r.code for r in outcome.reasons}, outcome.reasons
    leftovers = list(settings.tmp_dir.iterdir()) if settings.tmp_dir.exists() else []
    assert leftovers == [], f"{name} left {leftovers}"
