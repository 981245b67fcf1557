"""Does a dynamic-batching queue policy stall the end of a burst? (Triton 2.51, python backend)

    .venv/bin/python -m benchmarks.probe_queue_policy            # writes results/queue_policy.{json,md}
    .venv/bin/python -m benchmarks.probe_queue_policy --bursts 6

Why this exists: ``bench_triton`` showed a p99 of ~0.55 s for batched ``visual`` at
concurrency 32 against ~0.07 s unbatched. The slow requests were always the last ones of
a measured window: when a burst of requests ends and nothing follows, Triton's dynamic
batcher can miss the wake-up for the requests still queued and sleep out its 500 ms idle
wait (``default_wait_microseconds`` in the core's dynamic batch scheduler). It only
happens when the model's ``dynamic_batching`` has a ``default_queue_policy`` (a
``max_queue_size``, or a timeout policy). ``dfd models build`` therefore renders no queue
policy; this probe keeps the evidence reproducible.

For each variant of the ``visual`` config it starts a local Triton, then runs bursts:
``--concurrency`` closed-loop clients for ``--burst-s`` seconds, after which no client
sends again until all have finished. A burst whose slowest request took longer than
``--stall-ms`` stalled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, load_average, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

_QUEUE_SIZE = "  default_queue_policy {\n    max_queue_size: 256\n  }\n"
_QUEUE_TIMEOUT = (
    "  default_queue_policy {\n    timeout_action: DELAY\n"
    "    default_timeout_microseconds: 60000000\n  }\n"
)


def _with_policy(policy: str) -> Callable[[str], str]:
    def edit(config: str) -> str:
        # Insert the policy as the last entry of the dynamic_batching block.
        return re.sub(
            r"(dynamic_batching \{\n(?:  .*\n)*?)\}", rf"\g<1>{policy}}}", config, count=1
        )

    return edit


# variant -> edit of the rendered visual/config.pbtxt
VARIANTS: dict[str, Callable[[str], str]] = {
    "as built (no queue policy)": lambda config: config,
    "max_queue_size 256": _with_policy(_QUEUE_SIZE),
    "timeout policy (DELAY, 60 s)": _with_policy(_QUEUE_TIMEOUT),
}


async def _bursts(url: str, face: np.ndarray, concurrency: int, bursts: int, burst_s: float):
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc.aio import InferenceServerClient

    tensor = grpcclient.InferInput("face", list(face.shape), "FP32")
    tensor.set_data_from_numpy(face)
    client = InferenceServerClient(url)

    async def burst(seconds: float) -> float:
        end = time.perf_counter() + seconds
        slowest = 0.0

        async def one_client() -> None:
            nonlocal slowest
            while time.perf_counter() < end:
                started = time.perf_counter()
                await client.infer("visual", [tensor], client_timeout=60)
                slowest = max(slowest, time.perf_counter() - started)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return slowest * 1000

    try:
        await burst(1.0)  # warm-up
        return [round(await burst(burst_s), 1) for _ in range(bursts)]
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", type=int, default=12)
    parser.add_argument("--burst-s", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stall-ms", type=float, default=300.0)
    parser.add_argument("--data-dir", default=None, help="dfd data folder (default: .dfd).")
    parser.add_argument("--out", default=str(RESULTS), help="Folder for the result files.")
    args = parser.parse_args(argv)

    from benchmarks.bench_triton import _payloads
    from cli.local_triton import LocalTriton
    from dfd.settings import Settings
    from export.triton_repo import build_repository

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    built = build_repository(settings, "cpu")
    media = Path(os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared" / "media"))
    face = _payloads(media)["visual"]["face"]
    result: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(load_average_at_start=load_average()),
        "options": {k: v for k, v in vars(args).items() if k not in ("data_dir", "out")},
        "variants": {},
    }
    for name, edit in VARIANTS.items():
        copy = settings.data_dir / "model_repository" / "cpu-queue-policy-probe"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(built, copy, symlinks=True)
        config = copy / "visual" / "config.pbtxt"
        edited = edit(config.read_text())
        if name != "as built (no queue policy)" and "default_queue_policy" not in edited:
            raise SystemExit(f"probe: could not add the queue policy for {name!r}")
        config.write_text(edited)
        try:
            with LocalTriton(settings, copy) as server:
                slowest = asyncio.run(
                    _bursts(server.grpc_url, face, args.concurrency, args.bursts, args.burst_s)
                )
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        stalled = sum(ms > args.stall_ms for ms in slowest)
        result["variants"][name] = {"slowest_ms_per_burst": slowest, "stalled": stalled}
        print(
            f"{name:30s} stalled {stalled}/{args.bursts}  slowest per burst {slowest}", flush=True
        )
    write_results(Path(args.out), "queue_policy", result, markdown(result), echo=False)
    return 0


def markdown(result: dict) -> str:
    o = result["options"]
    m = result["machine"]
    lines = [
        "# Dynamic batching queue policy: stalls at the end of a burst",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; load average at start "
        f"{m['load_average_at_start']}. Generated by `python -m benchmarks.probe_queue_policy` "
        f"at {result['when']}. `visual` on the local Triton 2.51 (python backend), "
        f"{o['bursts']} bursts of {o['concurrency']} closed-loop clients for {o['burst_s']} s each; "
        f"a burst stalled when its slowest request took over {o['stall_ms']:.0f} ms.",
        "",
        "| visual config | stalled bursts | slowest request per burst (ms) |",
        "|---|---:|---|",
    ]
    for name, v in result["variants"].items():
        slowest = ", ".join(f"{ms:.0f}" for ms in v["slowest_ms_per_burst"])
        lines.append(f"| {name} | {v['stalled']}/{o['bursts']} | {slowest} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
