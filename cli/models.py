"""``dfd models pull|export|build`` and ``dfd triton``: the model side of the ``dfd`` command.

    dfd models pull                  weights (DFD_WEIGHTS_DIR, cache, or checked download)
    dfd models pull sbi --accept-terms   a user-fetched detector's weights (research-only licence)
    dfd models export                ONNX for the served checkpoints (skipped when current)
    dfd models build --target cpu    pull + export + the Triton repository (``make models``)
    dfd models list                  what serves each role: the settings' checkpoints, Triton's versions
    dfd models rollout ...           canary or shadow rollout of a new version (cli/rollout.py)
    dfd models calibrate             fit dfd/calibration.json on the scorecard's raw scores
    dfd triton                       a local Triton on the cpu repository until Ctrl-C

Heavy imports (torch, onnx, tritonclient) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCORES = (
    "benchmarks/results/detection_scores.json",
    "benchmarks/results/detection_scores_calibration.json",
)


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
    pull.add_argument(
        "detectors",
        nargs="*",
        metavar="DETECTOR",
        help="Detectors whose weights to fetch (e.g. sbi), including user-fetched ones "
        "that dfd never downloads unasked (research-only licences).",
    )
    pull.add_argument(
        "--detector",
        action="append",
        dest="detector_options",
        default=[],
        metavar="NAME",
        help="Same as the DETECTOR argument (repeatable).",
    )
    pull.add_argument(
        "--accept-terms",
        action="store_true",
        help="Accept the licence terms of a user-fetched detector's weights (shown first).",
    )
    pull.add_argument(
        "--sha256",
        default=None,
        metavar="HEX",
        help="The digest you expect, for a file whose authors publish none (else the first "
        "fetch's digest is recorded and every later use is checked against it).",
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

    listing = sub.add_parser(
        "list",
        help="What serves each role: the configured checkpoint and what Triton has loaded.",
    )
    listing.add_argument(
        "--url",
        default=None,
        help="Triton's gRPC host:port (default: DFD_TRITON_URL; none: only the configuration).",
    )
    listing.set_defaults(handler=_list)

    from cli import rollout  # light: it imports its handlers' needs inside them

    rollout.add_parser(sub)

    calibrate = sub.add_parser(
        "calibrate",
        help="Fit the per-detector calibration and fusion weights (dfd/calibration.json).",
        description="Fit Platt/isotonic calibrations and logistic-regression fusion weights on "
        "the scorecard's raw-score files (python -m benchmarks.bench_detection), with "
        "stratified k-fold held-out figures.",
    )
    calibrate.add_argument(
        "scores",
        nargs="*",
        type=Path,
        metavar="SCORES_JSON",
        help="Raw-score files (default: " + ", ".join(DEFAULT_SCORES) + ").",
    )
    calibrate.add_argument(
        "--out", type=Path, default=None, help="Where to write (default: dfd/calibration.json)."
    )
    calibrate.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    calibrate.add_argument("--seed", type=int, default=0, help="Seed of the fold assignment.")
    calibrate.add_argument(
        "--version", default=None, help="Version string (default: derived from the data)."
    )
    calibrate.set_defaults(handler=_calibrate)

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
    named = [*getattr(args, "detectors", []), *getattr(args, "detector_options", [])]
    if named:
        return _pull_detectors(settings, named, args)
    for name, path in pull_all(settings, _checkpoints(settings, args)).items():
        print(f"{name}: {path}")
    return 0


def _pull_detectors(settings, names: list[str], args: argparse.Namespace) -> int:  # noqa: ANN001
    """``dfd models pull sbi``: a named detector's weights, user-fetched ones included."""
    from dfd.detectors import DETECTORS
    from dfd.errors import ConfigurationError
    from dfd.specs import spec
    from export.weights import manifest, pull_all, pull_user

    unknown = sorted(set(names) - set(DETECTORS))
    if unknown:
        raise ConfigurationError(
            f"dfd models pull: no detector named {', '.join(unknown)}; known: "
            + ", ".join(DETECTORS)
        )
    files = manifest()
    for name in names:
        checkpoint = DETECTORS[name].checkpoint(settings)
        weights = spec(checkpoint).weights
        user = [files[f] for f in weights if files[f].user_fetched]
        if not user:
            for rel, path in pull_all(settings, [checkpoint]).items():
                print(f"{rel}: {path}")
            continue
        for entry in user:
            print(f"{entry.file}: {entry.what}")
            print(
                f"  licence: {entry.licence}\n  source:  {entry.source}\n  terms:   {entry.terms}"
            )
        if not args.accept_terms:
            print(
                f"dfd models pull: {name}'s weights are not dfd's to give; read the terms "
                "above and pass --accept-terms to download them",
                file=sys.stderr,
            )
            return 2
        for entry in user:
            path, digest, first = pull_user(entry.file, settings, sha256=args.sha256)
            print(f"{entry.file}: {path}\n  sha256 {digest}")
            if first:
                print(
                    "  its authors publish no SHA-256: this digest is now recorded and every "
                    "later use is checked against it; compare it with a copy you trust"
                )
        for rel, path in pull_all(settings, [checkpoint]).items():
            if files[rel].user_fetched:
                continue
            print(f"{rel}: {path}")
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


