"""Per-stage timings of ``dfd analyze`` on a 30 s 1080p H.264 clip.

    .venv/bin/python -m benchmarks.bench_stages [--runs 3] [--clip PATH] [--keep-clip]
        [--baseline-src DIR]

Builds the clip in a temporary folder (a GRID clip looped to 30 s, scaled to 1080 lines
and padded to 1920x1080, H.264 + AAC), starts one local Triton on the ``cpu`` repository,
then runs ``dfd analyze --json`` as a subprocess ``--runs`` times against it (so Triton's
start-up is not counted, and each run is a fresh process as a user would see it). The
first run is a warm-up and is reported apart; the table gives the median of the others.
Writes ``benchmarks/results/stages_<tag>.json`` and ``.md``.

``--baseline-src DIR`` runs another source tree (``git archive <commit> | tar -x -C DIR``)
interleaved with this one against the same Triton, run for run, so a before/after
comparison sees the same machine load (this machine is shared; absolute numbers drift).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("download", "probe", "decode", "faces", "inference", "evidence")
GRID_CLIP = "id2_vcd_swwp2s.mpg"


def build_clip(
    media_dir: Path, out: Path, seconds: int = 30, height: int = 1080, preset: str = "veryfast"
) -> Path:
    """A GRID clip looped to ``seconds``, scaled and padded to 16:9 at ``height`` lines
    (1920x1080 by default), H.264 + AAC."""
    src = media_dir / "grid" / GRID_CLIP
    loops = -(-seconds // 3)
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-stream_loop", str(loops), "-i", str(src),
            "-vf", f"scale=-2:{height}:flags=bicubic,pad={height * 16 // 9}:{height}:(ow-iw)/2:0",
            "-t", str(seconds), "-r", "25",
            "-c:v", "libx264", "-preset", preset, "-crf", "20", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", str(out),
        ],
        check=True,
        timeout=max(600, 2 * seconds),
    )  # fmt: skip
    return out


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clip`` (a ready clip) and ``--media-dir`` (where `build_clip` finds the GRID clip)."""
    parser.add_argument("--clip", type=Path, help="use this clip instead of building one")
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared" / "media")),
    )


def machine() -> dict[str, object]:
    import av
    import numpy
    import onnxruntime

    return describe(
        pyav=av.__version__, onnxruntime=onnxruntime.__version__, numpy=numpy.__version__
    )


def run_once(clip: Path, env: dict[str, str], out_dir: Path, src: Path = ROOT) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "analyze", str(clip), "--json", "--out", str(out_dir)],
        capture_output=True,
        text=True,
        env=dict(env, PYTHONPATH=str(src)),
        cwd=src,
        timeout=1200,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"dfd analyze failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    return {
        "wall_s": round(wall, 2),
        "timings_ms": doc["timings_ms"],
        "media": doc["media"],
        "label": doc["label"],
        "confidence": doc["confidence"],
    }


def markdown(report: dict) -> str:
    med = report["median_ms"]
    lines = [
        f"# dfd analyze: per-stage timings ({report['clip']['description']})",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
        f"Triton {report['triton_target']} repository (python backend + onnxruntime). "
        f"Median of {len(report['runs'])} runs after one warm-up; command: `{report['command']}`.",
        "",
        "| stage | median ms | warm-up ms |",
        "|---|---:|---:|",
    ]
    for stage in STAGES:
        lines.append(
            f"| {stage} | {med[stage]:.0f} | {report['warmup']['timings_ms'].get(stage, 0):.0f} |"
        )
    total = sum(med[s] for s in STAGES)
    lines += [
        f"| **sum of stages** | **{total:.0f}** | |",
        f"| process wall time (incl. interpreter start) | {report['median_wall_s'] * 1000:.0f} | |",
        "",
        f"Items: {report['items']}.",
        "",
    ]
    base = report.get("baseline")
    if base:
        lines += [
            f"Interleaved with the baseline source tree `{base['src']}` ({base['note']}), "
            "same Triton, run for run:",
            "",
            "| stage | baseline median ms | this tree median ms |",
            "|---|---:|---:|",
        ]
        for stage in STAGES:
            lines.append(f"| {stage} | {base['median_ms'][stage]:.0f} | {med[stage]:.0f} |")
        lines += ["", f"Baseline items: {base['items']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs after the warm-up")
    add_clip_arguments(parser)
    parser.add_argument("--keep-clip", action="store_true")
    parser.add_argument("--tag", default="cpu", help="results file suffix")
    parser.add_argument("--baseline-src", type=Path, help="another source tree to run interleaved")
    parser.add_argument("--baseline-note", default="", help="what the baseline is (for the report)")
    args = parser.parse_args(argv)

    from cli.local_triton import LocalTriton
    from dfd.settings import Settings
    from export.triton_repo import build_repository

    tmp = Path(tempfile.mkdtemp(prefix="dfd-bench-stages-"))
    try:
        clip = args.clip or build_clip(args.media_dir, tmp / "bench_30s_1080p.mp4")
        settings = Settings()
        repository = build_repository(settings, "cpu")
        base_runs: list[dict] = []
        with LocalTriton(settings, repository) as server:
            env = dict(
                os.environ,
                DFD_TRITON_URL=server.grpc_url,
                DFD_DATA_DIR=str(settings.data_dir.resolve()),
            )
            if args.baseline_src:
                run_once(clip, env, tmp / "evidence", args.baseline_src)
            warmup = run_once(clip, env, tmp / "evidence")
            runs = []
            for _ in range(args.runs):
                if args.baseline_src:
                    base_runs.append(run_once(clip, env, tmp / "evidence", args.baseline_src))
                runs.append(run_once(clip, env, tmp / "evidence"))
        median = {s: statistics.median(r["timings_ms"][s] for r in runs) for s in STAGES}
        media = runs[-1]["media"]
        report = {
            "clip": {
                "description": f"{media['duration_s']:.0f} s {media['width']}x{media['height']} "
                f"{media['video_codec']} + {media['audio_codec']}",
                "bytes": clip.stat().st_size,
            },
            "command": " ".join(
                ["python -m benchmarks.bench_stages", *(argv if argv is not None else sys.argv[1:])]
            ),
            "triton_target": "cpu",
            "machine": machine(),
            "settings": {
                k: getattr(settings, k)
                for k in (
                    "sample_fps",
                    "decode_max_side_px",
                    "lipsync_max_clips",
                    "audio_hop_s",
                    "max_items_per_request",
                    "decoder",
                )
            },
            "items": {
                k: media[k]
                for k in (
                    "frames_sampled",
                    "faces",
                    "audio_windows",
                    "lipsync_clips",
                    "requests",
                    "decoder",
                )
            },
            "warmup": warmup,
            "runs": runs,
            "median_ms": median,
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "label": runs[-1]["label"],
            "confidence": runs[-1]["confidence"],
        }
        if base_runs:
            report["baseline"] = {
                "src": str(args.baseline_src),
                "note": args.baseline_note,
                "runs": base_runs,
                "median_ms": {
                    s: statistics.median(r["timings_ms"][s] for r in base_runs) for s in STAGES
                },
                "items": {
                    k: base_runs[-1]["media"][k]
                    for k in ("frames_sampled", "faces", "audio_windows", "lipsync_clips")
                },
            }
        write_results(RESULTS, f"stages_{args.tag}", report, markdown(report))
        if args.keep_clip and not args.clip:
            kept = Path(tempfile.gettempdir()) / "dfd_bench_30s_1080p.mp4"
            shutil.copy2(clip, kept)
            print(f"clip kept at {kept}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
