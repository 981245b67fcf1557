"""``dfd models pull|export|build`` and ``dfd triton``: the model side of the ``dfd`` command.

    dfd models pull                  weights (DFD_WEIGHTS_DIR, cache, or checked download)
    dfd models export                ONNX for the served checkpoints (skipped when current)
    dfd models build --target cpu    pull + export + the Triton repository (``make models``)
    dfd triton                       a local Triton on the cpu repository until Ctrl-C

Heavy imports (torch, onnx, tritonclient) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models", help="Weights, ONNX export and the Triton model repository."
    )
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    def with_checkpoints(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--checkpoint",
            action="append",
            dest="checkpoints",
            metavar="NAME",
            help="Checkpoint to use (repeatable, e.g. mesoinception_df); default: the settings' choice per role.",
        )
        return parser

    pull = with_checkpoints(
        sub.add_parser("pull", help="Fetch and check the weights of the served checkpoints.")
    )
    pull.add_argument(
        "--all",
        action="store_true",
        help="Every checkpoint in the registry, not just the served ones.",
    )
    pull.set_defaults(handler=_pull)

    export = with_checkpoints(
        sub.add_parser("export", help="Export the served checkpoints to ONNX.")
    )
    export.add_argument("--all", action="store_true", help="Every checkpoint in the registry.")
    export.set_defaults(handler=_export)

    build = with_checkpoints(
        sub.add_parser("build", help="Pull, export and generate the Triton repository.")
    )
    build.add_argument(
        "--target",
        choices=("cpu", "gpu"),
        default=None,
        help="Rendering (default: DFD_TRITON_TARGET).",
    )
    build.add_argument(
        "--engine",
        choices=("auto", "onnxruntime", "tensorrt_plan"),
        default="auto",
        help="gpu only: auto builds TensorRT plans when TensorRT is installed.",
    )
    build.add_argument(
        "--force", action="store_true", help="Rebuild even when the repository is current."
    )
    build.set_defaults(handler=_build)

    triton = subparsers.add_parser(
        "triton", help="Run a local Triton on the cpu repository until Ctrl-C."
    )
    triton.add_argument(
        "--repository",
        default=None,
        help="Repository folder (default: the cpu one under DFD_DATA_DIR).",
    )
    triton.set_defaults(handler=_triton)


def _settings():
    from dfd.logs import configure_logging
    from dfd.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return settings


def _checkpoints(settings, args: argparse.Namespace) -> list[str]:
    from dfd.specs import SPECS
    from export.triton_repo import role_specs

    if getattr(args, "all", False):
        return list(SPECS)
    return [s.checkpoint for s in role_specs(settings, args.checkpoints).values()]


def _pull(args: argparse.Namespace) -> int:
    from export.weights import pull_all

    settings = _settings()
    for name, path in pull_all(settings, _checkpoints(settings, args)).items():
        print(f"{name}: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from export.onnx_export import export_all

    settings = _settings()
    for name, path in export_all(settings, _checkpoints(settings, args)).items():
        print(f"{name}: {path}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from export.triton_repo import RepositoryOptions, build_repository
    from export.weights import pull_all

    settings = _settings()
    target = args.target or settings.triton_target
    pull_all(settings, _checkpoints(settings, args))
    folder = build_repository(
        settings,
        target,
        args.checkpoints,
        options=RepositoryOptions(engine=args.engine),
        force=args.force,
    )
    print(f"{target} model repository: {folder.resolve()}")
    return 0


def _triton(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cli.local_triton import LocalTriton

    settings = _settings()
    repository = Path(args.repository) if args.repository else None
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    # Until the server is ready a Ctrl-C interrupts the start (LocalTriton stops what it
    # started); once it is, a handler rather than KeyboardInterrupt: a Ctrl-C arriving
    # between the "Ctrl-C stops it" line and the wait loop would otherwise escape as an
    # exit status of 130.
    def interrupt_start(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a SIGTERM while starting: unwind like Ctrl-C

    signal.signal(signal.SIGTERM, interrupt_start)
    with LocalTriton(settings, repository) as server:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"triton ready in {server.startup_s:.1f} s (repository {server.repository})")
        print(f"  grpc     {server.grpc_url}")
        print(f"  http     {server.http_url}")
        print(f"  metrics  {server.metrics_url}")
        print("Ctrl-C stops it.", flush=True)
        while not stop and server.running:
            time.sleep(0.5)
        if not server.running and not stop:
            print(f"triton exited on its own; log tail:\n{server.log_tail()}", file=sys.stderr)
            return 1
    return 0
