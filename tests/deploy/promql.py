"""The metric names a PromQL expression reads, for checking dashboards and rules against
what the real processes serve (no PromQL parser is at hand; promtool checks the syntax)."""

from __future__ import annotations

import re

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan", "Inf", "NaN"}
)


def metric_names(expr: str) -> set[str]:
    """Names of the series ``expr`` selects (functions, labels and keywords left out)."""
    text = expr.replace("$__rate_interval", "5m")
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings: label values, legends
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    # Grouping clauses go whole: `sum by (le) (x)` reads as the function call `sum (x)`.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", "", text)  # numbers, 1e6 too
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function (or an aggregation)
            continue
        if match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def served_names(families: dict[str, str]) -> set[str]:
    """Every series name a scrape offers, given its families' names and types."""
    names = set()
    for name, kind in families.items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names |= {f"{name}_total", f"{name}_created"}
    return names
