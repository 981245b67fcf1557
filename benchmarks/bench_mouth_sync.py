"""The mouth-sync detector on GRID reals, GRID dubs and the wild set: per-item r, lag, AUC.

    python -m benchmarks.bench_mouth_sync [--media-dir DIR] [--data-dir DIR] [--out NAME]

Each video is decoded as the service decodes it, its speech found by silero-vad and its
faces by YuNet (the exported ONNX files, one onnxruntime thread each, answering as Triton
would), and :func:`dispatcher.mouth.mouth_sync` run over the lip-sync segments, the
face mesh converted from TFLite included. An item's score is its best-synced track's
(``(1 - r) / 2``; the most confident face is the one each segment measures).

Sets:
- GRID: the 11 real clips of ``<media>/grid`` (in sync by construction), and 22 dubs made
  here with ffmpeg: each clip's picture with the sound of the clips 1 and 3 after it
  (another speaker, the same kind of sentence, so speech starts and ends at similar
  times: a hard dub).
- wild: the videos of ``<media>/wild/labels.csv`` with a sound track, by kind; the kinds
  with lip motion driven by audio (``lipsync``, ``talking_head``) are scored against every
  real video of the set.

Evaluation only: nothing is fitted to these files. Writes
``benchmarks/results/mouth_sync.{md,json}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import (
    add_results_arguments,
    describe,
    load_average,
    read_results,
    write_report,
)
from benchmarks.ort_models import OrtModels
from dfd import metrics
from dfd.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {"face_detector": "yunet_n", "vad": "silero_vad", "face_mesh": "mediapipe_face_mesh"}


def mouth_models(settings: Settings) -> OrtModels:
    """The three models the stage needs, from their exported ONNX files, one thread each."""
    return OrtModels.exported(settings, MODELS)


@dataclass(frozen=True)
class Item:
    path: str
    set: str  # "grid" | "wild"
    kind: str
    label: str
    tracks: int
    frames: int
    correlation: float | None
    lag_s: float | None
    zero_lag_correlation: float | None
    onset_correlation: float | None
    score: float | None
    seconds: float


DUB_OFFSETS = (1, 3)  # clip i gets the sound of clips i + 1 and i + 3


def make_dubs(grid: list[Path], out_dir: Path) -> list[Path]:
    """Each GRID clip's picture with two other clips' sound (ffmpeg; H.264 and AAC)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dubs = []
    for i, video in enumerate(grid):
        for offset in DUB_OFFSETS:
            audio = grid[(i + offset) % len(grid)]
            out = out_dir / f"dub_{video.stem}_with_{audio.stem}.mp4"
            if not out.is_file():
                subprocess.run(
                    ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(audio)]
                    + ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", "ultrafast"]
                    + ["-c:a", "aac", "-shortest", str(out)],
                    check=True,
                )
            dubs.append(out)
    return dubs


