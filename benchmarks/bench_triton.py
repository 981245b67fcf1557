"""Throughput and latency through Triton, dynamic batching on vs off, in one run.

    .venv/bin/python -m benchmarks.bench_triton            # cpu repository, writes results
    .venv/bin/python -m benchmarks.bench_triton --torch-cuda   # PyTorch models on CUDA

The Triton mode builds two renderings of the ``cpu`` repository from the same specs and
ONNX files: the normal one, and one without ``dynamic_batching`` blocks (``max_batch_size``
kept, each request executed alone). It starts both servers at once and measures
``visual``, ``audio`` and ``deepfake_ensemble`` at each concurrency, alternating the two
renderings cell by cell so that background load hits both alike. Each request is one
unit of work as the dispatcher sends it: one face crop (``visual``), one audio window
(``audio``), one short video (``deepfake_ensemble``: 4 face crops, 1 audio window, 1
lip-sync clip). Inputs are real media from ``DFD_MEDIA_DIR`` when present.

A cell runs ``concurrency`` closed-loop clients: one warm-up round, then a measured
window of ``--duration-s`` (stretched to three rounds for slow models, capped by
``--max-cell-s``). Each cell is measured twice per rendering in the order A B B A and
pooled, so load that drifts during the run (a shared machine) hits both alike. Results go to ``benchmarks/results/triton_cpu.{json,md}`` with the
machine description.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, load_average, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("visual", "audio", "deepfake_ensemble")
CONCURRENCY = (1, 8, 32)
RENDERINGS = ("batching", "no_batching")


@dataclass(frozen=True)
class Cell:
    rendering: str
    model: str
    concurrency: int
    requests: int
    window_s: float
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    executions: int
    inferences: int
    server_cpu_ms_per_request: float
    triton_cpu_ms_per_request: float
    client_cpu_ms_per_request: float


# --- inputs -------------------------------------------------------------------------


def _payloads(media_dir: Path | None) -> dict[str, dict[str, np.ndarray]]:
    """One request's inputs per model, real media when ``media_dir`` has it."""
    from dfd.specs import (
        AUDIO_SAMPLES,
        FACE_SIZE,
        LIPSYNC_FRAMES,
        LIPSYNC_SIZE,
        MFCC_COEFFS,
        MFCC_PER_FRAME,
    )

    rng = np.random.default_rng(0)
    faces = rng.random((4, 3, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    audio = (rng.random((1, AUDIO_SAMPLES), dtype=np.float32) - 0.5) * 0.2
    video = rng.random((1, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE), dtype=np.float32) * 255
    mfcc = rng.standard_normal((1, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS), dtype=np.float32)
    if media_dir is not None and media_dir.is_dir():
        sys.path.insert(0, str(ROOT))
        from tests.export import model_inputs

        faces = model_inputs.faces(media_dir, 4)
        audio = model_inputs.waveforms(media_dir, 1)
        video, mfcc = model_inputs.lipsync_clip(media_dir)
    return {
        "visual": {"face": faces[:1]},
        "audio": {"waveform": audio},
        "deepfake_ensemble": {
            "faces": faces,
            "audio": audio,
            "lipsync_video": video,
            "lipsync_mfcc": mfcc,
            "mask": np.ones(3, np.float32),
            "weights": np.array([0.3, 0.5, 0.2], np.float32),
        },
    }


# --- one cell -----------------------------------------------------------------------


def _stats(url: str, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        entry = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return int(entry.get("execution_count", 0)), int(entry.get("inference_count", 0))


async def _cell(
    url: str, model: str, arrays: dict[str, np.ndarray], concurrency: int, args, cpu_s
) -> tuple[int, float, list[float], float, float, float]:
    """Closed loop of ``concurrency`` clients: warm-up round, then the measured window.

    No client starts a request after the window closes; the requests in flight then are
    waited for and counted, and throughput is taken over the time until the last of them
    finished. (Counting only what finished inside the window penalised batching, which
    completes requests in bursts: the burst cut off by the window's end was lost, up to a
    whole batch of audio windows, several seconds of work, per window.)

    Returns requests completed, the time from the window's start until the last of them
    finished, their latencies, and CPU seconds per request over that time: the server's
    (with its python stubs), the ``tritonserver`` process's alone (gRPC, scheduling,
    copies into the stubs' shared memory: paid per request, batched or not) and this
    client's (every thread of this process: gRPC, serialisation).
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc.aio import InferenceServerClient

    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = InferenceServerClient(url)

    async def one() -> float:
        started = time.perf_counter()
        await client.infer(model, inputs, client_timeout=600)
        return time.perf_counter() - started

    try:
        warm = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        round_s = time.perf_counter() - warm
        window = min(max(args.duration_s, 3 * round_s), args.max_cell_s)
        latencies: list[float] = []
        done = 0
        (server0, triton0), client0 = cpu_s(), time.process_time()
        start = time.perf_counter()
        end = start + window

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                latencies.append(await one())
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        (server1, triton1), client1 = cpu_s(), time.process_time()
        n = max(done, 1)
        return (
            done,
            elapsed,
            latencies,
            (server1 - server0) / n,
            (triton1 - triton0) / n,
            (client1 - client0) / n,
        )
    finally:
        await client.close()


def server_cpu(pid: int):
    """A function returning the CPU seconds used so far by a server with its python stubs,
    and by the server process alone."""
    import psutil

    root = psutil.Process(pid)

    def used() -> tuple[float, float]:
        total = own = 0.0
        for p in (root, *root.children(recursive=True)):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
            if p.pid == root.pid:
                own = t.user + t.system
        return total, own

    return used


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def measure(server, rendering: str, model: str, arrays, concurrency: int, args) -> Cell:
    """One measured window of one cell against ``server`` (a started LocalTriton)."""
    url = server.grpc_url
    counted = "visual" if model == "deepfake_ensemble" else model
    executions0, inferences0 = _stats(url, counted)
    count, window, latencies, cpu, triton_cpu, client_cpu = asyncio.run(
        _cell(url, model, arrays, concurrency, args, server_cpu(server.pid))
    )
    executions1, inferences1 = _stats(url, counted)
    return Cell(
        rendering=rendering,
        model=model,
        concurrency=concurrency,
        requests=count,
        window_s=round(window, 2),
        throughput_rps=round(count / window, 2),
        p50_ms=round(_percentile(latencies, 50), 1),
        p95_ms=round(_percentile(latencies, 95), 1),
        p99_ms=round(_percentile(latencies, 99), 1),
        executions=executions1 - executions0,
        inferences=inferences1 - inferences0,
        server_cpu_ms_per_request=round(cpu * 1000, 2),
        triton_cpu_ms_per_request=round(triton_cpu * 1000, 2),
        client_cpu_ms_per_request=round(client_cpu * 1000, 2),
    )


def pooled(cells: list[Cell]) -> Cell:
    """One cell from several windows of the same (rendering, model, concurrency)."""
    first = cells[0]
    requests = sum(c.requests for c in cells)
    window = sum(c.window_s for c in cells)

    def weighted(field: str) -> float:
        return round(sum(getattr(c, field) * c.requests for c in cells) / max(requests, 1), 2)

    return Cell(
        rendering=first.rendering,
        model=first.model,
        concurrency=first.concurrency,
        requests=requests,
        window_s=round(window, 2),
        throughput_rps=round(requests / window, 2),
        # Each window's percentile, weighted by its requests; p99 the worse of the windows.
        p50_ms=weighted("p50_ms"),
        p95_ms=weighted("p95_ms"),
        p99_ms=round(max(c.p99_ms for c in cells), 1),
        executions=sum(c.executions for c in cells),
        inferences=sum(c.inferences for c in cells),
        server_cpu_ms_per_request=weighted("server_cpu_ms_per_request"),
        triton_cpu_ms_per_request=weighted("triton_cpu_ms_per_request"),
        client_cpu_ms_per_request=weighted("client_cpu_ms_per_request"),
    )


# --- the ceiling --------------------------------------------------------------------


def _item_cpu_ms(
    path: Path,
    item: dict[str, np.ndarray],
    batches: tuple[int, ...] = (1, 4),
    runs: int = 5,
    min_s: float = 1.0,
) -> float:
    """Least onnxruntime CPU ms per item of one ONNX file, run as the ``cpu`` host runs it.

    One thread, no spinning, no memory pattern; per item the cheaper of the ``batches``
    (on the reference machine no batch is cheaper per item than one item, see
    ``bench_ort``; measuring both keeps the floor honest on other machines); the minimum
    CPU time over at least ``runs`` runs and ``min_s`` seconds per batch size (the first
    runs of a fresh session cost twice the settled figure: too few runs would put the
    floor, and so the ceiling, in the wrong place).
    """
    from benchmarks.bench_ort import SETTINGS
    from benchmarks.bench_ort import session as ort_session

    session = ort_session(path, SETTINGS["1 thread"])
    best = float("inf")
    for batch in batches:
        feed = {name: np.repeat(array, batch, axis=0) for name, array in item.items()}
        session.run(None, feed)  # warm-up
        done, until = 0, time.perf_counter() + min_s
        while done < runs or time.perf_counter() < until:
            started = time.process_time()
            session.run(None, feed)
            best = min(best, (time.process_time() - started) * 1000 / batch)
            done += 1
    return best


def compute_floors(
    repository: Path, payloads: dict[str, dict[str, np.ndarray]]
) -> dict[str, float]:
    """The least CPU ms one request's model arithmetic costs, per benchmarked model.

    Whatever batching saves, a request still costs at least this: the onnxruntime
    compute of its items. The ensemble's floor is that of its 4 crops, 1 audio window
    and 1 lip-sync clip (the fusion step costs microseconds and is left out).
    """
    ensemble = payloads["deepfake_ensemble"]
    onnx = {m: repository / m / "1" / "model.onnx" for m in ("visual", "audio", "lipsync")}
    crop = _item_cpu_ms(onnx["visual"], {"face": ensemble["faces"][:1]})
    window = _item_cpu_ms(onnx["audio"], {"waveform": ensemble["audio"][:1]})
    clip = _item_cpu_ms(
        onnx["lipsync"],
        {"video": ensemble["lipsync_video"][:1], "mfcc": ensemble["lipsync_mfcc"][:1]},
    )
    return {
        "visual": round(crop * len(payloads["visual"]["face"]), 2),
        "audio": round(window * len(payloads["audio"]["waveform"]), 2),
        "deepfake_ensemble": round(
            crop * len(ensemble["faces"]) + window * len(ensemble["audio"]) + clip, 2
        ),
    }


def ceiling(floor_ms: float, on: dict, off: dict, cores: int) -> dict[str, float]:
    """The most throughput batching could give, from one cell's measurements.

    A request costs, batched or not, at least: its compute floor; the ``tritonserver``
    process's own CPU per request (receiving and decoding it over gRPC, scheduling,
    copying it into a stub's shared memory, answering: per request, not per execution;
    the smaller of the two renderings' figures is taken); and, here, the benchmark
    client's CPU per request, on the same cores.

    ``here``: batching can reach at most ``cores / (floor + tritonserver + client)``
    requests per second, divided by what no batching measured. ``server alone``: with
    the client on another machine and the unbatched server CPU-bound, batching could cut
    the server's CPU per request from what it measured unbatched to ``floor +
    tritonserver``, no lower.
    """
    triton_ms = min(on["triton_cpu_ms_per_request"], off["triton_cpu_ms_per_request"])
    fixed = floor_ms + triton_ms
    rps = cores / ((fixed + on["client_cpu_ms_per_request"]) / 1000)
    return {
        "triton_ms": triton_ms,
        "rps": round(rps, 2),
        "speed_up_here": round(rps / off["throughput_rps"], 2) if off["throughput_rps"] else 0.0,
        "speed_up_server_alone": round(off["server_cpu_ms_per_request"] / fixed, 2),
    }


# --- machine and report -------------------------------------------------------------


def machine() -> dict[str, object]:
    from importlib.metadata import version

    import onnxruntime
    import psutil

    return describe(
        ram_gib=round(psutil.virtual_memory().total / 2**30, 1),
        load_average_at_start=load_average(),
        triton="2.51 (nvidia-pytriton " + version("nvidia-pytriton") + ", python backend)",
        onnxruntime=onnxruntime.__version__,
        numpy=np.__version__,
        tritonclient=version("tritonclient"),
    )


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Triton on CPU: dynamic batching on vs off",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m.get('platform', m.get('os'))}; "
        f"Python {m['python']}, Triton {m['triton']}, onnxruntime {m['onnxruntime']}. "
        f"Load average at start {m['load_average_at_start']} (shared machine). "
        f"Generated by `python -m benchmarks.bench_triton` at {result['when']}.",
        "",
        "One request = one face crop (visual), one 4 s audio window (audio), one short video "
        "(ensemble: 4 face crops, 1 audio window, 1 lip-sync clip). `exec` = executions of the "
        "model (for the ensemble: of `visual`) during the cell; fewer than requests means batching. "
        "`cpu` = CPU time of the server and its python stubs per request (ms): less sensitive to "
        "other load on a shared machine than throughput. Throughput = requests completed / time "
        "until the last finished (requests in flight when a window closes are waited for and "
        "counted, so batching's bursts of completions are not cut off).",
        "",
        "| model | concurrency | batching rps | p50 / p95 / p99 ms | exec | cpu | no batching rps "
        "| p50 / p95 / p99 ms | exec | cpu | speed-up |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    cells = {(c["rendering"], c["model"], c["concurrency"]): c for c in result["cells"]}
    for model in result["models"]:
        for conc in result["concurrency"]:
            on, off = cells.get(("batching", model, conc)), cells.get(("no_batching", model, conc))
            if not on or not off:
                continue
            speed = (
                on["throughput_rps"] / off["throughput_rps"]
                if off["throughput_rps"]
                else float("nan")
            )
            lines.append(
                f"| {model} | {conc} | {on['throughput_rps']:.2f} | {on['p50_ms']:.0f} / {on['p95_ms']:.0f} / "
                f"{on['p99_ms']:.0f} | {on['executions']} | {on['server_cpu_ms_per_request']:.1f} | "
                f"{off['throughput_rps']:.2f} | {off['p50_ms']:.0f} / {off['p95_ms']:.0f} / {off['p99_ms']:.0f} | "
                f"{off['executions']} | {off['server_cpu_ms_per_request']:.1f} | {speed:.2f}x |"
            )
    floors = result.get("floor_ms_per_request")
    if floors:
        cores = result["options"]["cores"]
        lines += [
            "",
            f"**Ceiling at concurrency {max(result['concurrency'])}: the most batching could "
            "give here.** What a request costs batched or not: `floor` = least onnxruntime "
            "CPU for its items (one thread, per item the cheaper of batch 1 and 4, measured "
            "in this run); `triton` = the tritonserver process's own CPU per request (gRPC, "
            "scheduling, copies into the stubs' shared memory; the lower of the two "
            "renderings); `client` = this benchmark's CPU per request (it shares the cores). "
            f"Ceiling rps = {cores} cores / (floor + triton + client). `server alone` = "
            "unbatched server CPU per request / (floor + triton): the most batching could "
            "give with the client on another machine.",
            "",
            "| model | concurrency | floor ms | triton ms | client ms | no batching server ms "
            "| ceiling rps | ceiling speed-up here | server alone | measured |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        # The target is about the busiest cell; at low concurrency the server idles.
        conc = max(result["concurrency"])
        for model in result["models"]:
            on = cells.get(("batching", model, conc))
            off = cells.get(("no_batching", model, conc))
            if not on or not off or model not in floors:
                continue
            c = ceiling(floors[model], on, off, cores)
            measured = on["throughput_rps"] / off["throughput_rps"] if off["throughput_rps"] else 0
            lines.append(
                f"| {model} | {conc} | {floors[model]:.2f} | "
                f"{c['triton_ms']:.2f} | "
                f"{on['client_cpu_ms_per_request']:.2f} | {off['server_cpu_ms_per_request']:.1f} | "
                f"{c['rps']:.1f} | {c['speed_up_here']:.2f}x | {c['speed_up_server_alone']:.2f}x | "
                f"{measured:.2f}x |"
            )
    lines += ["", f"Settings: {json.dumps(result['options'])}", ""]
    return "\n".join(lines)


# --- modes --------------------------------------------------------------------------


def run_triton(args) -> int:
    from cli.local_triton import LocalTriton
    from dfd.settings import Settings
    from export.triton_repo import RepositoryOptions, build_repository

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    chunk = RepositoryOptions().ort_max_batch if args.ort_max_batch is None else args.ort_max_batch
    options = RepositoryOptions(intra_op_threads=args.threads, ort_max_batch=chunk)
    repos = {
        "batching": build_repository(settings, "cpu", options=options),
        "no_batching": build_repository(
            settings,
            "cpu",
            options=RepositoryOptions(
                dynamic_batching=False, intra_op_threads=args.threads, ort_max_batch=chunk
            ),
            destination=settings.data_dir / "model_repository" / "cpu-no-batching",
        ),
    }
    media = Path(os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared" / "media"))
    payloads = _payloads(media)
    result: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "models": list(args.models),
        "concurrency": list(args.concurrency),
        "options": {
            "duration_s": args.duration_s,
            "max_cell_s": args.max_cell_s,
            "intra_op_threads": args.threads or min(4, os.cpu_count() or 1),
            "instances_per_model": 1,
            "ort_max_batch": chunk,
            "cores": len(os.sched_getaffinity(0)),
        },
        "cells": [],
    }
    print("timing the compute floor per request (onnxruntime, one thread) ...", flush=True)
    result["floor_ms_per_request"] = compute_floors(repos["batching"], payloads)
    print(f"floor ms per request: {result['floor_ms_per_request']}", flush=True)
    started = time.monotonic()
    with (
        LocalTriton(settings, repos["batching"]) as on,
        LocalTriton(settings, repos["no_batching"]) as off,
    ):
        servers = {"batching": on, "no_batching": off}
        result["startup_s"] = {name: round(s.startup_s or 0.0, 2) for name, s in servers.items()}
        for model in args.models:
            for conc in args.concurrency:
                # A B B A: background load that drifts during a pair hits both alike.
                windows: dict[str, list[Cell]] = {r: [] for r in RENDERINGS}
                for rendering in (*RENDERINGS, *reversed(RENDERINGS)):
                    windows[rendering].append(
                        measure(servers[rendering], rendering, model, payloads[model], conc, args)
                    )
                for rendering in RENDERINGS:
                    cell = pooled(windows[rendering])
                    result["cells"].append(asdict(cell))
                    print(
                        f"{rendering:12s} {model:18s} c={conc:<3d} {cell.throughput_rps:8.2f} rps  "
                        f"p50 {cell.p50_ms:8.1f}  p95 {cell.p95_ms:8.1f}  p99 {cell.p99_ms:8.1f} ms  "
                        f"exec {cell.executions}/{cell.inferences}  "
                        f"server cpu {cell.server_cpu_ms_per_request:.1f} ms/req",
                        flush=True,
                    )
    result["total_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    write_results(out, "triton_cpu", result, markdown(result))
    print(f"wrote {out / 'triton_cpu.json'} and {out / 'triton_cpu.md'}")
    return 0


def run_torch_cuda(args) -> int:
    """Times the PyTorch modules on CUDA (for a GPU machine without TensorRT/onnxruntime-gpu).

    For each role's module, fp32 and fp16, batches 1, 8 and 32: milliseconds per batch
    and items per second; and how far the CUDA outputs are from the same module's on the
    CPU in fp32 for the same inputs (max abs, per output), so a GPU figure comes with
    evidence that the GPU computes the same thing. ``scripts/gpu-checks.sh`` runs this
    on a lent GPU machine.
    """
    import torch

    if args.torch_device == "cuda" and not torch.cuda.is_available():
        print(
            "--torch-cuda: no CUDA device here (torch.cuda.is_available() is False); nothing "
            "to time (--torch-device cpu runs the same steps on the CPU, as a dry run)."
        )
        return 0
    cuda = args.torch_device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # No tritonclient on this path (export.triton_repo needs it): the GPU image lacks it.
    from dfd.settings import Settings
    from dfd.specs import spec
    from export.onnx_export import build_module

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    checkpoints = {
        "visual": settings.visual_model,
        "audio": settings.audio_model,
        "lipsync": settings.lipsync_model,
    }
    device = torch.device(args.torch_device)
    dtypes = (torch.float32, torch.float16) if cuda else (torch.float32,)
    cells, agreement = [], []
    for role in ("visual", "audio", "lipsync"):
        s = spec(checkpoints[role])
        module = build_module(s.checkpoint, settings).eval()
        generator = torch.Generator().manual_seed(0)
        probe = [torch.rand((8, *t.dims), generator=generator) for t in s.inputs]
        if role == "lipsync":  # grey pixels 0..255 and MFCC-like values
            probe = [probe[0] * 255, (probe[1] - 0.5) * 20]
        with torch.inference_mode():
            reference = _as_tuple(module(*probe))
        module = module.to(device)
        for dtype in dtypes:
            m = module.to(dtype)
            with torch.inference_mode():
                got = _as_tuple(m(*(x.to(device, dtype) for x in probe)))
            agreement.append(
                {
                    "model": role,
                    "dtype": str(dtype).removeprefix("torch."),
                    "max_abs_vs_cpu_fp32": [
                        round(float((g.float().cpu() - r).abs().max()), 6)
                        for g, r in zip(got, reference, strict=True)
                    ],
                }
            )
            print(agreement[-1], flush=True)
            for batch in (1, 8, 32):
                feeds = [torch.rand((batch, *t.dims), device=device, dtype=dtype) for t in s.inputs]
                with torch.inference_mode():
                    for _ in range(3):
                        m(*feeds)
                    sync()
                    n, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < args.duration_s / 4:
                        m(*feeds)
                        n += 1
                    sync()
                elapsed = time.perf_counter() - t0
                cells.append(
                    {
                        "model": role,
                        "checkpoint": s.checkpoint,
                        "dtype": str(dtype).removeprefix("torch."),
                        "batch": batch,
                        "ms_per_batch": round(elapsed / n * 1000, 3),
                        "items_per_s": round(n * batch / elapsed, 1),
                    }
                )
                print(cells[-1], flush=True)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "agreement": agreement,
        "cells": cells,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "torch_cuda.json" if cuda else "torch_cpu_dry_run.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / name}")
    return 0


def _as_tuple(output) -> tuple:
    """A module's output(s) as a tuple of tensors."""
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--torch-cuda", action="store_true", help="Time the PyTorch models on CUDA instead."
    )
    parser.add_argument(
        "--torch-device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="--torch-cuda's device; cpu: the same steps on the CPU (a dry run, fp32 only).",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    parser.add_argument(
        "--duration-s",
        type=float,
        default=3.0,
        help="Measured window (at least); two per rendering and cell.",
    )
    parser.add_argument("--max-cell-s", type=float, default=15.0, help="Longest measured window.")
    parser.add_argument(
        "--threads", type=int, default=None, help="onnxruntime threads per instance."
    )
    parser.add_argument(
        "--ort-max-batch",
        type=int,
        default=None,
        help="Largest onnxruntime call (0: whole batch; default: the rendering's).",
    )
    parser.add_argument(
        "--data-dir", default=None, help="dfd data folder (default: DFD_DATA_DIR or .dfd)."
    )
    parser.add_argument("--out", default=str(RESULTS), help="Folder for the result files.")
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip the servers' cleanup; make it unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return run_torch_cuda(args) if args.torch_cuda else run_triton(args)


if __name__ == "__main__":
    raise SystemExit(main())
