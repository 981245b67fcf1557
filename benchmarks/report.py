"""Keeps the README's generated blocks true: the settings table and the benchmark tables.

    .venv/bin/python -m benchmarks.report          # rewrite the blocks in README.md
    .venv/bin/python -m benchmarks.report --check  # exit 1 if README.md is out of date

Each block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. The settings
table comes from ``dfd.settings_doc``; the benchmark block quotes the Markdown results
files in ``benchmarks/results/`` (headings moved down two levels), so the README never
states a number that a results file does not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from dfd.settings_doc import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
# Results quoted in the README, in reading order (a missing file is an error, not a gap).
QUOTED = (
    "e2e_cpu.md",
    "floor_cpu_quiet.md",
    "floor_cpu.md",
    "stages_cpu.md",
    "triton_cpu.md",
    "gateway.md",
    "known_fakes.md",
    "soak_cpu.md",
    "memory_cpu.md",
    "memory_cpu_1080p.md",
)


def benchmark_block(results: Path = RESULTS) -> str:
    parts = []
    for name in QUOTED:
        text = (results / name).read_text().strip()
        text = re.sub(
            r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M
        )
        parts.append(f"{text}\n\n(`benchmarks/results/{name}`)")
    return "\n\n".join(parts) + "\n"


def scorecard_block(results: Path = RESULTS, name: str = "detection.md") -> str:
    """The detection scorecard's tables (not its per-item list), headings down two levels."""
    text = (results / name).read_text()
    text = text.split("\n## Items", 1)[0].strip()
    text = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M)
    return f"{text}\n\n(`benchmarks/results/{name}`; every item: the same file)\n"


def detector_cost_block(results: Path = RESULTS, name: str = "ort_cpu.md") -> str:
    """What each detector adds to the benchmark clip: that section of the onnxruntime
    results, headings down two levels."""
    text = (results / name).read_text()
    start = text.index("## What each detector adds")
    end = text.find("\n## ", start)
    text = text[start : end if end != -1 else None].strip()
    text = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M)
    return (
        f"{text}\n\n(`benchmarks/results/{name}`; each model by batch and threads: the same file)\n"
    )


