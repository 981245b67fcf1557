"""The soak benchmark's pure parts: sampling one process, labelling the stack's processes,
and the growth from after warm-up to the end."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from benchmarks.bench_soak import (
    HORSE,
    descendants,
    growth,
    label_processes,
    sample_process,
    verdict,
)

pytestmark = pytest.mark.unit


def test_sample_process_reads_rss_fds_and_shm_files_of_a_live_process() -> None:
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="dfd-soak-test-") as shm:
        before = sample_process(os.getpid())
        assert before is not None
        assert before.rss_bytes > 10 * 2**20 and before.fds >= 3
        assert shm.name in before.shm_files  # open, so counted
        with open(shm.name, "rb"):
            after = sample_process(os.getpid())
        assert after is not None and after.fds == before.fds + 1


def test_sample_process_of_a_gone_process_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert sample_process(child.pid) is None


def test_descendants_finds_a_grandchild() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '5'])"]
    )
    try:
        for _ in range(100):
            tree = descendants(os.getpid())
            if any(ppid == child.pid for ppid in tree.values()):
                break
            subprocess.run(["sleep", "0.05"])
        assert tree[child.pid] == os.getpid()
        assert any(ppid == child.pid for ppid in tree.values())
    finally:
        child.kill()
        child.wait()


def test_labels_name_roles_horses_and_stubs() -> None:
    roles = {10: "worker-1", 20: "triton"}
    tree = {10: 1, 11: 10, 20: 1, 21: 20, 99: 1}
    labels = label_processes(roles, tree, {11: "rq:horse", 21: "stub"})
    assert labels == {10: "worker-1", 11: HORSE, 20: "triton", 21: "triton/stub[21]"}


def _row(t: float, rss: float, fds: int) -> dict:
    proc = {"pid": 1, "rss_mb": rss, "fds": fds, "shm_files": 2}
    return {"t_s": t, "processes": {"worker-1": proc}, "shm_mb": 8.0, "shm_files": 2}


def test_growth_compares_the_medians_after_warm_up_and_at_the_end() -> None:
    # Warm-up to 100 s grows 300 MB; after it one outlier sample; the end is 10 MB higher.
    series = [_row(t, 100 + 3 * t, 7) for t in range(0, 100, 10)]
    series += [_row(t, 400 + (500 if t == 120 else 0), 7) for t in range(100, 170, 10)]
    series += [_row(t, 410, 9) for t in range(170, 400, 10)]
    g = growth(series, warmup_s=100, window_s=60)
    assert g["worker-1"]["rss_mb"] == {"after_warmup": 400, "end": 410, "growth": 10}
    assert g["worker-1"]["fds"]["growth"] == 2
    assert g["/dev/shm (stack)"]["shm_files"]["growth"] == 0
    assert verdict(g) == "flat (within the targets)"


def test_verdict_names_memory_fd_and_shm_growth() -> None:
    series = [_row(t, 100, 7) for t in range(0, 100, 10)]
    series += [_row(t, 200, 12) for t in range(100, 200, 10)]
    for row in series[-4:]:
        row["shm_files"] = 3
    g = growth(series, warmup_s=0, window_s=50)
    assert verdict(g) == "growth: worker-1 RSS +100 MB; worker-1 fds +5; /dev/shm files +1"
