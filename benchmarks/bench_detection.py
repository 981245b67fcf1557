"""The detection scorecard: the whole pipeline over a labelled folder, per kind and detector.

    .venv/bin/python -m benchmarks.bench_detection [FOLDER] [--tag wild] [--triton-url URL]
        [--resume] [--report-only] [--limit N]

``FOLDER`` (default ``$DFD_MEDIA_DIR/wild``) holds a ``labels.csv`` with the columns
``path,label,kind,method,has_audio,has_face_guess,source`` (``label`` is ``fake`` or
``real``; ``path`` is relative to the folder). Every listed file goes through
``dispatcher.pipeline.analyze`` against one real Triton (started here on the ``cpu``
repository, or ``--triton-url``). Per item it records the raw score of each detector (the
result's ``detectors`` when it has them, else its ``modalities``), the verdict and its
confidence, or the error of a file the pipeline refused: a refused file is counted as "not
accepted" and as an abstention, never dropped.

Writes, under ``benchmarks/results/``:

- ``detection_scores[_TAG].json``: the raw per-item scores (file names, labels, scores
  only), so the metrics and ``dfd models calibrate`` can be recomputed without re-running
  (``--report-only``; ``--resume`` re-runs only the items missing from it);
- ``detection[_TAG].md`` and ``.json``: per kind (and ``all``), per detector and fused:
  AUC, EER, TPR at 5 % FPR, real items labelled ``manipulated``, fakes labelled
  ``authentic``, abstain rate, calibration error (ECE) and counts, with the machine and
  the command.

The tag defaults to nothing for the wild set and to the folder's name otherwise.

The verdict is a fitted calibration's (``dfd/calibration.json``), and that calibration is
fitted on this very set (with the generated calibration set beside it): the served verdicts
of these items are in-sample. So the scorecard's verdicts are **held out**: the items of
``--pool`` (default: this set's scores and ``detection_scores_calibration.json``) are dealt
into 5 stratified folds by recording (``export.calibrate.recording_of``) as ``dfd models
calibrate`` deals them, each fold's items get the verdict of ``dispatcher.aggregate.verdict`` under a calibration fitted on the other folds,
and the report counts those (``verdict_served`` keeps the served one). Detector figures
are of the raw scores (nothing fitted).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe, load_average
from dfd import metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCORES_VERSION = 1
KIND_ORDER = ("faceswap", "reenactment", "lipsync", "talking_head", "ai_video", "audio")
ABSTAIN_LABELS = ("inconclusive", "not_applicable")
FUSED = "fused"


@dataclass(frozen=True)
class LabelledItem:
    """One row of ``labels.csv``."""

    path: str
    label: str  # fake | real
    kind: str
    method: str
    has_audio: str


def read_labels(folder: Path) -> list[LabelledItem]:
    """The rows of ``folder/labels.csv``, checked (a missing file or a bad label is an error)."""
    csv_path = folder / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"bench_detection: {csv_path} not found")
    items = []
    with csv_path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            label = (row.get("label") or "").strip()
            if label not in ("fake", "real"):
                raise ValueError(f"{csv_path}:{n}: label must be fake or real, got {label!r}")
            path = (row.get("path") or "").strip()
            if not (folder / path).is_file():
                raise FileNotFoundError(f"{csv_path}:{n}: {path} is not a file")
            items.append(
                LabelledItem(
                    path=path,
                    label=label,
                    kind=(row.get("kind") or "").strip() or "unknown",
                    method=(row.get("method") or "").strip(),
                    has_audio=(row.get("has_audio") or "").strip(),
                )
            )
    return items


def raw_scores(doc: dict[str, Any]) -> tuple[dict[str, float | None], str]:
    """Detector -> raw score (None when it had no input), and where they came from.

    The result's ``detectors`` (raw ``score`` per detector) when it has them, else its
    ``modalities`` (an unused modality scores None).
    """
    detectors = doc.get("detectors")
    if isinstance(detectors, dict) and detectors:
        return {
            name: (d.get("score") if d.get("used", d.get("score") is not None) else None)
            for name, d in detectors.items()
        }, "detectors"
    return {
        name: (m.get("score") if m.get("used") else None)
        for name, m in (doc.get("modalities") or {}).items()
    }, "modalities"


def score_item(item: LabelledItem, folder: Path, settings: Any, client: Any, store: Any) -> dict:
    """One item through the pipeline: its record for the scores file."""
    from dfd.errors import DfdError, InputError
    from dispatcher.pipeline import analyze

    record: dict[str, Any] = {
        "path": item.path,
        "label": item.label,
        "kind": item.kind,
        "method": item.method,
    }
    started = time.perf_counter()
    try:
        result = analyze(folder / item.path, settings, client, store)
    except DfdError as exc:
        stage = getattr(exc, "stage", None)
        record.update(
            status="refused" if isinstance(exc, InputError) else "failed",
            verdict=None,
            confidence=None,
            scores={},
            error={
                "type": exc.type,
                "message": exc.message,
                "stage": getattr(stage, "value", stage),
            },
        )
    else:
        doc = result.model_dump(mode="json")
        scores, source = raw_scores(doc)
        record.update(
            status="scored",
            verdict=doc["label"],
            confidence=doc["confidence"],
            scores=scores,
            scores_from=source,
            reasons=doc.get("reasons"),
            models=doc.get("models"),
        )
    record["wall_s"] = round(time.perf_counter() - started, 2)
    return record


# -- metrics ------------------------------------------------------------------------------


def _rate(k: int, n: int) -> float | None:
    return None if n == 0 else round(k / n, 4)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def score_metrics(pairs: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """AUC, EER, TPR at 5 % FPR and ECE over ``(score, label)`` pairs."""
    s = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    return {
        "auc": _r(metrics.auc(s, y)),
        "eer": _r(metrics.eer(s, y)),
        "tpr_at_5fpr": _r(metrics.tpr_at_fpr(s, y, 0.05)),
        "ece": _r(metrics.ece(s, y)) if s else None,
        "n_scored": len(s),
        "n_fake_scored": sum(y),
        "n_real_scored": len(y) - sum(y),
    }


def _scored(name: str) -> bool:
    """Whether detector ``name`` gives items a score: the ensemble's scorers and mouth sync
    (which the dispatcher runs itself); not the speech gate (it decides what the voice
    detectors judge) nor the voice consistency check (changes on the timeline, no score)."""
    from dfd.detectors import DETECTORS, LooksAt

    return name not in DETECTORS or DETECTORS[name].looks_at not in (
        LooksAt.FILE,
        LooksAt.SPEECH_SEGMENT,
    )


def group_report(records: Sequence[dict]) -> dict[str, Any]:
    """Verdict counts and per-detector and fused metrics of one group of items."""
    y = {id(r): int(r["label"] == "fake") for r in records}
    fakes = [r for r in records if r["label"] == "fake"]
    reals = [r for r in records if r["label"] == "real"]
    refused = [r for r in records if r["status"] != "scored"]
    abstained = [r for r in records if r["status"] != "scored" or r["verdict"] in ABSTAIN_LABELS]
    real_manip = [r for r in reals if r.get("verdict") == "manipulated"]
    fake_auth = [r for r in fakes if r.get("verdict") == "authentic"]
    names = sorted({name for r in records for name in r.get("scores", {}) if _scored(name)})
    detectors = {}
    for name in names:
        pairs = [
            (r["scores"][name], y[id(r)])
            for r in records
            if r["status"] == "scored" and r["scores"].get(name) is not None
        ]
        detectors[name] = score_metrics(pairs)
    fused = score_metrics([(r["confidence"], y[id(r)]) for r in records if r["status"] == "scored"])
    return {
        "n": len(records),
        "n_fake": len(fakes),
        "n_real": len(reals),
        "not_accepted": len(refused),
        "not_accepted_items": [
            {"path": r["path"], "error": r.get("error", {}).get("type")} for r in refused
        ],
        "real_labelled_manipulated": len(real_manip),
        "real_labelled_manipulated_rate": _rate(len(real_manip), len(reals)),
        "real_labelled_manipulated_items": [r["path"] for r in real_manip],
        "fake_labelled_authentic": len(fake_auth),
        "fake_labelled_authentic_rate": _rate(len(fake_auth), len(fakes)),
        "abstained": len(abstained),
        "abstain_rate": _rate(len(abstained), len(records)),
        "verdicts": {
            v: sum(1 for r in records if (r.get("verdict") or "not accepted") == v)
            for v in sorted({r.get("verdict") or "not accepted" for r in records})
        },
        "detectors": detectors,
        FUSED: fused,
    }


def build_report(records: Sequence[dict]) -> dict[str, Any]:
    """Per kind (the known kinds first, then any others), then ``all``."""
    kinds = [k for k in KIND_ORDER if any(r["kind"] == k for r in records)]
    kinds += sorted({r["kind"] for r in records} - set(kinds))
    groups = {k: group_report([r for r in records if r["kind"] == k]) for k in kinds}
    groups["all"] = group_report(records)
    return groups


BLIND_AUC = 0.6


def targets(g: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for the issue's targets on one group."""
    fa = g["fake_labelled_authentic_rate"] or 0.0
    ab = g["abstain_rate"] or 0.0
    return [
        (
            "real items labelled `manipulated`",
            f"{g['real_labelled_manipulated']} of {g['n_real']}",
            "none",
            g["real_labelled_manipulated"] == 0,
        ),
        (
            "fakes labelled `authentic`",
            f"{g['fake_labelled_authentic']} of {g['n_fake']} ({fa * 100:.0f} %)",
            "at most 15 %",
            fa <= 0.15,
        ),
        ("abstain rate", f"{ab * 100:.0f} %", "at most 50 %", ab <= 0.5),
        (
            "files not accepted",
            f"{g['not_accepted']} of {g['n']}",
            "none",
            g["not_accepted"] == 0,
        ),
    ]


