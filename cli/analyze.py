"""``dfd analyze PATH|URL``: one video through the worker's pipeline, without the queue.

Triton: ``DFD_TRITON_URL`` when set, else a local Triton started for the run on the
``DFD_TRITON_TARGET`` rendering (built first if it is missing or stale; ``cli.local``). Evidence: the configured store, or
``--out DIR`` to write the files into a folder (their URLs are then ``file://`` paths).
``--json`` prints only the result document; progress goes to stderr (bars on a terminal,
plain lines otherwise).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cli.local import start_triton
from dfd.errors import ConfigurationError

if TYPE_CHECKING:
    from dfd.schemas import Result
    from dfd.settings import Settings
    from dfd.states import Stage

_WEIGHT_NAMES = ("visual", "audio", "lipsync")
_BAR_WIDTH = 28


def parse_weights(text: str) -> dict[str, float]:
    """``visual=0,audio=1,lipsync=0.5`` (any subset) -> settings overrides."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in _WEIGHT_NAMES:
            raise argparse.ArgumentTypeError(
                f"--weights: expected name=value with names {', '.join(_WEIGHT_NAMES)}, got {part!r}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--weights: {name} must be a number, got {value!r}"
            ) from None
        if not 0 <= weight <= 1:
            raise argparse.ArgumentTypeError(
                f"--weights: {name} must be between 0 and 1, got {weight}"
            )
        out[f"weight_{name}"] = weight
    if not out:
        raise argparse.ArgumentTypeError("--weights: expected at least one name=value")
    return out


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="analyse one video file or URL (no queue)",
        description="Analyse one video through the same pipeline the workers run.",
    )
    parser.add_argument("source", metavar="PATH|URL", help="a video file or an http(s) URL")
    parser.add_argument("--json", action="store_true", help="print only the result document (JSON)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write the evidence files into DIR")
    parser.add_argument(
        "--weights",
        type=parse_weights,
        metavar="visual=W,audio=W,lipsync=W",
        help="per modality, the share of its fitted fusion weight kept, 0..1 (default: DFD_WEIGHT_*)",
    )
    parser.set_defaults(handler=run)


class FolderStore:
    """Evidence written into a plain folder; URLs are ``file://`` paths (``--out DIR``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return f"{job_id}/{name}"

    def url(self, key: str) -> str:
        return (self.root / key).as_uri()


class ProgressPrinter:
    """Stage progress on stderr: a redrawn bar on a terminal, one line per stage otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last: tuple[str, bool] | None = None
        self._started = time.monotonic()

    def __call__(self, stage: Stage, fraction: float) -> None:
        name = getattr(stage, "value", str(stage))
        elapsed = time.monotonic() - self._started
        if self.tty:
            filled = int(round(fraction * _BAR_WIDTH))
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            end = "\n" if fraction >= 1.0 else ""
            self.stream.write(f"\r{name:<9} [{bar}] {fraction * 100:5.1f}%  {elapsed:6.1f}s{end}")
            self.stream.flush()
        else:
            state = (name, fraction >= 1.0)
            if state != self._last:
                self.stream.write(
                    f"dfd analyze: {name} {'done' if state[1] else 'started'} ({elapsed:.1f}s)\n"
                )
                self.stream.flush()
            self._last = state


def _settings(args: argparse.Namespace) -> Settings:
    from dfd.settings import load_settings

    overrides = dict(args.weights or {})
    return load_settings(**overrides)


def _summary(result: Result) -> str:
    lines = [f"label       {result.label.value}", f"confidence  {result.confidence:.3f}"]
    for name, mod in result.modalities.items():
        score = "unused" if not mod.used or mod.score is None else f"{mod.score:.3f}"
        lines.append(f"  {name:<9} {score:<8} weight {mod.weight:.2f}")
    lines.append("timings_ms  " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items()))
    ev = result.evidence
    for url in ev.thumbnails:
        lines.append(f"thumbnail   {url}")
    for url in ev.heatmaps:
        lines.append(f"heatmap     {url}")
    for url in ev.sbi_heatmaps:
        lines.append(f"sbi heatmap {url}")
    if ev.timeline_chart:
        lines.append(f"timeline    {ev.timeline_chart}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The handler of ``dfd analyze``."""
    from dfd.tracing import job_span, setup_tracing
    from dispatcher.pipeline import analyze
    from dispatcher.triton_client import TritonClient

    settings = _settings(args)
    setup_tracing(settings, "dfd-analyze")
    source: str | Path = args.source if "://" in args.source else Path(args.source)
    if isinstance(source, Path) and not source.is_file():
        raise ConfigurationError(f"dfd analyze: {source} is not a file")
    if args.out is not None:
        store: Any = FolderStore(args.out)
    else:
        from dispatcher.store import make_store

        store = make_store(settings)
    progress = ProgressPrinter()
    job_id = f"cli-{uuid.uuid4().hex[:12]}"

    url, server = start_triton(
        settings, lambda line: print(f"dfd analyze: {line}", file=sys.stderr)
    )
    try:
        with TritonClient(
            url, timeout_s=settings.triton_timeout_s, retries=settings.triton_retries
        ) as client:
            kind = "url" if isinstance(source, str) else "file"
            with job_span(job_id, kind):
                result = analyze(source, settings, client, store, progress, job_id=job_id)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(_summary(result))
    return 0
