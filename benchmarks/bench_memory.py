"""Peak memory of one analysis against the video's length: what a worker needs for the
longest video it accepts.

    .venv/bin/python -m benchmarks.bench_memory [--minutes 1 5 15] [--height 720]
        [--clip PATH] [--media-dir DIR] [--tag cpu]

Builds each clip (a GRID clip looped to the length, 16:9 H.264 + AAC, 720 lines by
default: the decoder's default size cap, so sampled frames are held at full size; 1080
lines are decoded at full size and scaled down to it), starts one local
Triton on the ``cpu`` repository, and analyses each clip in a fresh child process (this
module with ``--child``), as a worker's work horse would, so that each peak is that
analysis's own:

- peak RSS: the child's ``VmHWM`` (every page it ever held at once);
- peak traced: ``tracemalloc``'s peak over the analysis (Python's allocations, numpy's
  arrays among them), beside the RSS before it starts (interpreter, imports, client).

Triton's memory is not counted: it is one server for all workers (``soak_cpu.md``
follows it). Writes ``benchmarks/results/memory_<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_stages import add_clip_arguments, machine
from benchmarks.bench_stages import build_clip as stages_clip
from benchmarks.machine import load_average, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MiB = 2**20


def build_clip(media_dir: Path, out: Path, seconds: int, height: int = 720) -> Path:
    """The benchmark clip (:func:`benchmarks.bench_stages.build_clip`) at ``seconds`` and
    ``height`` lines, encoded with x264's fastest preset (15 minutes of it)."""
    return stages_clip(media_dir, out, seconds, height, preset="ultrafast")


def _status_bytes(key: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``: resident now,
    ``VmHWM``: its peak so far), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(clip: Path, triton_url: str, data_dir: Path) -> dict[str, Any]:
    """One analysis of ``clip``, measured in this process (run as ``--child``)."""
    import tracemalloc

    from dfd.settings import Settings
    from dispatcher.pipeline import analyze
    from dispatcher.store import LocalStore
    from dispatcher.triton_client import TritonClient

    settings = Settings(data_dir=data_dir, triton_url=triton_url)
    store = LocalStore(settings)
    with TritonClient(triton_url, timeout_s=settings.triton_timeout_s, retries=2) as client:
        before = _status_bytes("VmRSS")
        tracemalloc.start()
        started = time.monotonic()
        result = analyze(clip, settings, client, store, job_id=f"memory-{clip.stem}")
        wall = time.monotonic() - started
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    media = result.media
    return {
        "clip": clip.name,
        "duration_s": media["duration_s"],
        "items": {k: media[k] for k in ("frames_sampled", "faces", "audio_windows")},
        "label": result.label,
        "wall_s": round(wall, 1),
        "rss_before_mib": round(before / MiB),
        "peak_rss_mib": round(_status_bytes("VmHWM") / MiB),
        "peak_traced_mib": round(traced / MiB),
    }


def run_child(clip: Path, triton_url: str, data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(clip)]
        + ["--triton-url", triton_url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"analysis of {clip.name} failed:\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Memory: one analysis's peak against the video's length",
        "",
        f"Run {report['when']} with `{report['command']}`. Machine: {m['cpu']}, {m['cores']} "
        f"cores, Python {m['python']}. Load average (1, 5, 15 min) at start "
        f"{report['load_start']}, at end {report['load_end']}. Each clip is a GRID clip looped "
        f"to its length at {report['height']} lines, 16:9 (sampled frames are held at "
        "1280x720), analysed with the default "
        "settings in a fresh process against one local Triton (`cpu` repository), whose own "
        "memory is not counted.",
        "",
        "| video | sampled frames | faces | audio windows | RSS before MiB | peak RSS MiB "
        "| peak traced MiB | analysis s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        items = row["items"]
        lines.append(
            f"| {row['duration_s'] / 60:.1f} min | {items['frames_sampled']} | {items['faces']} "
            f"| {items['audio_windows']} | {row['rss_before_mib']} | {row['peak_rss_mib']} "
            f"| {row['peak_traced_mib']} | {row['wall_s']} |"
        )
    rows = report["rows"]
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        minutes = (b["duration_s"] - a["duration_s"]) / 60
        if minutes > 0:
            slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / minutes
            lines += [
                "",
                f"Peak RSS grows by about {slope:.0f} MiB per minute of video between the "
                f"shortest and the longest clip.",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 15])
    add_clip_arguments(parser)
    parser.add_argument("--height", type=int, default=720, help="the clips' lines (16:9)")
    parser.add_argument("--tag", default="cpu", help="results file suffix")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--triton-url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.triton_url, args.data_dir)))
        return 0

    from datetime import UTC, datetime

    from cli.local_triton import LocalTriton
    from dfd.settings import Settings
    from export.triton_repo import build_repository

    settings = Settings()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="dfd-bench-memory-") as tmp:
        folder = Path(tmp)
        clips = (
            [args.clip]
            if args.clip
            else [
                build_clip(
                    args.media_dir,
                    folder / f"grid_{m:g}min_{args.height}p.mp4",
                    round(m * 60),
                    args.height,
                )
                for m in args.minutes
            ]
        )
        with LocalTriton(settings, build_repository(settings, "cpu")) as server:
            rows = []
            for clip in clips:
                row = run_child(clip, server.grpc_url, folder / "data")
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        "when": started,
        "command": " ".join(
            ["python -m benchmarks.bench_memory", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "load_start": load_start,
        "load_end": load_average(),
        "height": args.height,
        "rows": rows,
    }
    write_results(RESULTS, f"memory_{args.tag}", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