def measure(path: Path, settings: Settings, models: OrtModels) -> dict:
    from dispatcher.decode import decode
    from dispatcher.faces import find_faces
    from dispatcher.mouth import mouth_sync
    from dispatcher.probe import probe

    started = time.perf_counter()
    info = probe(path, settings)
    media = decode(path, settings, info.duration_s)
    from dispatcher.speech import find_speech

    speech = find_speech(media.audio, models)
    faces = find_faces(media, models, settings, speech=speech.found)
    found = mouth_sync(media, faces, speech, models)
    best = min(found, key=lambda s: s.score) if found else None
    return {
        "tracks": len(found),
        "frames": int(sum(s.frames for s in found)),
        "correlation": best.correlation if best else None,
        "lag_s": best.lag_s if best else None,
        "zero_lag_correlation": best.zero_lag_correlation if best else None,
        "onset_correlation": best.onset_correlation if best else None,
        "score": best.score if best else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _auc(items: list[Item], key: str = "score") -> tuple[float | None, int, int]:
    have = [i for i in items if getattr(i, key) is not None]
    scores = [getattr(i, key) for i in have]
    labels = [1 if i.label == "fake" else 0 for i in have]
    return metrics.auc(scores, labels), labels.count(1), labels.count(0)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def report(items: list[Item], started: str) -> str:
    grid = [i for i in items if i.set == "grid"]
    wild = [i for i in items if i.set == "wild"]
    wild_real = [i for i in wild if i.label == "real"]
    rows = []
    comparisons = [("GRID reals vs GRID dubs", grid)]
    for kind in ("lipsync", "talking_head", "faceswap", "reenactment"):
        fakes = [i for i in wild if i.kind == kind and i.label == "fake"]
        if fakes:
            comparisons.append((f"wild {kind} fakes vs every wild real", fakes + wild_real))
    comparisons.append(("wild: every fake vs every real", wild))
    for name, group in comparisons:
        auc, n_fake, n_real = _auc(group)
        auc0, _, _ = _auc(group, "zero_lag_correlation")  # high r0 ranks as real
        rows.append(
            f"| {name} | {n_fake} | {n_real} | {_fmt(auc)} | "
            f"{_fmt(None if auc0 is None else 1 - auc0)} |"
        )
    lines = [
        "# Mouth sync (MediaPipe face mesh vs voice energy)",
        "",
        f"Run {started} by `python -m benchmarks.bench_mouth_sync`; evaluation only, nothing "
        "fitted to these files (the detrending window and the score's lag range were chosen "
        "on the GRID pairs, so the GRID row is in-sample; the wild rows are not). An item's "
        "score is `(1 - r) / 2` of its best-synced track, r the pooled Pearson correlation "
        "of the detrended mouth opening (inner-lip gap / eye-corner distance, 25 fps, over "
        "the one-second lip-sync segments) with the detrended log energy of the voice, best "
        "within +-40 ms; 'lag' is the peak of the whole +-320 ms curve. AUC: fakes (dubs) "
        "ranked above reals; the last column ranks by r at lag 0 instead.",
        "",
        "| comparison | fakes | reals | AUC | AUC (r at lag 0) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "## Items",
        "",
        "| set | item | kind | label | frames | r | lag (ms) | r at 0 | onset r | score | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in items:
        lag = None if i.lag_s is None else i.lag_s * 1000
        lines.append(
            f"| {i.set} | {Path(i.path).name} | {i.kind} | {i.label} | {i.frames} | "
            f"{_fmt(i.correlation)} | {_fmt(lag, '+.0f')} | {_fmt(i.zero_lag_correlation)} | "
            f"{_fmt(i.onset_correlation)} | {_fmt(i.score)} | {i.seconds} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media-dir", type=Path, default=Path(os.environ.get("DFD_MEDIA_DIR", "")))
    parser.add_argument("--data-dir", type=Path, default=None)
    add_results_arguments(parser, "mouth_sync")
    args = parser.parse_args(argv)
    if args.report_only:
        doc = read_results(RESULTS, args.out)
        items = [Item(**row) for row in doc["items"]]
        write_report(RESULTS / f"{args.out}.md", report(items, doc["started"]))
        return 0
    media_dir: Path = args.media_dir
    if not (media_dir / "grid").is_dir():
        print(f"bench_mouth_sync: no grid/ under {media_dir} (--media-dir)", file=sys.stderr)
        return 2
    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    models = mouth_models(settings)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    grid = sorted((media_dir / "grid").glob("*.mpg"))
    todo: list[tuple[Path, str, str, str]] = [(p, "grid", "grid", "real") for p in grid]
    dubs = make_dubs(grid, settings.data_dir / "tmp" / "mouth_dubs")
    todo += [(p, "grid", "grid_dub", "fake") for p in dubs]
    with (media_dir / "wild" / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["kind"] != "audio" and row.get("has_audio") == "yes":
                todo.append((media_dir / "wild" / row["path"], "wild", row["kind"], row["label"]))
    items = []
    for path, group, kind, label in todo:
        try:
            got = measure(path, settings, models)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports the item and goes on
            print(f"{path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        item = Item(
            path=str(path.relative_to(media_dir)) if path.is_relative_to(media_dir) else path.name,
            set=group,
            kind=kind,
            label=label,
            **got,
        )
        items.append(item)
        print(
            f"{group} {kind} {label} {path.name}: r={_fmt(item.correlation)} "
            f"lag={_fmt(item.lag_s)} ({item.seconds} s)",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_report(RESULTS / f"{args.out}.md", report(items, started))
    doc = {
        "started": started,
        "machine": describe(load_average=load_average()),
        "items": [asdict(i) for i in items],
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
