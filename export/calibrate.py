"""Fit the calibration ``dfd models calibrate`` writes: per-detector calibration and fusion weights.

Input: the scorecard's raw-score files (``benchmarks/results/detection_scores*.json``,
written by ``benchmarks.bench_detection``): per item its label, its kind and each
detector's raw score (``None`` where the detector had no input), or a refusal.

- Per detector, a calibration from raw score to P(manipulated): Platt scaling on the raw
  log-odds (with Platt's smoothed targets, so a separable set gives finite parameters; the
  slope kept >= 0, as isotonic is non-decreasing), or
  isotonic regression (pool-adjacent-violators) when each class has at least
  ``ISOTONIC_MIN_PER_CLASS`` items. A detector is fitted against whether what it looks at was
  manipulated (``KIND_TARGETS``): the voice of a VASA-1 clip is real, so the audio detector
  must learn to call it real, while the item is a fake.
- Fusion: an L2-regularised logistic regression of the item's label on each detector's
  evidence (calibrated log-odds less its prior's) with weights >= 0, a missing detector
  contributing 0 (see ``dfd.calibration``).
- Cross-validated figures: stratified k-fold over recordings (an item's copies and
  variants, :func:`recording_of`, share its fold), everything (calibrations and fusion)
  refitted on the training folds and scored on the held-out fold; AUC, EER, TPR at 5 % FPR and ECE of
  the pooled held-out predictions, and the verdict counts at the given threshold and band.
  Never the fit on its own training data.

Everything is deterministic: fixed fold assignment from a seeded generator, Newton's
method from zero, items in file order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dfd import metrics
from dfd.calibration import EPS, FORMAT, Calibration, parse
from dfd.detectors import DETECTORS

FloatArray = npt.NDArray[np.float64]

FIT_REVISION = 1
"""Bumped when the fitting changes, so the derived version changes with it."""
ISOTONIC_MIN_PER_CLASS = 100
"""Below this many items of either class, Platt (2 parameters) rather than isotonic."""
FUSION_L2 = 1.0
"""Ridge penalty on the fusion weights (not the bias): few items, correlated detectors."""

# What each kind of fake manipulates, per modality the detectors look at. A real item is
# real everywhere; a fake of an unlisted kind counts as manipulated for every detector.
# faceswap/ai_video: the picture only; reenactment (FF++ NeuralTextures, Face2Face): the
# face and its mouth motion against the original voice; lipsync (Wav2Lip, HyperLips) and
# talking_head (VASA-1, EMO, SadTalker): a generated mouth on a real voice; dub: an
# espeak-ng voice over a real face; audio_swap: another real voice over a real face.
# Keyed by kind, the modalities (not detector names) that were manipulated.
KIND_TARGETS: Mapping[str, frozenset[str]] = {
    "faceswap": frozenset({"visual"}),
    "ai_video": frozenset({"visual"}),
    "reenactment": frozenset({"visual", "lipsync"}),
    "lipsync": frozenset({"visual", "lipsync"}),
    "talking_head": frozenset({"visual", "lipsync"}),
    "audio": frozenset({"audio"}),
    "dub": frozenset({"audio", "lipsync"}),
    "audio_swap": frozenset({"lipsync"}),
}


class CalibrationDataError(ValueError):
    """The scores cannot be fitted (a file is malformed, or a class is missing)."""


# The suffixes ``benchmarks.make_calibration_set`` appends to a source clip's stem for the
# cases it makes from it, and the prefixes of the tracks it re-wraps under a black picture.
DERIVED_SUFFIXES = ("_h264_", "_noise", "_trim", "_dub_", "_voice_of_")
REWRAP_PREFIXES = ("wild_", "grid_voice_")


def recording_of(path: str) -> str:
    """The recording an item was made from, so that its copies and variants are held out
    together: the file's stem, less a re-wrapping prefix (``wild_``: a wild audio file under
    a black picture; ``grid_voice_``: a GRID clip's voice alone) and a derived case's suffix
    (``bbaf2n_h264_150k`` and ``bbaf2n_dub_en`` are ``bbaf2n``)."""
    stem = Path(path).stem
    for prefix in REWRAP_PREFIXES:
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
            break
    cuts = [i for i in (stem.find(s) for s in DERIVED_SUFFIXES) if i > 0]
    return stem[: min(cuts)] if cuts else stem


@dataclass(frozen=True)
class ScoredItem:
    """One labelled item of a scores file."""

    source: str  # the scores file's folder name (wild, calibration_set, ...)
    path: str
    fake: bool
    kind: str
    accepted: bool
    scores: Mapping[str, float | None]
    confidence: float | None = None  # the verdict's confidence when it was scored

    @property
    def recording(self) -> str:
        """The recording it was made from (:func:`recording_of`)."""
        return recording_of(self.path)

    def target(self, detector: str) -> int:
        """1 when what ``detector`` looks at was manipulated in this item."""
        if not self.fake:
            return 0
        manipulated = KIND_TARGETS.get(self.kind)
        if manipulated is None:
            return 1
        # the targets name modalities: every detector of a modality shares its target
        d = DETECTORS.get(detector)
        return 1 if (d.modality if d is not None else detector) in manipulated else 0


@dataclass(frozen=True)
class ScoresFile:
    path: Path
    folder: str
    sha256: str
    items: tuple[ScoredItem, ...]


def read_scores(path: Path) -> ScoresFile:
    """A scorecard raw-score file, parsed once into ``ScoredItem``s."""
    data = path.read_bytes()
    try:
        doc = json.loads(data)
        folder = str(doc["folder"])
        items = tuple(
            ScoredItem(
                source=folder,
                path=str(r["path"]),
                fake=r["label"] == "fake",
                kind=str(r["kind"]),
                accepted=r["status"] == "scored",
                scores={
                    str(n): (None if s is None else float(s))
                    for n, s in (r.get("scores") or {}).items()
                },
                confidence=None if r.get("confidence") is None else float(r["confidence"]),
            )
            for r in doc["items"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationDataError(f"{path}: not a scorecard scores file ({exc})") from exc
    return ScoresFile(path, folder, hashlib.sha256(data).hexdigest(), items)


# -- the fits -----------------------------------------------------------------------------


def _logit(p: FloatArray) -> FloatArray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def logistic(
    x: FloatArray, t: FloatArray, l2: float = 0.0, iterations: int = 100
) -> tuple[FloatArray, float]:
    """Weights and bias minimising the cross-entropy to targets ``t`` (in [0, 1]) plus
    ``l2 * |w|^2 / 2``, by Newton's method from zero (deterministic)."""
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-8  # the bias is not shrunk; a tiny term keeps the Hessian invertible
    for _ in range(iterations):
        p = _sigmoid(a @ theta)
        grad = a.T @ (p - t) + reg * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fit_platt(raw: Sequence[float], y: Sequence[int]) -> dict[str, Any]:
    """Platt scaling on the raw log-odds with Platt's (1999) smoothed targets.

    The slope is kept >= 0: every detector's score is built to rise with manipulation, so
    a negative fit says the data cannot tell (a few items), not that the detector should
    be read upside down; the calibration is then the constant smoothed base rate.
    """
    yy = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = yy.sum(), len(yy) - yy.sum()
    t = np.where(yy == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w, b = logistic(_logit(np.asarray(raw, dtype=np.float64))[:, None], t, l2=1e-6)
    a = float(w[0])
    if a < 0:
        a, b = 0.0, float(_logit(np.array(t.mean())))
    return {"method": "platt", "a": round(a, 6), "b": round(b, 6)}


def fit_fusion(x: FloatArray, labels: FloatArray) -> tuple[FloatArray, float]:
    """Logistic regression with weights >= 0 (a detector's calibrated evidence of manipulation
    never counts against it): a detector fitted below zero is dropped and the rest refitted."""
    active = list(range(x.shape[1]))
    while True:
        w_active, b = logistic(x[:, active], labels, l2=FUSION_L2)
        if (w_active >= 0).all():
            break
        active.pop(int(np.argmin(w_active)))
    w = np.zeros(x.shape[1])
    w[active] = w_active
    return w, b


def fit_isotonic(raw: Sequence[float], y: Sequence[int]) -> dict[str, Any]:
    """Isotonic regression by pool-adjacent-violators; knots at each block's score range."""
    order = np.argsort(np.asarray(raw, dtype=np.float64), kind="stable")
    xs = np.asarray(raw, dtype=np.float64)[order]
    ys = np.asarray(y, dtype=np.float64)[order]
    blocks: list[list[float]] = []  # [sum of y, count, min x, max x]
    for xv, yv in zip(xs, ys, strict=True):
        blocks.append([yv, 1.0, xv, xv])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, hi = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = hi
    knots_x: list[float] = []
    knots_y: list[float] = []
    for s, c, lo, hi in blocks:
        for xv in (lo, hi) if hi > lo else (lo,):
            knots_x.append(round(float(xv), 6))
            knots_y.append(round(float(s / c), 6))
    return {"method": "isotonic", "x": knots_x, "y": knots_y}


def fit_detector(raw: Sequence[float], y: Sequence[int]) -> dict[str, Any]:
    n_pos = int(sum(y))
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise CalibrationDataError(
            f"calibration: needs both classes, got {n_pos} manipulated and {n_neg} real"
        )
    if min(n_pos, n_neg) >= ISOTONIC_MIN_PER_CLASS:
        spec = fit_isotonic(raw, y)
    else:
        spec = fit_platt(raw, y)
    # The smoothed share of manipulated items: the fusion's "no evidence" point.
    prior = round((n_pos + 1) / (len(y) + 2), 6)
    return spec | {"prior": prior, "n": len(y), "n_manipulated": n_pos, "n_real": n_neg}


def _detector_data(items: Sequence[ScoredItem], detector: str) -> tuple[list[float], list[int]]:
    raw, y = [], []
    for it in items:
        s = it.scores.get(detector)
        if it.accepted and s is not None:
            raw.append(s)
            y.append(it.target(detector))
    return raw, y


def fit(items: Sequence[ScoredItem], detectors: Sequence[str]) -> dict[str, Any]:
    """Calibrations and fusion fitted on ``items``: the ``detectors``/``fusion`` parts of the
    calibration file. A detector whose targets are all of one class (nothing it looks at was
    manipulated, or nothing was real) cannot be calibrated: it is listed under
    ``uncalibrated`` with the reason and left out of the fusion."""
    specs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in detectors:
        raw, y = _detector_data(items, name)
        try:
            specs[name] = fit_detector(raw, y)
        except CalibrationDataError as exc:
            skipped[name] = str(exc)
    if not specs:
        raise CalibrationDataError(
            "calibration: no detector could be calibrated ("
            + "; ".join(f"{n}: {r}" for n, r in skipped.items())
            + ")"
        )
    fused = [n for n in detectors if n in specs]
    cal = parse(
        {
            "format": FORMAT,
            "version": "fitting",
            "detectors": specs,
            "fusion": {"weights": {}, "bias": 0.0},
        }
    )
    x, labels = fusion_features(cal, items, fused)
    if len(set(labels.tolist())) < 2:
        raise CalibrationDataError("calibration: the fusion needs both fakes and reals")
    w, b = fit_fusion(x, labels.astype(np.float64))
    return {
        "detectors": specs,
        "uncalibrated": skipped,
        "fusion": {
            "method": "logistic regression on calibrated log-odds less the prior's, "
            "weights >= 0; a missing detector adds 0",
            "l2": FUSION_L2,
            "weights": {n: round(float(v), 6) for n, v in zip(fused, w, strict=True)},
            "bias": round(b, 6),
            "n": len(labels),
            "n_manipulated": int(labels.sum()),
            "n_real": int(len(labels) - labels.sum()),
        },
    }


def fusion_features(
    cal: Calibration, items: Sequence[ScoredItem], detectors: Sequence[str]
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Each detector's evidence (0 where missing) and the labels, of the items with any score."""
    rows, labels = [], []
    for it in items:
        if not it.accepted or all(it.scores.get(d) is None for d in detectors):
            continue
        row = []
        for d in detectors:
            s = it.scores.get(d)
            row.append(0.0 if s is None else cal.evidence(d, cal.calibrated(d, s)))
        rows.append(row)
        labels.append(int(it.fake))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(detectors)), np.asarray(labels)


def _as_calibration(fitted: Mapping[str, Any]) -> Calibration:
    return parse({"format": FORMAT, "version": "fold"} | dict(fitted))


# -- cross-validation ---------------------------------------------------------------------


def stratified_folds(
    labels: Sequence[int], k: int, seed: int, groups: Sequence[str] | None = None
) -> list[int]:
    """A fold index per item: each class shuffled by a seeded generator and dealt round-robin.

    With ``groups`` (an item's recording, :func:`recording_of`), the items of a group share
    a fold, so no item is judged by a fit on a copy or variant of itself: the groups, in a
    seeded order and the largest first, go one by one to the fold with the fewest items of
    the group's main class (then the fewest items), which deals single items as evenly as
    the round-robin does."""
    rng = np.random.default_rng(seed)
    fold = [0] * len(labels)
    if groups is None:
        for cls in (0, 1):
            members = [i for i, v in enumerate(labels) if v == cls]
            for j, i in enumerate(rng.permutation(members)):
                fold[int(i)] = j % k
        return fold
    members_of: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members_of.setdefault(g, []).append(i)
    names = list(members_of)
    order = sorted(
        (names[int(j)] for j in rng.permutation(len(names))),
        key=lambda g: -len(members_of[g]),
    )  # sorted() is stable: equal sizes keep the seeded order
    count = np.zeros((k, 2), dtype=np.int64)
    for g in order:
        members = members_of[g]
        fakes = sum(labels[i] for i in members)
        main = 1 if 2 * fakes >= len(members) else 0
        f = min(range(k), key=lambda f: (count[f, main], count[f].sum(), f))
        for i in members:
            fold[i] = f
        count[f, 1] += fakes
        count[f, 0] += len(members) - fakes
    return fold


def item_folds(items: Sequence[ScoredItem], k: int, seed: int) -> list[int]:
    """The fold of each item as ``dfd models calibrate`` deals them: stratified by label,
    an item's copies and variants with it (:attr:`ScoredItem.recording`)."""
    return stratified_folds([int(it.fake) for it in items], k, seed, [it.recording for it in items])


def _figures(p: Sequence[float], y: Sequence[int]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        "n": len(y),
        "n_manipulated": int(sum(y)),
        "auc": r(metrics.auc(p, y)),
        "eer": r(metrics.eer(p, y)),
        "tpr_at_5fpr": r(metrics.tpr_at_fpr(p, y, 0.05)),
        "ece": r(metrics.ece(p, y)) if len(p) else None,
    }


def cross_validate(
    items: Sequence[ScoredItem],
    detectors: Sequence[str],
    k: int,
    seed: int,
    threshold: float,
    band: float,
) -> dict[str, Any]:
    """Held-out figures: each fold predicted by a calibration fitted on the other folds."""
    usable = [
        it for it in items if it.accepted and any(it.scores.get(d) is not None for d in detectors)
    ]
    folds = item_folds(usable, k, seed)
    fused: list[float] = [math.nan] * len(usable)
    per_det: dict[str, list[tuple[float, float, int]]] = {d: [] for d in detectors}
    for f in range(k):
        train = [it for it, g in zip(usable, folds, strict=True) if g != f]
        cal = _as_calibration(fit(train, detectors))
        for i, (it, g) in enumerate(zip(usable, folds, strict=True)):
            if g != f:
                continue
            raw = {d: it.scores.get(d) for d in detectors}
            fused[i] = cal.fused_raw(raw)
            for d in cal.detectors:
                s = raw[d]
                if s is not None:
                    per_det[d].append((s, cal.calibrated(d, s), it.target(d)))
    y = [int(it.fake) for it in usable]
    out: dict[str, Any] = {"folds": k, "seed": seed, "detectors": {}}
    for d, rows in per_det.items():
        if not rows:
            continue
        raw_s = [r[0] for r in rows]
        cal_s = [r[1] for r in rows]
        yd = [r[2] for r in rows]
        fig = _figures(cal_s, yd)
        # The raw score's own figures on the same items and targets (nothing fitted): a
        # monotone calibration cannot rank better; pooled over folds it can rank worse.
        fig["auc_raw"] = None if (a := metrics.auc(raw_s, yd)) is None else round(a, 4)
        fig["ece_raw"] = round(metrics.ece(raw_s, yd) or 0.0, 4)
        fig["target"] = f"{d} manipulated"
        out["detectors"][d] = fig
    out["fused"] = _figures(fused, y) | verdict_counts(fused, y, threshold, band)
    out["fused"]["target"] = "item label"
    # The fusion the scores were produced with (fitted on nothing here), on the same items.
    conf = [(it.confidence, int(it.fake)) for it in usable if it.confidence is not None]
    if len(conf) == len(usable):
        p_raw, y_raw = [c[0] for c in conf], [c[1] for c in conf]
        out["fused"]["auc_raw"] = None if (a := metrics.auc(p_raw, y_raw)) is None else round(a, 4)
        out["fused"]["ece_raw"] = round(metrics.ece(p_raw, y_raw) or 0.0, 4)
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({it.kind for it in usable}):
        idx = [i for i, it in enumerate(usable) if it.kind == kind]
        by_kind[kind] = _figures([fused[i] for i in idx], [y[i] for i in idx]) | verdict_counts(
            [fused[i] for i in idx], [y[i] for i in idx], threshold, band
        )
    out["fused_by_kind"] = by_kind
    # Per scores file (e.g. the wild set alone), held out all the same.
    by_source: dict[str, dict[str, Any]] = {}
    for source in dict.fromkeys(it.source for it in usable):
        idx = [i for i, it in enumerate(usable) if it.source == source]
        p_s, y_s = [fused[i] for i in idx], [y[i] for i in idx]
        by_source[source] = _figures(p_s, y_s) | verdict_counts(p_s, y_s, threshold, band)
    out["fused_by_source"] = by_source
    return out


def verdict_counts(
    p: Sequence[float], y: Sequence[int], threshold: float, band: float
) -> dict[str, Any]:
    """Labels at ``threshold`` with an inconclusive band of half-width ``band``."""
    real_manip = sum(1 for pi, yi in zip(p, y, strict=True) if yi == 0 and pi >= threshold + band)
    fake_auth = sum(1 for pi, yi in zip(p, y, strict=True) if yi == 1 and pi < threshold - band)
    abstain = sum(1 for pi in p if threshold - band <= pi < threshold + band)
    n_fake = sum(y)
    return {
        "threshold": threshold,
        "band": band,
        "real_labelled_manipulated": real_manip,
        "fake_labelled_authentic": fake_auth,
        "fake_labelled_authentic_rate": round(fake_auth / n_fake, 4) if n_fake else None,
        "inconclusive": abstain,
        "inconclusive_rate": round(abstain / len(p), 4) if p else None,
    }


# -- the file -----------------------------------------------------------------------------


def calibrate(
    files: Sequence[Path],
    command: str,
    version: str,
    k: int = 5,
    seed: int = 0,
    threshold: float = 0.5,
    band: float = 0.1,
    root: Path | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The calibration document fitted on every item of ``files`` (see the module docstring),
    over the detectors in ``only`` (the enabled set; ``None``: every detector scored)."""
    parsed = [read_scores(p) for p in files]
    items = [it for f in parsed for it in f.items]
    detectors = sorted(
        {
            n
            for it in items
            if it.accepted
            for n, s in it.scores.items()
            if s is not None and (only is None or n in only)
        }
    )
    if not detectors:
        raise CalibrationDataError(
            "calibration: no detector scores in " + ", ".join(map(str, files))
        )
    fitted = fit(items, detectors)

    def shown(p: Path) -> str:
        if root is not None:
            try:
                return str(p.resolve().relative_to(root.resolve()))
            except ValueError:
                pass
        return str(p)

    data = []
    for f in parsed:
        kinds: dict[str, dict[str, int]] = {}
        for it in f.items:
            c = kinds.setdefault(it.kind, {"manipulated": 0, "real": 0, "not_accepted": 0})
            c["manipulated" if it.fake else "real"] += 1
            c["not_accepted"] += 0 if it.accepted else 1
        data.append(
            {
                "file": shown(f.path),
                "folder": f.folder,
                "sha256": f.sha256,
                "items": len(f.items),
                "accepted": sum(it.accepted for it in f.items),
                "by_kind": kinds,
            }
        )
    return {
        "format": FORMAT,
        "version": version,
        "fit_revision": FIT_REVISION,
        "command": command,
        "fitted_detectors": detectors,
        "data": data,
        "targets": {k_: sorted(v) for k_, v in KIND_TARGETS.items()},
        **fitted,
        "cross_validation": cross_validate(items, detectors, k, seed, threshold, band),
    }


def write(doc: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")
