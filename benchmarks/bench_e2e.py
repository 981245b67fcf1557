"""End-to-end latency and throughput through the whole local stack.

    .venv/bin/python -m benchmarks.bench_e2e [--latency-runs 5] [--videos 20] [--workers 1 2]

Builds the benchmark clip (a GRID clip with a face and speech, looped to 30 s and scaled
to 1080p H.264 + AAC, see ``bench_stages.build_clip``), starts the embedded stack
(local Redis, local Triton on the ``cpu`` repository, N ``dfd worker`` processes and the
gateway, as ``dfd serve`` does) and drives it through the HTTP API only:

* latency: one video at a time, upload to ``completed``; p50/p95 of the client's wall
  time with the per-stage breakdown the worker reports (``timings_ms``) and what is left
  (upload, queueing, polling);
* throughput: ``--videos`` uploads submitted at once, time until the last completes,
  with 1 and 2 workers.

Writes ``benchmarks/results/e2e_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.bench_stages import add_clip_arguments, build_clip, machine
from benchmarks.machine import load_average, write_results
from cli.demo import JobClient
from cli.stack import Stack
from dfd.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("download", "probe", "decode", "faces", "inference", "evidence")
# The benchmark submits more uploads in a minute than the default per-IP hourly limits allow.
BENCH_ENV = {
    "DFD_RATE_LIMIT_PER_HOUR": "100000",
    "DFD_RATE_LIMIT_UPLOADS_PER_HOUR": "100000",
    "DFD_MAX_CONCURRENT_UPLOADS_PER_IP": "64",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def one_video(client: JobClient, clip: Path, timeout_s: float) -> dict:
    started = time.perf_counter()
    job_id = client.submit(str(clip))
    submitted = time.perf_counter()
    view = client.wait(job_id, timeout_s=timeout_s, poll_s=0.05)
    done = time.perf_counter()
    if view["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {view['status']}: {view.get('error')}")
    result = view["result"]
    return {
        "wall_s": done - started,
        "upload_s": submitted - started,
        "timings_ms": result["timings_ms"],
        "label": result["label"],
        "confidence": result["confidence"],
    }


def run_config(clip: Path, workers: int, latency_runs: int, videos: int, log_dir: Path) -> dict:
    settings = Settings()
    log_path = log_dir / f"stack-{workers}w.log"
    with (
        log_path.open("wb") as log,
        Stack(settings, port=0, workers=workers, child_output=log, log=lambda s: None) as stack,
    ):
        endpoints = stack.endpoints
        assert endpoints is not None
        with httpx.Client(base_url=endpoints.gateway, timeout=120) as http:
            client = JobClient(http)
            one_video(client, clip, 600)  # warm-up: Triton sessions, worker imports
            latency = (
                [one_video(client, clip, 600) for _ in range(latency_runs)] if latency_runs else []
            )
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=videos) as pool:
                batch = list(pool.map(lambda _: one_video(client, clip, 1800), range(videos)))
            elapsed = time.perf_counter() - started
    return {"workers": workers, "latency": latency, "throughput_runs": batch, "batch_s": elapsed}


def summarise(config: dict) -> dict:
    out: dict = {"workers": config["workers"]}
    if config["latency"]:
        walls = [r["wall_s"] for r in config["latency"]]
        out["latency_s"] = {
            "p50": statistics.median(walls),
            "p95": percentile(walls, 95),
            "runs": len(walls),
        }
        out["stages_ms_median"] = {
            stage: statistics.median(r["timings_ms"].get(stage, 0.0) for r in config["latency"])
            for stage in STAGES
        }
        out["upload_ms_median"] = statistics.median(r["upload_s"] * 1000 for r in config["latency"])
    n = len(config["throughput_runs"])
    out["throughput"] = {
        "videos": n,
        "elapsed_s": config["batch_s"],
        "videos_per_min": 60 * n / config["batch_s"],
        "p50_s": statistics.median(r["wall_s"] for r in config["throughput_runs"]),
        "p95_s": percentile([r["wall_s"] for r in config["throughput_runs"]], 95),
    }
    out["labels"] = sorted({r["label"] for r in config["throughput_runs"] + config["latency"]})
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# End-to-end: a 30 s 1080p H.264 clip through gateway, queue, worker and Triton",
        "",
        f"Run {report['when']} with `{report['command']}`. Machine: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, PyAV {m['pyav']}; Triton `cpu` "
        "repository (python backend hosting onnxruntime). Load average (1, 5, 15 min) at start "
        f"{report['loadavg']['start']}, at end {report['loadavg']['end']} (a shared machine: other "
        "work running beside the benchmark slows it).",
        "",
        "## Latency, one video at a time",
        "",
        "| workers | runs | p50 s | p95 s | "
        + " | ".join(STAGES)
        + " | upload | rest (queue, polling) |",
        "|---|---:|---:|---:|" + "---:|" * (len(STAGES) + 2),
    ]
    for s in report["summary"]:
        if "latency_s" not in s:
            continue
        stages = s["stages_ms_median"]
        rest = s["latency_s"]["p50"] * 1000 - sum(stages.values()) - s["upload_ms_median"]
        lines.append(
            f"| {s['workers']} | {s['latency_s']['runs']} | {s['latency_s']['p50']:.2f} | "
            f"{s['latency_s']['p95']:.2f} | "
            + " | ".join(f"{stages[k]:.0f} ms" for k in STAGES)
            + f" | {s['upload_ms_median']:.0f} ms | {rest:.0f} ms |"
        )
    lines += [
        "",
        "## Throughput, videos submitted at once",
        "",
        "| workers | videos | elapsed s | videos/min | per-video p50 s | per-video p95 s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in report["summary"]:
        t = s["throughput"]
        lines.append(
            f"| {s['workers']} | {t['videos']} | {t['elapsed_s']:.1f} | {t['videos_per_min']:.1f} | "
            f"{t['p50_s']:.1f} | {t['p95_s']:.1f} |"
        )
    lines += [
        "",
        f"Labels seen: {sorted({lab for s in report['summary'] for lab in s['labels']})}.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_clip_arguments(parser)
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()
    os.environ.update(BENCH_ENV)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="dfd-bench-e2e-") as tmp:
        clip = args.clip or build_clip(args.media_dir, Path(tmp) / "grid_30s_1080p.mp4")
        configs = [
            run_config(clip, w, args.latency_runs if i == 0 else 0, args.videos, Path(tmp))
            for i, w in enumerate(args.workers)
        ]
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.bench_e2e " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "loadavg": {"start": load_before, "end": load_average()},
        "configs": configs,
        "summary": [summarise(c) for c in configs],
    }
    write_results(RESULTS, f"e2e_{args.tag}", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
