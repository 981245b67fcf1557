"""One audio detector alone over a labelled folder: per-file scores, AUC, and its cost per window.

    .venv/bin/python -m benchmarks.bench_audio_detector --checkpoint rawgat_st [FOLDER]
        [--video-tracks] [--threads 2] [--timing-windows 8]

Any checkpoint whose spec takes a ``waveform`` of ``AUDIO_SAMPLES`` and returns ``score`` =
P(spoof) (``aasist``, ``aasist_l``, ``rawgat_st``, ...). Its ONNX export (``export_one``,
reused when up to date under ``settings.onnx_dir``) runs in onnxruntime on CPU, with no
Triton, no speech gate and no calibration: this measures the checkpoint, not the pipeline.

``FOLDER`` (default ``$DFD_MEDIA_DIR/wild``) holds ``labels.csv`` as
``benchmarks.bench_detection`` reads it. Every ``audio`` item is scored; with
``--video-tracks`` also the audio track of every other item that has one. Each track is
decoded as the worker decodes it (``dispatcher.decode_pyav.read_audio``: 16 kHz mono), cut
into windows as the worker cuts them for AASIST (``dfd.features.audio_windows`` with the
``audio_hop_s`` setting), and its score is the mean of its windows' scores.

The single-thread cost is timed separately on ``--timing-windows`` windows, one at a time,
in wall and CPU time (``time.process_time``; less disturbed by other load on a shared
machine); the minimum and median are reported.

Writes ``benchmarks/results/audio_<checkpoint>.md`` and ``.json`` (the per-file scores).
The wild set is evaluation data under research-only terms: report on it, never tune to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_detection import read_labels
from benchmarks.machine import describe, load_average
from dfd import metrics
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_SAMPLES, spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class FileScore:
    path: str
    label: str
    kind: str
    windows: int
    score: float  # mean of the window scores
    lowest: float
    highest: float


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_audio_spec(checkpoint: str) -> None:
    model = spec(checkpoint)
    inputs = {t.name: t.dims for t in model.inputs}
    outputs = {t.name for t in model.outputs}
    if inputs != {"waveform": (AUDIO_SAMPLES,)} or "score" not in outputs:
        raise SystemExit(
            f"bench_audio_detector: {checkpoint} is not an audio detector (inputs {inputs}, "
            f"outputs {sorted(outputs)}); expected waveform ({AUDIO_SAMPLES},) -> score"
        )


def score_windows(sess: Any, windows: np.ndarray, batch: int) -> np.ndarray:
    """P(spoof) per window, in batches of at most ``batch``."""
    scores = []
    for i in range(0, len(windows), batch):
        (out,) = sess.run(["score"], {"waveform": windows[i : i + batch]})
        scores.append(out.reshape(-1))
    return np.concatenate(scores)


def time_windows(path: Path, windows: np.ndarray) -> dict[str, float]:
    """Single-thread ms per window, one window per call (after one warm-up call)."""
    sess = session(path, threads=1)
    sess.run(["score"], {"waveform": windows[:1]})
    wall, cpu = [], []
    for w in windows:
        t0, c0 = time.perf_counter(), time.process_time()
        sess.run(["score"], {"waveform": w[None]})
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {
        "windows": len(windows),
        "wall_ms_min": round(min(wall), 1),
        "wall_ms_median": round(statistics.median(wall), 1),
        "cpu_ms_min": round(min(cpu), 1),
        "cpu_ms_median": round(statistics.median(cpu), 1),
    }


def group(records: list[FileScore]) -> dict[str, Any]:
    """AUC and the verdict counts at 0.5 of one group of files (fake is the positive class)."""
    s = [r.score for r in records]
    y = [int(r.label == "fake") for r in records]
    auc = metrics.auc(s, y)
    return {
        "n_fake": sum(y),
        "n_real": len(y) - sum(y),
        "auc": None if auc is None else round(auc, 4),
        "reals_above_half": [r.path for r in records if r.label == "real" and r.score > 0.5],
        "fakes_at_or_below_half": [r.path for r in records if r.label == "fake" and r.score <= 0.5],
    }


def markdown(doc: dict[str, Any]) -> str:
    ckpt = doc["checkpoint"]
    m = doc["machine"]
    t = doc["timing"]
    lines = [
        f"# Audio detector `{ckpt}` alone on `{doc['folder']}`",
        "",
        f"Command: `{doc['command']}`. Machine: {m['cpu']}, {m['cores']} cores, shared "
        f"(load average {doc['load_before']} before, {doc['load_after']} after); "
        f"onnxruntime {doc['onnxruntime']} on CPU, {doc['threads']} threads for scoring.",
        "",
        f"Each track decoded to 16 kHz mono as the worker does, cut into {AUDIO_SAMPLES}-sample "
        f"windows every {doc['hop_s']} s (the last one ending at the track's end; a shorter "
        "track repeated), scored by the ONNX export, mean of the window scores per file. No "
        "speech gate, no calibration, no fusion: the raw checkpoint. Score = P(spoof); a file "
        "is counted as called fake above 0.5. Evaluation data (research-only terms): "
        "measured, not tuned on.",
        "",
        f"Single-thread cost per window ({t['windows']} windows, one per call): wall "
        f"{t['wall_ms_min']} ms min / {t['wall_ms_median']} ms median, CPU "
        f"{t['cpu_ms_min']} ms min / {t['cpu_ms_median']} ms median.",
        "",
        "| group | files (fake/real) | AUC | reals above 0.5 | fakes at or below 0.5 |",
        "|---|---|---|---|---|",
    ]
    for name, g in doc["groups"].items():
        auc = "n/a" if g["auc"] is None else f"{g['auc']:.3f}"
        lines.append(
            f"| {name} | {g['n_fake'] + g['n_real']} ({g['n_fake']}/{g['n_real']}) | {auc} | "
            f"{len(g['reals_above_half'])}/{g['n_real']} | "
            f"{len(g['fakes_at_or_below_half'])}/{g['n_fake']} |"
        )
    every = doc["groups"].get("all", next(iter(doc["groups"].values())))
    if every["reals_above_half"]:
        lines += ["", "Reals above 0.5: " + ", ".join(f"`{p}`" for p in every["reals_above_half"])]
    lines += [
        "",
        "| file | label | kind | windows | score (mean) | lowest window | highest window |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["files"]:
        lines.append(
            f"| `{r['path']}` | {r['label']} | {r['kind']} | {r['windows']} | "
            f"{r['score']:.3f} | {r['lowest']:.3f} | {r['highest']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=None)
    parser.add_argument("--checkpoint", default="rawgat_st", help="a spec key in dfd.specs")
    parser.add_argument("--video-tracks", action="store_true", help="also other kinds' audio")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=8, help="windows per onnxruntime call")
    parser.add_argument("--timing-windows", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="default results/audio_<ckpt>.md")
    args = parser.parse_args(argv)

    from dispatcher.decode_pyav import read_audio
    from export.onnx_export import export_one

    settings = Settings()
    check_audio_spec(args.checkpoint)
    folder = args.folder or Path(os.environ.get("DFD_MEDIA_DIR", "media")) / "wild"
    items = [
        it
        for it in read_labels(folder)
        if it.kind == "audio" or (args.video_tracks and it.has_audio != "no")
    ]
    load_before = load_average()
    onnx_path = export_one(args.checkpoint, settings)
    sess = session(onnx_path, args.threads)

    records: list[FileScore] = []
    first_windows: list[np.ndarray] = []
    for n, item in enumerate(items, start=1):
        audio = read_audio(folder / item.path)
        if audio is None or audio.size == 0:
            continue  # a video whose labels row guessed a track it does not have
        windows = audio_windows(audio, settings.audio_hop_s)
        scores = score_windows(sess, windows, args.batch)
        records.append(
            FileScore(
                item.path,
                item.label,
                item.kind,
                len(windows),
                float(scores.mean()),
                float(scores.min()),
                float(scores.max()),
            )
        )
        first_windows.append(windows[0])
        print(f"[{n}/{len(items)}] {item.path}: {scores.mean():.3f}", file=sys.stderr)

    import onnxruntime as ort

    timing = time_windows(onnx_path, np.stack(first_windows[: args.timing_windows]))
    groups: dict[str, Any] = {"audio": group([r for r in records if r.kind == "audio"])}
    if args.video_tracks:
        groups["video tracks"] = group([r for r in records if r.kind != "audio"])
        groups["all"] = group(records)
    command = "python -m benchmarks.bench_audio_detector " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    doc = {
        "checkpoint": spec(args.checkpoint).tag,
        "folder": str(folder.name),
        "command": command.strip(),
        "machine": describe(),
        "load_before": load_before,
        "load_after": load_average(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "hop_s": settings.audio_hop_s,
        "timing": timing,
        "groups": groups,
        "files": [r.__dict__ for r in records],
    }
    out = args.out or RESULTS / f"audio_{args.checkpoint}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(doc))
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
