"""Per-item cost of the visual and audio ONNX models in onnxruntime, by batch size and session setting.

    .venv/bin/python -m benchmarks.bench_ort                    # writes results/ort_cpu.{json,md}
    .venv/bin/python -m benchmarks.bench_ort --models visual --batches 1 32

Dynamic batching can only beat one-request-at-a-time serving on a CPU if either the
per-request overhead is large next to the compute, or a batch costs less per item than
a single item. This measures the second: for each setting (threads, graph optimisation
level, memory pattern, spinning) and batch size it times ``session.run`` with wall and
CPU clocks (``time.process_time``: what the process burnt, so other load on a shared
machine disturbs it less than wall time), in interleaved rounds whose order alternates so
that drifting background load hits every cell alike; the minimum over rounds is reported.
It also counts each graph's convolution FLOPs (shape inference at batch 1), so the
achieved GFLOP/s can be compared with the core's FMA peak.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_model, load_average

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# name -> (intra-op threads, optimisation level, memory pattern, spinning)
SETTINGS = {
    "1 thread": (1, "all", False, False),
    "2 threads": (2, "all", False, False),
    "2 threads, spinning": (2, "all", False, True),
    "1 thread, extended opt (no NCHWc)": (1, "extended", False, False),
    "1 thread, memory pattern": (1, "all", True, False),
}
# Every session stays open for the interleaving; AASIST at batch 32 needs several GiB per
# session (the extended-opt one over 20 GiB), so only the thread settings run by default.
DEFAULT_SETTINGS = ("1 thread", "2 threads")


def session(path: Path, setting: tuple[int, str, bool, bool]):
    import onnxruntime as ort

    threads, level, mem_pattern, spinning = setting
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.enable_mem_pattern = mem_pattern
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def conv_gflop(path: Path, item_shape: tuple[int, ...]) -> float:
    """FLOPs (2 per multiply-add) of the graph's Conv nodes for one item."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, *item_shape), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    model = shape_inference.infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in (*model.graph.value_info, *model.graph.output)
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv" and node.input[1] in weights and out:
            macs += int(np.prod(out)) * int(np.prod(weights[node.input[1]][1:]))
    return 2 * macs / 1e9


def measure(path: Path, item_shape, names, batches, rounds: int, min_s: float) -> list[dict]:
    sessions = {n: session(path, SETTINGS[n]) for n in names}
    input_name = sessions[names[0]].get_inputs()[0].name
    rng = np.random.default_rng(0)
    feeds = {b: {input_name: rng.random((b, *item_shape), dtype=np.float32)} for b in batches}
    for n, b in itertools.product(names, batches):
        sessions[n].run(None, feeds[b])  # warm-up: allocations, kernel selection
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in range(rounds):
        order = list(itertools.product(names, batches))
        for n, b in reversed(order) if r % 2 else order:
            runs, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while runs == 0 or time.perf_counter() - wall0 < min_s:
                sessions[n].run(None, feeds[b])
                runs += 1
            wall = (time.perf_counter() - wall0) / runs / b * 1000
            cpu = (time.process_time() - cpu0) / runs / b * 1000
            times.setdefault((n, b), []).append((wall, cpu))
    return [
        {
            "setting": n,
            "batch": b,
            "wall_ms_per_item": round(min(w for w, _ in times[(n, b)]), 2),
            "cpu_ms_per_item": round(min(c for _, c in times[(n, b)]), 2),
        }
        for n, b in itertools.product(names, batches)
    ]


def markdown(result: dict) -> str:
    lines = [
        "# onnxruntime on CPU: per-item cost by batch size",
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores; onnxruntime {result['onnxruntime']}; "
        f"load average at start {result['load_average_at_start']} (shared machine). Generated by "
        f"`python -m benchmarks.bench_ort` at {result['when']}. Minimum over "
        f"{result['rounds']} interleaved rounds; wall / CPU ms per item (CPU = the process's "
        "CPU time, all its threads).",
        "",
    ]
    for model, entry in result["models"].items():
        batches = entry["batches"]
        lines += [
            f"`{model}` ({entry['checkpoint']}, {entry['conv_gflop_per_item']:.3f} GFLOP of "
            "convolution per item)",
            "",
            "| setting | " + " | ".join(f"batch {b}" for b in batches) + " |",
            "|---|" + "---:|" * len(batches),
        ]
        for name in entry["settings"]:
            row = {c["batch"]: c for c in entry["cells"] if c["setting"] == name}
            lines.append(
                f"| {name} | "
                + " | ".join(
                    f"{row[b]['wall_ms_per_item']:.2f} / {row[b]['cpu_ms_per_item']:.2f}"
                    for b in batches
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["visual", "audio"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=SETTINGS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-s", type=float, default=0.5, help="Least time per timing.")
    parser.add_argument("--data-dir", default=None, help="dfd data folder (ONNX files).")
    parser.add_argument("--out", default=str(RESULTS), help="Folder for the result files.")
    args = parser.parse_args(argv)

    import onnxruntime

    from dfd.settings import Settings
    from export.onnx_export import export_all
    from export.triton_repo import role_specs

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    roles = role_specs(settings)
    exported = export_all(settings, checkpoints=[roles[m].checkpoint for m in args.models])
    result: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": load_average(),
        "rounds": args.rounds,
        "models": {},
    }
    for model in args.models:
        s = roles[model]
        path = Path(exported.get(s.checkpoint, settings.onnx_dir / f"{s.checkpoint}.onnx"))
        item_shape = s.inputs[0].dims
        cells = measure(path, item_shape, args.settings, args.batches, args.rounds, args.min_s)
        result["models"][model] = {
            "checkpoint": s.checkpoint,
            "conv_gflop_per_item": round(conv_gflop(path, item_shape), 3),
            "batches": args.batches,
            "settings": args.settings,
            "cells": cells,
        }
        for c in cells:
            print(model, json.dumps(c), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ort_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ort_cpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
