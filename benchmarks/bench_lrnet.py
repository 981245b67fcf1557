"""LRNet trial: the authors' landmark-sequence detector with dlib's 68 landmarks, on GRID and wild.

    pip install -e '.[lrnet-trial]'   # dlib-bin, face_recognition_models (~100 MB), opencv
    python -m benchmarks.bench_lrnet [--media-dir DIR] [--weights-dir DIR] [--max-frames 300]
        [--cache-dir DIR] [--out lrnet] [--report-only]

Sets (evaluation only: nothing is fitted, the weights are the authors'):
- GRID: the 11 real clips of ``<media>/grid`` (75 frames, two 30-frame clips each). Any
  clip scored >= 0.5 is a false positive. (GRID dubs alter the sound, not the face: not
  used.)
- wild: the videos of ``<media>/wild/labels.csv`` of the face kinds (faceswap,
  reenactment, lipsync, talking_head); a video where dlib finds no face, or too few
  frames for a clip, is counted and left out.

Per video, the first ``--max-frames`` frames (300: 10-12 s) go through
:mod:`benchmarks.lrnet_landmarks` (dlib HOG face + 68-point predictor, the authors' crop
and LK + Kalman calibration, normalisation), then non-overlapping 30-frame clips through
both streams (:mod:`export.models.lrnet`), for both weight sets (``ffpp``, ``dfo``), with
the calibration and without it (the ablation). A video's score: the fraction of its
clips at P(fake) >= 0.5 (the authors' demo) and the mean clip P(fake). AUC per wild
kind is that kind's fakes against every wild face real; one thread for dlib, opencv
and torch. Writes ``benchmarks/results/<out>.{md,json}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks import lrnet_landmarks
from benchmarks.machine import (
    add_results_arguments,
    describe,
    load_average,
    read_results,
    write_report,
)
from dfd import metrics
from dfd.settings import Settings
from export.models import lrnet
from export.weights import resolve_weight

RESULTS = Path(__file__).parent / "results"
# ORIGIN.txt: P(fake) on the authors' own landmark files of their demo videos (FAN landmarks,
# their calibration), which are three of the wild videos
AUTHORS_DEMO = {
    "ffpp_lrnet_ff_fake.mp4": {"ffpp": 0.93, "dfo": 0.91},
    "ffpp_lrnet_ff_real.mp4": {"ffpp": 0.07, "dfo": 0.17},
    "deeperforensics_lrnet_dfo_real.mp4": {"ffpp": 0.49, "dfo": 0.20},
}
FACE_KINDS = ("faceswap", "reenactment", "lipsync", "talking_head")
WEIGHTS = ("ffpp", "dfo")
VARIANTS = ("calibrated", "uncalibrated")


@dataclass
class Item:
    path: str
    set: str  # grid | wild
    kind: str
    label: str  # real | fake
    frames: int = 0  # frames with landmarks (after the leading ones without a face)
    skipped: int = 0
    missed: int = 0
    landmark_s: float = 0.0
    calibrate_s: float = 0.0
    model_s: float = 0.0  # both streams, both weight sets, both variants
    # "<weights>/<variant>" -> P(fake) per clip
    clips: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def n_clips(self) -> int:
        return len(next(iter(self.clips.values()), []))

    def fraction(self, key: str) -> float:
        return float(np.mean(np.asarray(self.clips[key]) >= 0.5))

    def mean(self, key: str) -> float:
        return float(np.mean(self.clips[key]))


def todo(media_dir: Path) -> list[Item]:
    items = [
        Item(str(p.relative_to(media_dir)), "grid", "grid", "real")
        for p in sorted((media_dir / "grid").glob("*.mpg"))
    ]
    with (media_dir / "wild" / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["kind"] in FACE_KINDS:
                items.append(Item(f"wild/{row['path']}", "wild", row["kind"], row["label"]))
    return items


def landmarks(
    path: Path, marker: lrnet_landmarks.DlibLandmarker, max_frames: int, cache: Path | None
) -> dict[str, np.ndarray]:
    if cache is not None:
        file = cache / (path.name + f".{max_frames}.npz")
        if file.exists():
            with np.load(file) as z:
                return {k: z[k] for k in z.files}
    seq = lrnet_landmarks.extract(path, marker, max_frames)
    got = {
        "calibrated": seq.calibrated,
        "uncalibrated": seq.crop_positions,
        "skipped": np.asarray(seq.skipped),
        "missed": np.asarray(seq.missed),
        "landmark_s": np.asarray(seq.landmark_s),
        "calibrate_s": np.asarray(seq.calibrate_s),
    }
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(file, **got)
    return got


def score(item: Item, got: dict, nets: dict[str, lrnet.LRNet]) -> None:
    item.frames = len(got["calibrated"])
    item.skipped, item.missed = int(got["skipped"]), int(got["missed"])
    item.landmark_s, item.calibrate_s = (
        round(float(got["landmark_s"]), 3),
        round(float(got["calibrate_s"]), 3),
    )
    t0 = time.perf_counter()
    for variant in VARIANTS:
        clips = lrnet.clips(lrnet_landmarks.normalise(np.asarray(got[variant])))
        if len(clips) == 0:
            item.note = f"{item.frames} frames with a face: no 30-frame clip"
            item.clips = {}
            return
        for w, net in nets.items():
            with torch.no_grad():
                item.clips[f"{w}/{variant}"] = [
                    round(float(p), 4) for p in net(torch.from_numpy(clips))
                ]
    item.model_s = round(time.perf_counter() - t0, 4)


def model_ms_per_clip(nets: dict[str, lrnet.LRNet], repeats: int = 50) -> float:
    """One clip through g1 + g2 of one weight set, batch 1, one thread (median of repeats)."""
    net = nets[WEIGHTS[0]]
    x = torch.from_numpy(
        np.random.default_rng(0).uniform(-0.8, 0.8, (1, 30, 136)).astype(np.float32)
    )
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def summary(items: list[Item]) -> dict:
    scored = [i for i in items if i.clips]
    out: dict = {"keys": {}}
    grid = [i for i in scored if i.set == "grid"]
    wild = [i for i in scored if i.set == "wild"]
    reals = [i for i in wild if i.label == "real"]
    for w in WEIGHTS:
        for v in VARIANTS:
            key = f"{w}/{v}"
            row: dict = {
                "grid_clips": sum(i.n_clips() for i in grid),
                "grid_clips_fake": int(sum(np.sum(np.asarray(i.clips[key]) >= 0.5) for i in grid)),
                "grid_videos_fake": sum(i.fraction(key) >= 0.5 for i in grid),
                "grid_max_clip": max((max(i.clips[key]) for i in grid), default=None),
                "auc": {},
            }
            for stat in ("fraction", "mean"):
                per_kind = {}
                for kind in (*FACE_KINDS, "all"):
                    fakes = [
                        i for i in wild if i.label == "fake" and (kind == "all" or i.kind == kind)
                    ]
                    sel = fakes + reals
                    s = [getattr(i, stat)(key) for i in sel]
                    y = [1 if i.label == "fake" else 0 for i in sel]
                    per_kind[kind] = {
                        "auc": metrics.auc(s, y),
                        "fakes": len(fakes),
                        "reals": len(reals),
                    }
                sel = wild + grid
                per_kind["all+grid"] = {
                    "auc": metrics.auc(
                        [getattr(i, stat)(key) for i in sel],
                        [1 if i.label == "fake" else 0 for i in sel],
                    ),
                    "fakes": sum(i.label == "fake" for i in wild),
                    "reals": len(reals) + len(grid),
                }
                row["auc"][stat] = per_kind
            wild_real_fp = sum(i.fraction(key) >= 0.5 for i in reals)
            row["wild_reals_fake"] = wild_real_fp
            out["keys"][key] = row
    frames = sum(i.frames for i in scored)
    clips = sum(i.n_clips() for i in scored)
    out["landmark_ms_per_frame"] = 1000 * sum(i.landmark_s for i in scored) / max(frames, 1)
    out["calibrate_ms_per_frame"] = 1000 * sum(i.calibrate_s for i in scored) / max(frames, 1)
    out["frames"], out["clips"] = frames, clips
    return out


def report(items: list[Item], doc: dict) -> str:
    s = doc["summary"]
    lines = [
        "# LRNet trial (dlib 68 landmarks + the authors' calibration)",
        "",
        f"Run {doc['started']} with `python -m benchmarks.bench_lrnet` (first {doc['max_frames']} frames "
        "per video, 30-frame clips, one thread). Weights: the authors' `ffpp` (FaceForensics++) "
        "and `dfo` (DeeperForensics-1.0) `g1`/`g2`. Landmarks: dlib HOG face detector + "
        "68-point shape predictor (iBUG 300-W; evaluation only), the authors' 1.2x fixed-size "
        "400 px crop, LK + Kalman calibration (own implementation), `(p - 200) / 200`. "
        "`uncalibrated`: the same landmarks without the calibration (ablation). Nothing fitted.",
        "",
        "Video score: `fraction` = share of its clips at P(fake) >= 0.5 (the authors' demo), "
        "`mean` = mean clip P(fake). AUC per kind: that kind's fakes against all wild face reals.",
        "",
        "## Summary",
        "",
        "| weights/landmarks | GRID clips >= 0.5 | GRID videos with a clip >= 0.5 | GRID max clip | wild reals fake | "
        "AUC faceswap | reenactment | lipsync | talking_head | wild all | wild all (mean) | wild + GRID reals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in s["keys"].items():
        a, m = row["auc"]["fraction"], row["auc"]["mean"]
        lines.append(
            f"| {key} | {row['grid_clips_fake']} / {row['grid_clips']} | {row['grid_videos_fake']} / 11 | "
            f"{_fmt(row['grid_max_clip'])} | {row['wild_reals_fake']} | "
            + " | ".join(_fmt(a[k]["auc"]) for k in FACE_KINDS)
            + f" | {_fmt(a['all']['auc'])} | {_fmt(m['all']['auc'])} | {_fmt(a['all+grid']['auc'])} |"
        )
    n = {k: s["keys"]["ffpp/calibrated"]["auc"]["fraction"][k]["fakes"] for k in FACE_KINDS}
    reals = s["keys"]["ffpp/calibrated"]["auc"]["fraction"]["all"]["reals"]
    lines += [
        "",
        f"Wild fakes per kind: {', '.join(f'{k} {v}' for k, v in n.items())}; wild face reals: {reals}. "
        "With so few items an AUC moves by 0.1 with one video.",
        "",
        f"Cost (this shared 2-core machine, one thread): landmarks {s['landmark_ms_per_frame']:.0f} ms per frame "
        f"(two decodes, dlib face + 68 points, crop) = {30 * s['landmark_ms_per_frame']:.0f} ms per 30-frame clip; "
        f"calibration {s['calibrate_ms_per_frame']:.1f} ms per frame; model (g1 + g2) {doc['model_ms_per_clip']:.2f} ms "
        "per clip. Load average at the end: "
        + ", ".join(f"{x:.1f}" for x in doc["machine"].get("load_average", []))
        + ".",
        "",
    ]
    demo = [i for i in items if Path(i.path).name in AUTHORS_DEMO and i.clips]
    if demo:
        lines += [
            "Check against the authors: three wild videos are the inputs of their demo, whose "
            "landmark files (FAN, their calibration) ORIGIN.txt scores. Mean clip P(fake), "
            "theirs (whole video) against these landmarks (first frames):",
            "",
            "| video | ffpp: authors' landmarks | ffpp: dlib calibrated | dfo: authors' landmarks | dfo: dlib calibrated |",
            "|---|---|---|---|---|",
        ]
        for i in demo:
            ref = AUTHORS_DEMO[Path(i.path).name]
            lines.append(
                f"| `{Path(i.path).name}` | {ref['ffpp']:.2f} | {i.mean('ffpp/calibrated'):.2f} "
                f"| {ref['dfo']:.2f} | {i.mean('dfo/calibrated'):.2f} |"
            )
        lines.append("")
    left = [i for i in items if not i.clips]
    if left:
        lines += ["Left out: " + "; ".join(f"`{i.path}` ({i.note})" for i in left) + ".", ""]
    lines += [
        "## Per video",
        "",
        "fraction of clips >= 0.5 / mean clip P(fake), per weights and landmarks.",
        "",
        "| video | kind | label | frames | clips | ffpp cal | dfo cal | ffpp uncal | dfo uncal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i in items:
        if not i.clips:
            continue
        cells = [
            f"{i.fraction(f'{w}/{v}'):.2f} / {i.mean(f'{w}/{v}'):.2f}"
            for v in VARIANTS
            for w in WEIGHTS
        ]
        lines.append(
            f"| `{Path(i.path).name}` | {i.kind} | {i.label} | {i.frames} | {i.n_clips()} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media-dir", type=Path, default=Path(os.environ.get("DFD_MEDIA_DIR", "")))
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="a folder laid out like weights/ (default: DFD_WEIGHTS_DIR, else the cache, "
        "else downloaded from export/manifest.json and checked)",
    )
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="keep each video's landmarks here"
    )
    add_results_arguments(parser, "lrnet")
    args = parser.parse_args(argv)
    if args.report_only:
        doc = read_results(RESULTS, args.out)
        items = [Item(**row) for row in doc["items"]]
        write_report(RESULTS / f"{args.out}.md", report(items, doc))
        return 0
    if not (args.media_dir / "grid").is_dir():
        print("bench_lrnet: needs grid/ under --media-dir", file=sys.stderr)
        return 2
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    settings = Settings(weights_dir=args.weights_dir) if args.weights_dir else Settings()
    nets = {
        w: lrnet.LRNet(
            *(
                lrnet.load_stream(resolve_weight(f"lrnet/{w}/{g}.pth", settings))
                for g in ("g1", "g2")
            )
        ).eval()
        for w in WEIGHTS
    }
    marker = lrnet_landmarks.DlibLandmarker()
    items = todo(args.media_dir)
    for item in items:
        path = args.media_dir / item.path
        try:
            got = landmarks(path, marker, args.max_frames, args.cache_dir)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports the item and goes on
            item.note = f"{type(exc).__name__}: {exc}"
            print(f"{item.path}: {item.note}", file=sys.stderr, flush=True)
            continue
        if len(got["calibrated"]) == 0:
            item.note = "no face found by dlib"
        else:
            score(item, got, nets)
        line = " ".join(f"{k}={item.fraction(k):.2f}/{item.mean(k):.2f}" for k in item.clips)
        print(
            f"{item.set} {item.kind} {item.label} {Path(item.path).name}: {item.frames} frames {line} {item.note}",
            flush=True,
        )
    doc = {
        "started": started,
        "max_frames": args.max_frames,
        "machine": describe(load_average=load_average()),
        "model_ms_per_clip": model_ms_per_clip(nets),
        "items": [asdict(i) for i in items],
    }
    doc["summary"] = summary(items)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    write_report(RESULTS / f"{args.out}.md", report(items, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
