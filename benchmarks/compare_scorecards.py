"""Two scorecard runs on the same labelled folder side by side: two model versions, two
checkpoints, or before and after a change.

    python -m benchmarks.bench_detection FOLDER --tag a                # version A serving
    DFD_VISUAL_MODEL=meso4_f2f python -m benchmarks.bench_detection FOLDER --tag b
    python -m benchmarks.compare_scorecards \\
        benchmarks/results/detection_scores_a.json benchmarks/results/detection_scores_b.json

Per kind and detector: AUC, EER and TPR at 5 % FPR of the raw scores in each run and the
change; the verdict counts of each run (real items called ``manipulated``, fakes called
``authentic``, abstentions); and every item whose verdict changed. Both files must list
the same items (the same folder's ``labels.csv``). Writes ``--out`` (Markdown) or prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.bench_detection import build_report


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _delta(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{b - a:+.2f}"


def compare(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    """The Markdown comparison of two scores documents (see the module docstring)."""
    paths_a = [r["path"] for r in a["items"]]
    paths_b = [r["path"] for r in b["items"]]
    if sorted(paths_a) != sorted(paths_b):
        only = sorted(set(paths_a) ^ set(paths_b))
        raise ValueError(
            f"compare: expected the same items in both runs, {len(only)} differ "
            f"(e.g. {', '.join(only[:3])})"
        )
    ra, rb = build_report(a["items"]), build_report(b["items"])
    lines = [
        f"# Scorecard comparison: {a['folder']}",
        "",
        f"A: `{names[0]}` (models: "
        + ", ".join(f"{k} `{v}`" for k, v in sorted(a.get("models", {}).items()))
        + f")  \nB: `{names[1]}` (models: "
        + ", ".join(f"{k} `{v}`" for k, v in sorted(b.get("models", {}).items()))
        + ")",
        "",
        "## Verdicts (as served by each run)",
        "",
        "| kind | real → manipulated A / B | fake → authentic A / B | abstain A / B |",
        "|---|---|---|---|",
    ]
    for kind in ra:
        ga, gb = ra[kind], rb[kind]
        lines.append(
            f"| {kind} | {ga['real_labelled_manipulated']} / {gb['real_labelled_manipulated']} "
            f"| {ga['fake_labelled_authentic']} / {gb['fake_labelled_authentic']} "
            f"| {ga['abstained']} / {gb['abstained']} |"
        )
    lines += [
        "",
        "## Detectors (raw scores)",
        "",
        "| kind | detector | AUC A | AUC B | change | EER A | EER B | TPR@5%FPR A | TPR@5%FPR B |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ra:
        detectors = sorted(set(ra[kind]["detectors"]) | set(rb[kind]["detectors"]))
        for d in [*detectors, "fused"]:
            ma = ra[kind]["detectors"].get(d) if d != "fused" else ra[kind]["fused"]
            mb = rb[kind]["detectors"].get(d) if d != "fused" else rb[kind]["fused"]
            ma, mb = ma or {}, mb or {}
            lines.append(
                f"| {kind} | {d} | {_f(ma.get('auc'))} | {_f(mb.get('auc'))} "
                f"| {_delta(ma.get('auc'), mb.get('auc'))} | {_f(ma.get('eer'))} "
                f"| {_f(mb.get('eer'))} | {_f(ma.get('tpr_at_5fpr'))} "
                f"| {_f(mb.get('tpr_at_5fpr'))} |"
            )
    by_b = {r["path"]: r for r in b["items"]}
    changed = [
        (r, by_b[r["path"]])
        for r in a["items"]
        if r.get("verdict") != by_b[r["path"]].get("verdict")
    ]
    lines += ["", f"## Items whose verdict changed: {len(changed)}", ""]
    if changed:
        lines += ["| item | label | A | B |", "|---|---|---|---|"]
        for ia, ib in changed:
            lines.append(
                f"| `{ia['path']}` | {ia['label']} | {ia.get('verdict') or 'not accepted'} "
                f"| {ib.get('verdict') or 'not accepted'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first run's detection_scores*.json")
    parser.add_argument("b", type=Path, help="the second run's")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print)")
    args = parser.parse_args(argv)
    try:
        text = compare(
            json.loads(args.a.read_text()),
            json.loads(args.b.read_text()),
            (args.a.name, args.b.name),
        )
    except (OSError, ValueError, KeyError) as exc:
        print(f"compare_scorecards: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
