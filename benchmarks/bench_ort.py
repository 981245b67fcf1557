"""Per-item cost of every model the registry can serve in onnxruntime, by batch size and
session setting, and what each adds to the 30 s 1080p benchmark clip.

    .venv/bin/python -m benchmarks.bench_ort                    # writes results/ort_cpu.{json,md}
    .venv/bin/python -m benchmarks.bench_ort --models visual sbi --batches 1 32

The models (``benchmarks.ort_items``): the face detector at the detection canvas, the
visual, audio and lip-sync detectors, the speech gate (per second of audio), the face mesh
of mouth sync, the voice encoder (per partial), and the user-fetched SBI and UFD (random
weights at the real shape when the user has not fetched them: the arithmetic is the same).
Each is the ONNX file the export writes (``export.onnx_export``), exported first if absent.

Dynamic batching can only beat one-request-at-a-time serving on a CPU if either the
per-request overhead is large next to the compute, or a batch costs less per item than
a single item. This measures the second: for each setting (threads, graph optimisation
level, memory pattern, spinning) and batch size it times ``session.run`` with wall and
CPU clocks (``time.process_time``: what the process burnt, so other load on a shared
machine disturbs it less than wall time), in interleaved rounds whose order alternates so
that drifting background load hits every cell alike; the minimum over rounds is reported.
It also counts each graph's FLOPs in convolutions and matrix products (shape inference at
the smallest batch), so the achieved GFLOP/s can be compared with the core's FMA peak.
Then, per model, the items of the benchmark clip (counted from the settings by
``ort_items.clip_items``) times the one-thread CPU ms per item: core-seconds per clip.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_model, load_average, write_results
from benchmarks.ort_items import Bench, benches, clip_items
from dfd.settings import Settings
from dfd.specs import spec

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


def random_onnx(checkpoint: str, settings: Settings) -> Path:
    """The stand-in of a user-fetched checkpoint (random weights at the real shape,
    ``export.random_weights``) exported as the checkpoint is, kept under the data folder's
    ``bench_ort/`` (not ``onnx/``: never served) and rebuilt only when what it is built
    from changes (UFD's export takes minutes)."""
    import gc

    from export import random_weights
    from export.onnx_export import built_once, module_onnx, stamp

    digest = hashlib.sha256(stamp(checkpoint).encode())
    digest.update(Path(random_weights.__file__).read_bytes())

    def build() -> bytes:
        print(
            f"exporting {checkpoint} with random weights (the real ones are user-fetched)",
            flush=True,
        )
        data = module_onnx(random_weights.random_serving(checkpoint), spec(checkpoint))
        gc.collect()
        return data

    out = settings.data_dir / "bench_ort" / f"{checkpoint}-random.onnx"
    return built_once(out, digest.hexdigest(), build)


def model_path(bench: Bench, settings: Settings) -> tuple[Path, bool]:
    """The ONNX file timed for ``bench`` and whether its weights are random: the export
    (``export.onnx_export.export_one``) when dfd has the weights, else the stand-in."""
    from dfd.detectors import DETECTORS, missing_weights
    from export.onnx_export import export_one

    detector = DETECTORS.get(bench.name)
    if bench.random_weights and detector is not None and missing_weights(detector, settings):
        return random_onnx(bench.checkpoint, settings), True
    return export_one(bench.checkpoint, settings), False


COUNTED_OPS = ("Conv", "MatMul", "Gemm", "LSTM")


def gflop(path: Path, feeds: dict[str, np.ndarray], items: float) -> float:
    """FLOPs (2 per multiply-add) of the graph's Conv, MatMul, Gemm and LSTM nodes per item,
    the inputs shaped as ``feeds`` (element-wise work and the LSTM's gates not counted).

    Shapes come from ONNX shape inference; where it leaves one of those nodes' tensors
    unknown (silero-vad's reshapes), from running the graph once with them as outputs.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name not in feeds:
            continue
        for d, v in zip(value.type.tensor_type.shape.dim, feeds[value.name].shape, strict=True):
            d.ClearField("dim_param")
            d.dim_value = v
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    del inferred
    counted = [n for n in model.graph.node if n.op_type in COUNTED_OPS]
    unknown = [
        name
        for node in counted
        for name in (node.input[0], node.output[0])
        if not shapes.get(name) or not all(shapes[name])
    ]
    if unknown:
        shapes.update(_run_for_shapes(model, feeds, list(dict.fromkeys(unknown))))
    macs = 0
    for node in counted:
        out, a, b = (shapes.get(n, []) for n in (node.output[0], *node.input[:2]))
        if node.op_type == "Conv":
            macs += int(np.prod(out)) * int(np.prod(b[1:]))
        elif node.op_type == "MatMul":
            macs += int(np.prod(out)) * a[-1]
        elif node.op_type == "Gemm":
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            macs += int(np.prod(out)) * a[0 if trans_a else -1]
        else:  # LSTM: X [steps, batch, in], W [dirs, 4h, in], R [dirs, 4h, h]
            r = shapes.get(node.input[2], [])
            macs += a[0] * a[1] * (int(np.prod(b)) + int(np.prod(r)))
    return 2 * macs / 1e9 / items


def _run_for_shapes(model, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, list[int]]:  # noqa: ANN001 - an onnx ModelProto
    """The shapes of the tensors ``names`` in one onnxruntime run of ``model`` on ``feeds``."""
    import onnx
    import onnxruntime as ort

    for name in names:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    run = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = run.run(names, feeds)
    return {name: list(v.shape) for name, v in zip(names, outs, strict=True)}


def measure(
    path: Path, bench: Bench, names, batches, rounds: int, min_s: float
) -> tuple[list[dict], float]:
    """Cells of wall and CPU ms per item by setting and batch, and the GFLOP per item."""
    sessions = {n: session(path, SETTINGS[n]) for n in names}
    rng = np.random.default_rng(0)
    feeds = {b: bench.feeds(b, rng) for b in batches}
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
            items = runs * bench.items(b)
            wall = (time.perf_counter() - wall0) / items * 1000
            cpu = (time.process_time() - cpu0) / items * 1000
            times.setdefault((n, b), []).append((wall, cpu))
    del sessions
    cells = [
        {
            "setting": n,
            "batch": b,
            "wall_ms_per_item": round(min(w for w, _ in times[(n, b)]), 2),
            "cpu_ms_per_item": round(min(c for _, c in times[(n, b)]), 2),
        }
        for n, b in itertools.product(names, batches)
    ]
    b0 = min(batches)
    return cells, gflop(path, feeds[b0], bench.items(b0))


def cell(entry: dict, setting: str, batch: int) -> dict | None:
    """The cell of ``setting`` at the measured batch nearest below ``batch`` (else the smallest)."""
    below = [b for b in entry["batches"] if b <= batch]
    chosen = max(below) if below else min(entry["batches"])
    return next(
        (c for c in entry["cells"] if c["setting"] == setting and c["batch"] == chosen), None
    )


def per_clip(result: dict, settings: Settings) -> list[dict]:
    """What each measured model adds to the benchmark clip: items (from the settings) times
    the one-thread CPU ms per item at about the batch the dispatcher sends them in."""
    from dfd.detectors import DETECTORS

    rows = []
    for name, entry in result["models"].items():
        got = clip_items(name, settings)
        one = cell(entry, "1 thread", got.batch)
        two = cell(entry, "2 threads", got.batch)
        d = DETECTORS.get(name)
        rows.append(
            {
                "model": name,
                "checkpoint": entry["checkpoint"],
                "default_on": d is None or (d.default_on and not d.fetched_by_user),
                "items": got.items,
                "counted": got.counted,
                "batch": one["batch"] if one else None,
                "cpu_ms_per_item": one["cpu_ms_per_item"] if one else None,
                "core_s_per_clip": round(got.items * one["cpu_ms_per_item"] / 1000, 3)
                if one
                else None,
                "wall_s_per_clip_2_threads": round(got.items * two["wall_ms_per_item"] / 1000, 3)
                if two
                else None,
            }
        )
    return rows


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    rows = result["per_clip"]
    default = [r for r in rows if r["default_on"]]
    lines = [
        "# onnxruntime on CPU: each model's cost per item, and per benchmark clip",
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores; onnxruntime {result['onnxruntime']}; "
        f"load average {result['load_average_at_start']} at the start and "
        f"{result['load_average_at_end']} at the end (1, 5, 15 min; a shared machine: compare "
        f"CPU time, which other load disturbs less than wall time). Generated by "
        f"`{result.get('command', 'python -m benchmarks.bench_ort')}` at {result['when']}; "
        "minimum over "
        f"{result['rounds']} interleaved rounds (fewer where a model says). Models whose "
        "weights the user fetches (SBI, UFD) are timed with random weights at the real shape, "
        "exported as the real ones are: the arithmetic is the same.",
        "",
        "## What each detector adds to the 30 s 1080p benchmark clip",
        "",
        "Items per clip counted from the settings with the dispatcher's own functions, for "
        "the benchmark clip (`bench_stages.build_clip`: one face on every frame, speech "
        "throughout; the speech gate drops audio windows and lip-sync clips with under a "
        "quarter of speech, so these are upper bounds); CPU ms per item on one thread at "
        "the measured batch nearest below the one the dispatcher sends; core-seconds = items "
        "x CPU ms. Wall on 2 threads: the same items on a two-thread session. Measured on "
        f"{result['cpu']} ({result['cores']} cores) at load average "
        f"{result['load_average_at_start'][0]} to {result['load_average_at_end'][0]}.",
        "",
        "| model | runs | items per clip | counted | batch | CPU ms per item "
        "| core-s per clip | wall s, 2 threads |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        runs = (
            "always"
            if r["model"] in ("face_detector", "speech")
            else ("by default" if r["default_on"] else "when enabled")
        )
        lines.append(
            f"| `{r['model']}` ({r['checkpoint']}) | {runs} | {r['items']:g} | {r['counted']} "
            f"| {r['batch']} | {_f(r['cpu_ms_per_item'])} | {_f(r['core_s_per_clip'])} "
            f"| {_f(r['wall_s_per_clip_2_threads'])} |"
        )
    if default:
        total = sum(r["core_s_per_clip"] or 0 for r in default)
        lines += [
            "",
            f"The default set ({', '.join(r['model'] for r in default)}) costs "
            f"{total:.2f} core-seconds of inference on the clip; each other row is what "
            "enabling that detector adds.",
        ]
    lines += ["", "## Per model: wall / CPU ms per item", ""]
    for model, entry in result["models"].items():
        batches = entry["batches"]
        unit = "frames per block" if model == "speech" else "batch"
        weights = "; random weights" if entry["random_weights"] else ""
        lines += [
            f"`{model}` ({entry['checkpoint']}{weights}; item: {entry['item']}; "
            f"{entry['gflop_per_item']:.3f} GFLOP per item in Conv, MatMul, Gemm and LSTM; "
            f"minimum of {entry['rounds']} rounds; load average at its start "
            f"{entry['load_average']})",
            "",
            "| setting | " + " | ".join(f"{unit} {b}" for b in batches) + " |",
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
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"models to time (default: all): {', '.join(benches(Settings()))}",
    )
    parser.add_argument(
        "--batches",
        nargs="+",
        type=int,
        default=None,
        help="batch sizes for every batching model (default: each model's own)",
    )
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=SETTINGS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-s", type=float, default=0.5, help="Least time per timing.")
    parser.add_argument("--data-dir", default=None, help="dfd data folder (ONNX files).")
    parser.add_argument("--out", default=str(RESULTS), help="Folder for the result files.")
    parser.add_argument("--tag", default="", help="write ort_cpu_<tag>.* (a partial run)")
    args = parser.parse_args(argv)

    import onnxruntime

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    catalogue = benches(settings)
    names = args.models or list(catalogue)
    unknown = sorted(set(names) - set(catalogue))
    if unknown:
        parser.error(
            f"--models: no model named {', '.join(unknown)}; known: {', '.join(catalogue)}"
        )
    result: dict = {
        "command": " ".join(
            ["python -m benchmarks.bench_ort", *(argv if argv is not None else sys.argv[1:])]
        ),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": load_average(),
        "rounds": args.rounds,
        "models": {},
    }
    for model in names:
        bench = catalogue[model]
        batches = bench.batches
        if args.batches and bench.spec.max_batch_size > 0:
            batches = tuple(b for b in args.batches if b <= bench.spec.max_batch_size) or (1,)
        path, random = model_path(bench, settings)
        rounds = min(args.rounds, bench.max_rounds or args.rounds)
        load = load_average()
        cells, flops = measure(path, bench, args.settings, batches, rounds, args.min_s)
        result["models"][model] = {
            "checkpoint": bench.checkpoint,
            "item": bench.item,
            "random_weights": random,
            "gflop_per_item": round(flops, 3),
            "load_average": load,
            "rounds": rounds,
            "batches": list(batches),
            "settings": args.settings,
            "cells": cells,
        }
        for c in cells:
            print(model, json.dumps(c), flush=True)
    result["load_average_at_end"] = load_average()
    result["per_clip"] = per_clip(result, settings)
    name = f"ort_cpu_{args.tag}" if args.tag else "ort_cpu"
    write_results(Path(args.out), name, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
