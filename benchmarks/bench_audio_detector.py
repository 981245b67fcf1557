"""One audio detector on the wild set, beside another: per-file scores, AUC, false alarms, cost.

    python -m benchmarks.bench_audio_detector --checkpoint aasist_asvspoof5 [--compare aasist]
        [--media-dir DIR] [--data-dir DIR] [--runtime onnx|torch] [--no-video]
        [--windows service|speech-only]

Every audio item of ``<media>/wild/labels.csv`` (and, unless ``--no-video``, the sound
track of every video item that has one) is decoded as the dispatcher decodes it (PyAV,
16 kHz mono), cut into the 64,600-sample windows ``dispatcher.infer`` cuts (a window
every ``audio_hop_s``, the last one ending at the track's end, a short track repeated),
and only the windows that are at least ``MIN_WINDOW_SPEECH`` speech by silero-vad are
kept, as the service keeps them. A file's score is the mean P(spoof) of its windows.
``--windows speech-only`` cuts the windows instead from the speech alone: the runs
silero-vad finds, joined end to end, so no window holds the pauses around them. It
measures how much a detector judges the silence rather than the voice (models trained on
ASVspoof 2019 LA are known to: Müller et al., Interspeech 2021, "Speech is Silver,
Silence is Golden"); the service cuts its windows the first way.

Each checkpoint of ``dfd.specs.SPECS`` with a ``waveform`` input works: the model is the
serving module ``export.onnx_export.build_module`` builds, run in PyTorch or as the ONNX
file exported from it. AUC is over the audio kind (its labels are the audio's truth);
the sound tracks of real videos are real speech and count as false alarms when they
score high; those of fake videos are listed only (the picture is what was faked, the
voice often real). The "own best threshold" is the one that maximises TPR - FPR on the
audio kind: an oracle, optimistic by construction, there to tell a bad operating point
from a bad ranking. Evaluation only: nothing here is fitted to these files.

Writes ``benchmarks/results/audio_<checkpoint>.{md,json}`` (``audio_<checkpoint>_speech_only``
with ``--windows speech-only``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, load_average, write_results
from dfd import metrics
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, AUDIO_SAMPLES, spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 8  # windows per forward pass (bounded memory on a small machine)

Scorer = Callable[[np.ndarray], np.ndarray]  # windows (n, 64600) -> logits (n, 2)


@dataclass(frozen=True)
class Item:
    path: str
    label: str  # "real" | "fake"
    kind: str
    windows: int  # speech windows scored
    scores: dict[str, float]  # checkpoint -> mean P(spoof)
    margins: dict[str, float]  # checkpoint -> mean logit[0] - logit[1] (spoof minus bonafide)


class _OrtVad:
    """The ``vad`` model from its exported ONNX file, answering as the Triton client does."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def infer(self, model, inputs, outputs=None):  # noqa: ANN001 - dispatcher's InferClient
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, dict(inputs)), strict=True))


def scorer(checkpoint: str, settings: Settings, runtime: str) -> Scorer:
    """Logits of a checkpoint's serving module, one thread, in PyTorch or onnxruntime."""
    model = spec(checkpoint)
    if [t.name for t in model.inputs] != ["waveform"] or "logits" not in {
        t.name for t in model.outputs
    }:
        raise SystemExit(f"bench_audio_detector: {checkpoint} is not a waveform -> logits model")
    if runtime == "torch":
        import torch

        from export.onnx_export import build_module

        torch.set_num_threads(1)
        module = build_module(checkpoint, settings)
        index = [t.name for t in model.outputs].index("logits")

        def run_torch(windows: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(windows))[index].numpy()

        return run_torch
    import onnxruntime as ort

    from export.onnx_export import export_one

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(export_one(checkpoint, settings)), options, providers=["CPUExecutionProvider"]
    )

    def run_onnx(windows: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"waveform": windows})[0]

    return run_onnx


def speech_windows(
    path: Path, settings: Settings, vad: _OrtVad, speech_only: bool = False
) -> np.ndarray:
    """The windows of ``path``'s sound track the service would score, (n, 64600); with
    ``speech_only``, the windows of its speech runs joined (no pause kept)."""
    from dispatcher.decode_pyav import read_audio
    from dispatcher.infer import window_spans
    from dispatcher.speech import MIN_WINDOW_SPEECH, find_speech

    audio = read_audio(path)
    if audio is None or audio.size == 0:
        return np.zeros((0, AUDIO_SAMPLES), np.float32)
    speech = find_speech(audio, vad)
    if speech_only:
        if not speech.found:
            return np.zeros((0, AUDIO_SAMPLES), np.float32)
        runs = [audio[int(a * AUDIO_RATE) : int(b * AUDIO_RATE)] for a, b in speech.segments]
        return audio_windows(np.concatenate(runs), settings.audio_hop_s)
    every = audio_windows(audio, settings.audio_hop_s)
    spans = window_spans(audio.size, settings.audio_hop_s, len(every))
    keep = [i for i, (a, b) in enumerate(spans) if speech.share(a, b) >= MIN_WINDOW_SPEECH]
    return every[keep] if speech.found else every[:0]