def calibration_block(path: Path = ROOT / "dfd" / "calibration.json") -> str:
    """The committed calibration's data and held-out figures, as a table."""
    doc = json.loads(path.read_text())
    cv = doc["cross_validation"]

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    data = "; ".join(
        f"`{d['file']}` ({d['items']} items, {d['accepted']} accepted)" for d in doc["data"]
    )
    lines = [
        f"Version `{doc['version']}`, fitted by `{doc['command']}` on {data}. "
        f"{cv['folds']}-fold stratified cross-validation (seed {cv['seed']}): every figure is "
        "of items held out of the fit that scored them. Raw: the detector's own score, and for "
        "fused the confidence of the fixed-weight fusion that scored the items, on the same "
        "items (nothing fitted).",
        "",
        "| | target | n | held-out AUC | EER | TPR@5%FPR | ECE | raw AUC | raw ECE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, g in [*cv["detectors"].items(), ("fused", cv["fused"])]:
        lines.append(
            f"| {name} | {g['target']} | {g['n']} | {f(g['auc'])} | {f(g['eer'])} "
            f"| {f(g['tpr_at_5fpr'])} | {f(g['ece'])} | {f(g.get('auc_raw'))} "
            f"| {f(g.get('ece_raw'))} |"
        )
    fu = cv["fused"]
    lines += [
        "",
        f"Held out, at threshold {fu['threshold']} with an inconclusive band of "
        f"±{fu['band']}: {fu['real_labelled_manipulated']} real items labelled "
        f"`manipulated`, {fu['fake_labelled_authentic']} fakes labelled `authentic` "
        f"({f(fu['fake_labelled_authentic_rate'])}), {fu['inconclusive']} inconclusive "
        f"({f(fu['inconclusive_rate'])}).",
        "",
    ]
    for source, g in cv.get("fused_by_source", {}).items():
        lines.append(
            f"- Held out, `{source}` items only ({g['n']} scored): fused AUC {f(g['auc'])}, "
            f"EER {f(g['eer'])}, ECE {f(g['ece'])}; {g['real_labelled_manipulated']} real "
            f"labelled `manipulated`, {g['fake_labelled_authentic']} fakes `authentic`, "
            f"{g['inconclusive']} inconclusive."
        )
    for name, reason in doc.get("uncalibrated", {}).items():
        lines.append(f"- Not calibrated: {name} ({reason}).")
    return "\n".join(lines) + "\n\n(`dfd/calibration.json`)\n"


# The wild kinds each modality's detectors are meant to see (their rows in the table).
MODALITY_KINDS = {
    "visual": ("faceswap", "ai_video"),
    "audio": ("audio",),
    "lipsync": ("lipsync", "talking_head"),
}
# Detectors whose own figures are in a results file of their own (no score on the scorecard).
OWN_RESULTS = {"voice": "voice_changes.md", "speech": "none: a gate, it scores nothing"}


def detectors_block(
    results: Path = RESULTS, calibration: Path = ROOT / "dfd" / "calibration.json"
) -> str:
    """Every registered detector: licence, training data, the authors' figure, whether it
    is on and fused, and its raw AUC on the scorecards (``detection.json``, the wild set,
    and ``detection_calibration.json``), so the table states no figure the files do not."""
    from dfd.detectors import DETECTORS

    wild = json.loads((results / "detection.json").read_text())
    cal = json.loads((results / "detection_calibration.json").read_text())
    weights = json.loads(calibration.read_text())["fusion"]["weights"]

    def auc(kind: dict, name: str) -> str | None:
        d = kind["detectors"].get(name)
        if d is None or not d["n_scored"]:
            return None
        value = "n/a" if d["auc"] is None else f"{d['auc']:.2f}"
        return f"{value} ({d['n_fake_scored']}/{d['n_real_scored']})"

    lines = [
        "Raw AUC of each detector's own score (nothing fitted), with the items it scored "
        "(fake/real), on the wild scorecard (`benchmarks/results/detection.json`: all the "
        "items it scored, and the kinds its modality is meant for) and on the calibration "
        "set (`detection_calibration.json`). Fusion weight: `dfd/calibration.json` (a "
        "detector without one is evidence only or not yet calibrated).",
        "",
        "| detector | on by default | licence | trained on | authors' figure | fusion weight "
        "| wild, all | wild, its kinds | calibration set |",
        "|---|---|---|---|---|---:|---|---|---|",
    ]
    for d in DETECTORS.values():
        if d.name in OWN_RESULTS:
            own = OWN_RESULTS[d.name]
            where = f"see `benchmarks/results/{own}`" if own.endswith(".md") else own
            measured = [where, "—", "—"]
        else:
            kinds = [
                f"{k} {a}"
                for k in MODALITY_KINDS.get(d.modality or "", ())
                if (a := auc(wild["kinds"][k], d.name)) is not None
            ]
            measured = [
                auc(wild["kinds"]["all"], d.name) or "not scored",
                "; ".join(kinds) or "—",
                auc(cal["kinds"]["all"], d.name) or "not scored",
            ]
            if d.fetched_by_user and measured[0] == "not scored":
                measured = ["not measured: the weights are the user's to fetch", "—", "—"]
        weight = f"{weights[d.name]:.2f}" if d.name in weights else "—"
        lines.append(
            f"| `{d.name}` | {'yes' if d.default_on else 'no'} | {d.licence} | {d.trained_on} "
            f"| {d.published} | {weight} | {' | '.join(measured)} |"
        )
    return "\n".join(lines) + "\n\n(`dfd/detectors.py`, `benchmarks/results/detection*.json`)\n"


def blocks() -> dict[str, str]:
    return {
        "settings-table": settings_table(),
        "benchmarks": benchmark_block(),
        "scorecard": scorecard_block(),
        "calibration": calibration_block(),
        "detectors": detectors_block(),
        "detector-cost": detector_cost_block(),
    }


def render(readme: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(
                f"README.md: expected the markers <!-- {name}:start/end -->, found none"
            )
        readme = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Update the README's generated blocks.")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    updated = render(current, blocks())
    if args.check:
        if updated != current:
            print("README.md is out of date: run python -m benchmarks.report", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