def _list(args: argparse.Namespace) -> int:
    from export.triton_repo import role_specs

    settings = _settings()
    url = args.url or settings.triton_url
    served: dict[str, list[tuple[str, str]]] = {}
    if url:
        from cli.triton_index import served_versions

        served = served_versions(url, "models list")
    rows = [("role / Triton model", "configured", "Triton serves")]
    roles = role_specs(settings)
    for role, model in roles.items():
        versions = served.pop(role, [])
        rows.append((role, model.tag, _versions(versions) if url else "(no DFD_TRITON_URL)"))
    for name, versions in sorted(served.items()):
        rows.append((name, "-", _versions(versions)))
    from dfd.detectors import not_installed

    for name in not_installed(settings):  # enabled, weights absent: say so, never hide it
        rows.append((name, "not installed", f"dfd models pull {name}"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
    return 0


def _versions(versions: list[tuple[str, str]]) -> str:
    if not versions:
        return "not loaded"
    return ", ".join(f"v{version} {state}" for version, state in sorted(versions))


def _calibrate(args: argparse.Namespace) -> int:
    import hashlib

    from dfd.calibration import DEFAULT_PATH
    from dfd.errors import ConfigurationError
    from export.calibrate import FIT_REVISION, CalibrationDataError, calibrate, write

    settings = _settings()
    files = args.scores or [ROOT / p for p in DEFAULT_SCORES]
    missing = [str(p) for p in files if not Path(p).is_file()]
    if missing:
        raise ConfigurationError(
            "dfd models calibrate: no scores file "
            + ", ".join(missing)
            + " (run python -m benchmarks.bench_detection first)"
        )
    if args.folds < 2:
        raise ConfigurationError(f"dfd models calibrate: --folds must be >= 2, got {args.folds}")
    digest = hashlib.sha256()
    for p in files:
        digest.update(Path(p).read_bytes())
    digest.update(f"{args.folds}/{args.seed}/{FIT_REVISION}/{settings.detectors}".encode())
    version = args.version or f"1+{digest.hexdigest()[:10]}"
    from dfd.detectors import scorers

    # the fusion is fitted for the detectors that run (DFD_DETECTORS): a detector left out
    # of the fit would be left out of the verdict, one fitted but not run would skew it
    only = [d.name for d in scorers(settings)]
    prefix = f"DFD_DETECTORS={','.join(only)} " if settings.detectors else ""
    command = f"{prefix}dfd models calibrate " + " ".join(
        ([*(str(p) for p in args.scores)] if args.scores else [])
        + [f"--folds {args.folds}", f"--seed {args.seed}"]
        + ([f"--version {args.version}"] if args.version else [])
    )
    try:
        doc = calibrate(
            [Path(p) for p in files],
            command=command,
            version=version,
            k=args.folds,
            seed=args.seed,
            threshold=settings.threshold,
            band=settings.inconclusive_band,
            root=ROOT,
            only=only,
        )
    except CalibrationDataError as exc:
        raise ConfigurationError(f"dfd models calibrate: {exc}") from exc
    out = args.out or DEFAULT_PATH
    write(doc, out)
    cv = doc["cross_validation"]
    print(f"{out}: version {version}, {doc['fusion']['n']} items, {args.folds}-fold held-out:")
    for name, fig in [*cv["detectors"].items(), ("fused", cv["fused"])]:
        raw = f"  (raw: AUC {fig['auc_raw']}, ECE {fig['ece_raw']})" if "auc_raw" in fig else ""
        print(
            f"  {name:<8} n {fig['n']:<4} AUC {fig['auc']}  EER {fig['eer']}  ECE {fig['ece']}"
            + raw
        )
    for name, reason in doc["uncalibrated"].items():
        print(f"  {name:<8} not calibrated: {reason}")
    return 0


def _triton(args: argparse.Namespace) -> int:
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