def _softmax_spoof(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 0] / e.sum(axis=1)


def score_items(
    media_dir: Path,
    settings: Settings,
    scorers: dict[str, Scorer],
    video: bool,
    speech_only: bool = False,
) -> tuple[list[Item], list[str]]:
    """Scores of every usable item; and the items skipped, with why."""
    from export.onnx_export import export_one

    vad = _OrtVad(export_one("silero_vad", settings))
    wild = media_dir / "wild"
    items, skipped = [], []
    with (wild / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["kind"] != "audio" and (not video or row["has_audio"] != "yes"):
            continue
        windows = speech_windows(wild / row["path"], settings, vad, speech_only)
        if len(windows) == 0:
            skipped.append(f"{row['path']}: no speech window (the service says not applicable)")
            continue
        scores, margins = {}, {}
        for name, run in scorers.items():
            logits = np.concatenate(
                [run(windows[i : i + BATCH]) for i in range(0, len(windows), BATCH)]
            )
            scores[name] = float(_softmax_spoof(logits).mean())
            margins[name] = float((logits[:, 0] - logits[:, 1]).mean())
        items.append(Item(row["path"], row["label"], row["kind"], len(windows), scores, margins))
        print(f"{row['path']}: {len(windows)} windows, {scores}", flush=True)
    return items, skipped


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold (called fake at or above it) with the largest TPR - FPR."""
    best, best_j = float("inf"), -1.0
    for t in np.unique(scores):
        called = scores >= t
        j = called[labels == 1].mean() - called[labels == 0].mean()
        if j > best_j:
            best, best_j = float(t), float(j)
    return best


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties get their mean rank)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def summary(items: list[Item], names: list[str]) -> dict[str, dict[str, object]]:
    audio = [i for i in items if i.kind == "audio"]
    y = np.array([1.0 if i.label == "fake" else 0.0 for i in audio])
    real = [i for i in items if i.label == "real"]
    out: dict[str, dict[str, object]] = {}
    for name in names:
        s = np.array([i.scores[name] for i in audio])
        m = np.array([i.margins[name] for i in audio])
        t = best_threshold(s, y)
        out[name] = {
            "auc_audio": metrics.auc(s, y),
            "auc_audio_margin": metrics.auc(m, y),
            "eer_audio": metrics.eer(s, y),
            "best_threshold": t,
            "real_items": len(real),
            "real_above_0.5": [i.path for i in real if i.scores[name] > 0.5],
            "real_at_or_above_best": [i.path for i in real if i.scores[name] >= t],
            "fake_audio_caught_at_0.5": int((s[y == 1] > 0.5).sum()),
            "fake_audio": int(y.sum()),
        }
    return out


def time_window(run: Scorer, windows: np.ndarray, repeats: int = 5) -> tuple[float, float]:
    """Fastest of ``repeats`` single-window passes after a warm-up: wall and CPU ms.

    CPU time (the process's, all threads; here one) is what load from other processes on a
    shared machine disturbs least.
    """
    run(windows[:1])
    wall = cpu = float("inf")
    for k in range(repeats):
        w = windows[k % len(windows)][None]
        start, start_cpu = time.perf_counter(), time.process_time()
        run(w)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall * 1000, cpu * 1000


def markdown(report: dict) -> str:
    names = report["checkpoints"]
    main = names[0]
    lines = [
        f"# Audio detector `{main}` on the wild set"
        + (f", beside `{names[1]}`" if names[1:] else ""),
        "",
        f"Generated by `{report['command']}` at {report['at']} on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores, load average {report['load_average']}; shared "
        f"machine), runtime {report['runtime']}, one thread.",
        "",
        (
            "Windows as `dispatcher.infer` cuts them (64,600 samples, hop "
            f"{report['hop_s']:g} s, speech windows only, by silero-vad)"
            if report.get("windows", "service") == "service"
            else "Windows of the speech alone (`--windows speech-only`: silero-vad's speech "
            f"runs joined end to end, no pause kept; 64,600 samples, hop {report['hop_s']:g} s)"
        )
        + "; a file's score is the mean "
        "window P(spoof). AUC over the `audio` kind (16 fake, 16 real). Real items: the real "
        "audio files and the sound tracks of the real videos. The best threshold is an "
        "oracle on these same items (max TPR - FPR), not a calibration. Evaluation only.",
        "",
        "| detector | AUC (mean P(spoof)) | AUC (mean logit margin) | EER | fakes caught at 0.5 "
        "| real above 0.5 | best threshold | real at/above it | ms/window, 1 thread (wall / CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(x: object, digits: int = 3) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}"

    for name in names:
        s = report["summary"][name]
        lines.append(
            f"| `{name}` | {f(s['auc_audio'])} | {f(s['auc_audio_margin'])} | "
            f"{f(s['eer_audio'])} | {s['fake_audio_caught_at_0.5']}/{s['fake_audio']} | "
            f"{len(s['real_above_0.5'])}/{s['real_items']} | {s['best_threshold']:.3g} | "
            f"{len(s['real_at_or_above_best'])}/{s['real_items']} | "
            f"{report['ms_per_window'][name][0]:.0f} / {report['ms_per_window'][name][1]:.0f} |"
        )
    if len(names) > 1:
        lines += [
            "",
            f"Rank correlation (Spearman) of the two detectors' file scores: "
            f"{report['spearman_all']:.2f} over all {len(report['items'])} items, "
            f"{report['spearman_audio']:.2f} over the audio kind "
            f"({report['spearman_audio_margin']:.2f} on the mean logit margins). "
            "A fusion with no weights and no labels, the sum of the two mean margins, has "
            f"AUC {report['auc_audio_margin_sum']:.3f} on the audio kind.",
        ]
    for name in names:
        s = report["summary"][name]
        lines += [
            "",
            f"`{name}`: real items above 0.5: " + (", ".join(s["real_above_0.5"]) or "none"),
        ]
        lines += [
            f"`{name}`: real items at or above its best threshold: "
            + (", ".join(s["real_at_or_above_best"]) or "none")
        ]
    header = " | ".join(f"`{n}` P(spoof) | margin" for n in names)
    lines += [
        "",
        "Per file (margin: mean logit[spoof] - logit[bonafide] over the windows):",
        "",
        f"| file | label | kind | windows | {header} |",
        "|---|---|---|---:|" + "---:|---:|" * len(names),
    ]
    for item in report["items"]:
        cells = " | ".join(f"{item['scores'][n]:.3f} | {item['margins'][n]:+.1f}" for n in names)
        lines.append(
            f"| {item['path']} | {item['label']} | {item['kind']} | {item['windows']} | {cells} |"
        )
    if report["skipped"]:
        lines += ["", "Not scored: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint in dfd.specs.SPECS")
    parser.add_argument("--compare", nargs="*", default=["aasist"], help="checkpoints beside it")
    parser.add_argument("--media-dir", type=Path, default=None, help="default: DFD_MEDIA_DIR")
    parser.add_argument("--data-dir", type=Path, default=None, help="dfd data folder (ONNX)")
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--no-video", action="store_true", help="audio files only")
    parser.add_argument(
        "--windows",
        choices=["service", "speech-only"],
        default="service",
        help="the service's windows, or windows of the speech runs joined (no pauses)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    media_dir = args.media_dir or Path(
        os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared/media")
    )
    names = [args.checkpoint, *[c for c in args.compare if c != args.checkpoint]]
    load = load_average()
    scorers = {n: scorer(n, settings, args.runtime) for n in names}
    speech_only = args.windows == "speech-only"
    items, skipped = score_items(
        media_dir, settings, scorers, video=not args.no_video, speech_only=speech_only
    )
    probe = np.random.default_rng(0).uniform(-0.3, 0.3, (5, AUDIO_SAMPLES)).astype(np.float32)
    report = {
        "command": "python -m benchmarks.bench_audio_detector "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": describe(),
        "load_average": load,
        "runtime": args.runtime,
        "hop_s": settings.audio_hop_s,
        "windows": args.windows,
        "checkpoints": names,
        "summary": summary(items, names),
        "ms_per_window": {n: time_window(scorers[n], probe) for n in names},
        "items": [asdict(i) for i in items],
        "skipped": skipped,
    }
    if len(names) > 1:
        a, b = names[0], names[1]
        audio = [i for i in items if i.kind == "audio"]
        report["spearman_all"] = spearman(
            np.array([i.scores[a] for i in items]), np.array([i.scores[b] for i in items])
        )
        report["spearman_audio"] = spearman(
            np.array([i.scores[a] for i in audio]), np.array([i.scores[b] for i in audio])
        )
        report["spearman_audio_margin"] = spearman(
            np.array([i.margins[a] for i in audio]), np.array([i.margins[b] for i in audio])
        )
        report["auc_audio_margin_sum"] = metrics.auc(
            [i.margins[a] + i.margins[b] for i in audio],
            [1.0 if i.label == "fake" else 0.0 for i in audio],
        )
    stem = f"audio_{args.checkpoint}" + ("_speech_only" if speech_only else "")
    write_results(args.out, stem, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
