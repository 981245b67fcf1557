"""The alert rules, checked and unit-tested by the real ``promtool`` (Debian's prometheus).

``promtool test rules`` runs ``tests/deploy/prometheus/rules_test.yml`` against
``helm/dfd/files/prometheus-rules.yml`` (the one rules file that compose mounts and the
chart ships as a PrometheusRule); this module also checks that every alert is tested both
firing and quiet, and that the design's four alerts keep their thresholds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "dfd" / "files" / "prometheus-rules.yml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "rules_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run scripts/install-system-deps.sh (Debian: prometheus)")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=60, cwd=RULE_TESTS.parent
    )


def alerts() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"] if "alert" in r}


def test_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_rule_passes_its_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alerts()) == firing == quiet


def test_the_designs_four_alerts_keep_their_thresholds() -> None:
    rules = alerts()
    assert "> 100" in rules["DfdQueueBacklog"]["expr"] and rules["DfdQueueBacklog"]["for"] == "5m"
    assert "> 0.10" in rules["DfdWorkerCrashRate"]["expr"]
    assert "> 120" in rules["DfdInferenceSlow"]["expr"]
    assert "for" not in rules["DfdRedisUnreachable"]  # any failure, at once
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