AUDIO_AUC_TARGET = 0.90


def audio_targets(kinds: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for issue 11's audio targets: the fused AUC on the
    audio kind, no real recording called ``manipulated``, and no real interview video (the
    real items of the other kinds) called ``manipulated``."""
    audio = kinds.get("audio")
    if audio is None:
        return []
    auc = audio[FUSED]["auc"]
    videos = [
        p
        for kind, g in kinds.items()
        if kind not in ("all", "audio")
        for p in g["real_labelled_manipulated_items"]
    ]
    return [
        (
            "fused AUC on the audio kind",
            "n/a" if auc is None else f"{auc:.2f}",
            f"at least {AUDIO_AUC_TARGET:.2f}",
            auc is not None and auc >= AUDIO_AUC_TARGET,
        ),
        (
            "real recordings labelled `manipulated`",
            f"{audio['real_labelled_manipulated']} of {audio['n_real']}"
            + (
                " (" + ", ".join(f"`{p}`" for p in audio["real_labelled_manipulated_items"]) + ")"
                if audio["real_labelled_manipulated_items"]
                else ""
            ),
            "none",
            audio["real_labelled_manipulated"] == 0,
        ),
        (
            "real videos labelled `manipulated`",
            f"{len(videos)}" + (" (" + ", ".join(f"`{p}`" for p in videos) + ")" if videos else ""),
            "none",
            not videos,
        ),
    ]


def _target_lines(found: list[tuple[str, str, str, bool]]) -> list[str]:
    return [
        f"- {what}: {got} (target {want}): **{'met' if ok else 'not met'}**"
        for what, got, want, ok in found
    ]


def blind_kinds(kinds: dict[str, Any]) -> dict[str, str]:
    """The kinds the served models do not separate from real: kind -> why."""
    out = {}
    for kind, g in kinds.items():
        if kind == "all":
            continue
        auc = g[FUSED]["auc"]
        if g["not_accepted"] == g["n"]:
            out[kind] = "no file accepted"
        elif auc is None:
            out[kind] = "no real counterpart scored" if g["n_real"] == 0 else "too few scored"
        elif auc <= BLIND_AUC:
            out[kind] = f"fused AUC {auc:.2f}"
    return out


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:.0f} %" if pct else f"{x:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    """The scorecard as a Markdown page."""
    m = doc["machine"]
    lines = [
        f"# Detection scorecard: {doc['folder']}",
        "",
        f"{doc['n_items']} labelled items from `{doc['folder']}/labels.csv`, each through the "
        f"whole pipeline (`dispatcher.pipeline.analyze`, real Triton, {doc['triton_target']} "
        f"repository). Command: `{doc['command']}`"
        + (
            f" (tables recomputed from its scores by `{doc['report_command']}`)"
            if doc["report_command"] != doc["command"]
            else ""
        )
        + f". Machine: {m['cpu']}, {m['cores']} cores "
        f"(load {m.get('load_average')}); models: "
        + ", ".join(f"{k} `{v}`" for k, v in sorted(doc["models"].items()))
        + f". Raw scores: `{doc['scores_file']}`; scores read from the result's "
        f"`{doc['scores_from']}`.",
        "",
        "Fused = the verdict's confidence. Abstain = `inconclusive`, `not_applicable` or not "
        "accepted (refused by the pipeline). ECE: 10 equal-width bins. AUC/EER/TPR need both "
        "fakes and reals among the scored items (else n/a). Detector rows are raw scores "
        "(nothing fitted). "
        + (
            "Verdicts and fused figures are **held out**: each item judged by "
            "`dispatcher.aggregate.verdict` under a calibration fitted without it "
            f"({doc['held_out']['folds']} stratified folds by recording, seed {doc['held_out']['seed']}, "
            f"over {', '.join(doc['held_out']['pool'])}; fused detectors: "
            f"{', '.join(doc['held_out']['detectors'])})."
            if doc.get("held_out") and "skipped" not in doc["held_out"]
            else "Verdicts are the served ones (in-sample where the calibration was fitted on "
            "these items)"
            + (
                f"; no held-out replay: {doc['held_out']['skipped']}."
                if doc.get("held_out")
                else "."
            )
        ),
        "",
        "## Verdicts per kind",
        "",
        "| kind | n (fake/real) | not accepted | real → manipulated | fake → authentic "
        "| abstain | fused AUC | fused EER | fused TPR@5%FPR | fused ECE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, g in doc["kinds"].items():
        fu = g[FUSED]
        lines.append(
            f"| {kind} | {g['n']} ({g['n_fake']}/{g['n_real']}) | {g['not_accepted']} "
            f"| {g['real_labelled_manipulated']}/{g['n_real']} "
            f"| {g['fake_labelled_authentic']}/{g['n_fake']} "
            f"| {_f(g['abstain_rate'], True)} | {_f(fu['auc'])} | {_f(fu['eer'])} "
            f"| {_f(fu['tpr_at_5fpr'])} | {_f(fu['ece'])} |"
        )
    blind = blind_kinds(doc["kinds"])
    if blind:
        lines += [
            "",
            "Blind spots (no fused AUC above "
            f"{BLIND_AUC:.2f} on the accepted items, or nothing accepted): "
            + "; ".join(f"{k} ({why})" for k, why in blind.items())
            + ".",
        ]
    lines += ["", "## The targets of issue 10 (all items)", ""]
    lines += _target_lines(targets(doc["kinds"]["all"]))
    if audio := audio_targets(doc["kinds"]):
        lines += ["", "## The audio targets of issue 11 (held out)", ""]
        lines += _target_lines(audio)
    lines += operating_points_markdown(doc.get("held_out") or {})
    lines += [
        "",
        "## Per detector and kind",
        "",
        "| kind | detector | scored (fake/real) | AUC | EER | TPR@5%FPR | ECE |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for kind, g in doc["kinds"].items():
        for name, d in [*g["detectors"].items(), (FUSED, g[FUSED])]:
            lines.append(
                f"| {kind} | {name} | {d['n_scored']} ({d['n_fake_scored']}/"
                f"{d['n_real_scored']}) | {_f(d['auc'])} | {_f(d['eer'])} "
                f"| {_f(d['tpr_at_5fpr'])} | {_f(d['ece'])} |"
            )
    allg = doc["kinds"]["all"]
    lines += ["", "## Items", ""]
    if allg["real_labelled_manipulated_items"]:
        lines.append(
            "Real items labelled `manipulated`: "
            + ", ".join(f"`{p}`" for p in allg["real_labelled_manipulated_items"])
            + "."
        )
    if allg["not_accepted_items"]:
        by_error: dict[str, int] = {}
        for it in allg["not_accepted_items"]:
            by_error[it["error"]] = by_error.get(it["error"], 0) + 1
        lines.append(
            f"Not accepted: {allg['not_accepted']} "
            f"({', '.join(f'{n} {e}' for e, n in sorted(by_error.items()))}); "
            "listed with their errors in the scores file."
        )
    lines += [
        "",
        "| item | label | kind | verdict | confidence | "
        + " | ".join(doc["detector_names"])
        + " |",
        "|---|---|---|---|---:|" + "---:|" * len(doc["detector_names"]),
    ]
    for r in doc["items"]:
        scores = r.get("scores", {})
        cells = [
            _f(scores.get(n)) if scores.get(n) is not None else "–" for n in doc["detector_names"]
        ]
        verdict = r["verdict"] or f"not accepted ({r['error']['type']})"
        lines.append(
            f"| `{r['path']}` | {r['label']} | {r['kind']} | {verdict} "
            f"| {_f(r['confidence'])} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def operating_points_markdown(held: dict[str, Any]) -> list[str]:
    """The held-out verdicts at every (threshold, band) of the grid: where the targets can
    be reached by choosing the cut alone."""
    points = held.get("operating_points")
    if not points:
        return []
    served = held["served"]
    meeting = [p for p in points if meets_targets(p)]
    lines = [
        "",
        "## Operating points (held out)",
        "",
        "The same held-out verdicts replayed at other cuts (`DFD_THRESHOLD`, "
        "`DFD_INCONCLUSIVE_BAND`): `manipulated` above threshold + band, `authentic` below "
        "threshold - band, for every cut of the grid whose `authentic` side stays at or "
        "below one half (so `authentic` never means more likely manipulated than not). "
        "The served point is marked.",
        "",
        "| threshold | band | real → manipulated | fake → authentic | abstain |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        mark = (
            " (served)"
            if (p["threshold"], p["band"]) == (served["threshold"], served["band"])
            else ""
        )
        lines.append(
            f"| {p['threshold']:.2f}{mark} | {p['band']:.2f} "
            f"| {p['real_labelled_manipulated']}/{p['n_real']} "
            f"| {p['fake_labelled_authentic']}/{p['n_fake']} "
            f"| {p['abstain'] / p['n'] * 100:.0f} % |"
        )
    zero = [p for p in points if p["real_labelled_manipulated"] == 0]
    least = min(zero, key=lambda p: p["abstain"]) if zero else None
    lines += [""]
    if meeting:
        lines.append(f"{len(meeting)} of the {len(points)} points meet all three verdict targets.")
    else:
        lines.append(
            f"None of the {len(points)} points meets all three verdict targets"
            + (
                f"; with no real item labelled `manipulated`, the lowest abstain rate is "
                f"{least['abstain'] / least['n'] * 100:.0f} % (threshold {least['threshold']:.2f}, "
                f"band {least['band']:.2f}, fakes labelled `authentic` "
                f"{least['fake_labelled_authentic']}/{least['n_fake']}): the detectors' "
                "separation, not the cut, is what stands in the way."
                if least
                else "; no point avoids labelling a real item `manipulated`."
            )
        )
    return lines


# -- running ------------------------------------------------------------------------------


def _paths(tag: str, results: Path) -> tuple[Path, Path, Path]:
    suffix = f"_{tag}" if tag else ""
    return (
        results / f"detection_scores{suffix}.json",
        results / f"detection{suffix}.json",
        results / f"detection{suffix}.md",
    )


def machine() -> dict[str, Any]:
    import av
    import numpy
    import onnxruntime

    return describe(
        pyav=av.__version__,
        onnxruntime=onnxruntime.__version__,
        numpy=numpy.__version__,
        load_average=load_average(),
    )


def run_items(
    items: Sequence[LabelledItem],
    folder: Path,
    triton_url: str | None,
    log: Any = print,
) -> tuple[list[dict], dict[str, str]]:
    """Score ``items`` against Triton at ``triton_url`` (or one started here)."""
    from cli.analyze import FolderStore
    from cli.local_triton import LocalTriton
    from dfd.settings import Settings
    from dispatcher.pipeline import models_used
    from dispatcher.triton_client import TritonClient
    from export.triton_repo import build_repository

    settings = Settings()
    server = None
    evidence = Path(tempfile.mkdtemp(prefix="dfd-bench-detection-"))
    try:
        if triton_url is None:
            server = LocalTriton(settings, build_repository(settings, "cpu"))
            server.start()
            triton_url = server.grpc_url
        records = []
        with TritonClient(
            triton_url, timeout_s=settings.triton_timeout_s, retries=settings.triton_retries
        ) as client:
            store = FolderStore(evidence)
            for n, item in enumerate(items, start=1):
                record = score_item(item, folder, settings, client, store)
                records.append(record)
                log(
                    f"[{n}/{len(items)}] {item.path}: {record['status']} "
                    f"{record.get('verdict') or record.get('error', {}).get('type')} "
                    f"({record['wall_s']:.1f} s)"
                )
        return records, models_used(settings)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(evidence, ignore_errors=True)


def held_out(
    records: Sequence[dict],
    pool: Sequence[Path],
    folder: str | None = None,
    k: int = 5,
    seed: int = 0,
) -> tuple[list[dict], dict[str, Any]]:
    """``records`` with each verdict and confidence replaced by its held-out one (see the
    module docstring), and a note of how they were made."""
    from dfd.detectors import scorers
    from dfd.settings import Settings
    from dispatcher.aggregate import MediaFacts, ScoredItems, verdict
    from export.calibrate import _as_calibration, fit, item_folds, read_scores

    files = [read_scores(p) for p in pool]
    items = [it for f in files for it in f.items]
    usable = [it for it in items if it.accepted and any(v is not None for v in it.scores.values())]
    settings = Settings()
    # the verdict of the detectors that run (DFD_DETECTORS), fitted as `dfd models calibrate`
    # fits it for them
    running = {d.name for d in scorers(settings)}
    detectors = sorted(
        {n for it in usable for n, v in it.scores.items() if v is not None and n in running}
    )
    folds = item_folds(usable, k, seed)
    replay: dict[tuple[str, str], tuple[str, float]] = {}
    # each item's held-out judge: (threshold, band) -> label, for the operating points
    judges: dict[tuple[str, str], Callable[[float, float], str]] = {}
    for f in range(k):
        cal = _as_calibration(
            fit([it for it, g in zip(usable, folds, strict=True) if g != f], detectors)
        )
        for it, g in zip(usable, folds, strict=True):
            if g != f:
                continue
            found = {
                d: None
                if it.scores.get(d) is None
                else ScoredItems(np.asarray([it.scores[d]], np.float32), ((0.0, 1.0),))
                for d in it.scores
                if d in detectors
            }
            # What the verdict needs beyond the scores (the unused detectors' reasons come
            # from them; "too short" is not replayed: no item of these sets is under 1 s).
            facts = MediaFacts(
                has_video=True, faces=1, has_audio=True, speech_s=1.0, duration_s=60.0
            )

            def judge(
                threshold: float,
                band: float,
                found: Any = found,
                cal: Any = cal,
                facts: Any = facts,
            ) -> str:
                v = verdict(found, cal, settings.fusion_scales(), threshold, band, facts)
                return v.label.value

            v = verdict(
                found,
                cal,
                settings.fusion_scales(),
                settings.threshold,
                settings.inconclusive_band,
                facts,
            )
            replay[(it.source, it.path)] = (v.label.value, round(v.confidence, 4))
            judges[(it.source, it.path)] = judge
    folder = folder if folder is not None else (files[0].folder if files else "")
    out = []
    for r in records:
        r = dict(r)
        key = (folder, r["path"])
        if key in replay:
            r["verdict_served"] = r.get("verdict")
            r["verdict"], r["confidence"] = replay[key]
        out.append(r)
    note = {
        "folds": k,
        "seed": seed,
        "pool": [f"{f.folder} ({len(f.items)} items, sha256 {f.sha256[:12]})" for f in files],
        "detectors": detectors,
        "served": {"threshold": settings.threshold, "band": settings.inconclusive_band},
        "operating_points": operating_points(records, folder, judges),
    }
    return out, note


# The grid of (threshold, band) the held-out verdicts are replayed at: how far the
# targets can be reached by choosing where to cut, with the detectors of the day.
OPERATING_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
OPERATING_BANDS = (0.0, 0.05, 0.1, 0.15, 0.2)


def operating_points(
    records: Sequence[dict],
    folder: str,
    judges: dict[tuple[str, str], Callable[[float, float], str]],
) -> list[dict[str, Any]]:
    """Per (threshold, band) of the grid: the held-out verdicts' real items labelled
    ``manipulated``, fakes labelled ``authentic`` and abstain rate over ``records`` (an
    item without a judge, i.e. not accepted, keeps its verdict: an abstention)."""
    points = []
    for threshold in OPERATING_THRESHOLDS:
        for band in OPERATING_BANDS:
            # `authentic` must mean less likely manipulated than not: cuts whose authentic
            # side reaches above one half are not offered
            if not (0 < threshold - band <= 0.5 and threshold + band < 1):
                continue
            real_m = fake_a = abstain = 0
            for r in records:
                judge = judges.get((folder, r["path"]))
                label = judge(threshold, band) if judge else r.get("verdict")
                real_m += r["label"] == "real" and label == "manipulated"
                fake_a += r["label"] == "fake" and label == "authentic"
                abstain += label not in ("manipulated", "authentic")
            points.append(
                {
                    "threshold": threshold,
                    "band": band,
                    "real_labelled_manipulated": real_m,
                    "fake_labelled_authentic": fake_a,
                    "abstain": abstain,
                    "n_real": sum(r["label"] == "real" for r in records),
                    "n_fake": sum(r["label"] == "fake" for r in records),
                    "n": len(records),
                }
            )
    return points


def meets_targets(p: dict[str, Any]) -> bool:
    """Whether an operating point meets all three verdict targets of issue 10."""
    return (
        p["real_labelled_manipulated"] == 0
        and p["fake_labelled_authentic"] <= 0.15 * p["n_fake"]
        and p["abstain"] <= 0.5 * p["n"]
    )


def report_document(
    scores_doc: dict[str, Any],
    command: str,
    scores_file: str,
    pool: Sequence[Path] | None = None,
) -> dict:
    records = scores_doc["items"]
    held: dict[str, Any] | None = None
    if pool:
        from export.calibrate import CalibrationDataError

        try:
            records, held = held_out(records, pool, scores_doc["folder"])
        except CalibrationDataError as exc:  # too few items of a class to fit folds
            held = {"skipped": str(exc)}
    names = sorted({n for r in records for n in r.get("scores", {}) if _scored(n)})
    sources = sorted({r["scores_from"] for r in records if r.get("scores_from")})
    return {
        "folder": scores_doc["folder"],
        # The command that ran the pipeline; a --report-only rerun is named beside it.
        "command": scores_doc.get("command", command),
        "report_command": command,
        "scores_file": scores_file,
        "scores_from": "/".join(sources) or "n/a",
        "machine": scores_doc["machine"],
        "triton_target": "cpu",
        "models": scores_doc["models"],
        "n_items": len(records),
        "detector_names": names,
        "held_out": held,
        "kinds": build_report(records),
        "items": [
            {
                k: r.get(k)
                for k in ("path", "label", "kind", "status", "verdict", "confidence", "scores")
            }
            | ({"error": r["error"]} if r.get("error") else {})
            for r in records
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    media = Path(os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared" / "media"))
    parser.add_argument("folder", type=Path, nargs="?", default=media / "wild")
    parser.add_argument("--tag", default=None, help="results file suffix (default: see above)")
    parser.add_argument("--triton-url", help="use this Triton (gRPC) instead of starting one")
    parser.add_argument("--resume", action="store_true", help="re-run only items not yet scored")
    parser.add_argument("--report-only", action="store_true", help="metrics from the scores file")
    parser.add_argument("--limit", type=int, help="only the first N items (a quick look)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write")
    parser.add_argument(
        "--pool",
        type=Path,
        nargs="*",
        default=None,
        help="scores files the held-out calibrations are fitted on (default: this set's and "
        "detection_scores_calibration.json; none: the served verdicts)",
    )
    args = parser.parse_args(argv)

    folder = args.folder.resolve()
    tag = args.tag if args.tag is not None else ("" if folder.name == "wild" else folder.name)
    scores_path, json_path, md_path = _paths(tag, args.results)
    command = " ".join(
        [
            # the detectors that ran are part of the command (the scores have one per detector)
            *(
                [f"DFD_DETECTORS={os.environ['DFD_DETECTORS']}"]
                if os.environ.get("DFD_DETECTORS")
                else []
            ),
            "python -m benchmarks.bench_detection",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )
    if args.report_only:
        scores_doc = json.loads(scores_path.read_text())
    else:
        items = read_labels(folder)[: args.limit]
        done: dict[str, dict] = {}
        if args.resume and scores_path.is_file():
            old = json.loads(scores_path.read_text())
            done = {r["path"]: r for r in old["items"] if r["status"] != "failed"}
        todo = [it for it in items if it.path not in done]
        new, models = run_items(todo, folder, args.triton_url, lambda s: print(s, file=sys.stderr))
        by_path = done | {r["path"]: r for r in new}
        scores_doc = {
            "version": SCORES_VERSION,
            "folder": folder.name,
            "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "models": models,
            "items": [by_path[it.path] for it in items],
        }
        args.results.mkdir(parents=True, exist_ok=True)
        scores_path.write_text(json.dumps(scores_doc, indent=1) + "\n")
    if args.pool is None:  # the files `dfd models calibrate` fits on, and this set's
        pool = [scores_path] + [
            p
            for p in (
                args.results / "detection_scores.json",
                args.results / "detection_scores_calibration.json",
            )
            if p.is_file() and p != scores_path
        ]
    else:
        pool = list(args.pool)
    doc = report_document(scores_doc, command, scores_path.name, pool)
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    md_path.write_text(markdown(doc))
    allg = doc["kinds"]["all"]
    print(
        f"{md_path}: {allg['n']} items, {allg['not_accepted']} not accepted, fused AUC "
        f"{_f(allg[FUSED]['auc'])}, real->manipulated {allg['real_labelled_manipulated']}, "
        f"fake->authentic {allg['fake_labelled_authentic']}, abstain {_f(allg['abstain_rate'], True)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
