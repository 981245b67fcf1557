"""Soak: many small jobs through the whole local stack, every process's footprint over time.

    .venv/bin/python -m benchmarks.bench_soak [--jobs 200] [--minutes 20] [--interval-s 10]

Starts the embedded stack as ``dfd serve`` does (local Redis, local Triton on the ``cpu``
repository, an exporter, one ``dfd worker`` and the gateway; :class:`cli.stack.Stack`) and
drives it through the HTTP API only: ``--jobs`` jobs spread evenly over ``--minutes``,
cycling through the GRID clips and the audio files of ``$DFD_MEDIA_DIR`` (uploads) and,
every tenth job, a GRID clip fetched by URL from a loopback HTTP server.

Every ``--interval-s`` it samples each process of the stack (everything this process
started, found through ``/proc``: Redis, Triton and its python-backend stubs, the
exporter, the worker, its work horse when one runs, the gateway): resident memory, open
file descriptors, and the ``/dev/shm`` files the process has mapped or open. Growth is
the median of the samples in the minute after warm-up (the first ``--warmup-fraction``
of the run) against the median of the last minute's samples, per process; a work horse
lives for one job, so its figure is the largest horse of each window, not one process.

Writes ``benchmarks/results/soak_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.bench_e2e import BENCH_ENV
from benchmarks.folder_server import serve_folder
from benchmarks.machine import describe, load_average, write_results
from cli.demo import JobClient
from cli.stack import Stack
from dfd.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHM = Path("/dev/shm")
MIB = 1024 * 1024
WINDOW_S = 60.0
"""Width of the after-warm-up and end windows whose medians are compared."""
HORSE = "work horse"
TARGET_RSS_GROWTH_MB = 50.0
FD_TOLERANCE = 2
"""Open connections come and go (a client's keep-alive, a poll in flight): more is a leak."""


@dataclass(frozen=True)
class ProcessSample:
    """One process at one moment."""

    pid: int
    ppid: int
    name: str
    rss_bytes: int
    fds: int
    shm_files: frozenset[str]


def _ppid_and_name(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces, so split around the last ")".
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return int(stat.rsplit(")", 1)[1].split()[1]), name


def sample_process(pid: int, proc: Path = Path("/proc")) -> ProcessSample | None:
    """RSS, open descriptors and ``/dev/shm`` files of ``pid``; ``None`` once it is gone."""
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
        status = (base / "status").read_text()
        fd_names = os.listdir(base / "fd")
        maps = (base / "maps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    shm = {line.split(None, 5)[5] for line in maps.splitlines() if " /dev/shm/" in line}
    for fd in fd_names:
        try:
            target = os.readlink(base / "fd" / fd)
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith("/dev/shm/"):
            shm.add(target)
    return ProcessSample(
        pid=pid,
        ppid=int(stat.rsplit(")", 1)[1].split()[1]),
        name=stat[stat.index("(") + 1 : stat.rindex(")")],
        rss_bytes=rss_kb * 1024,
        fds=len(fd_names),
        shm_files=frozenset(s.removesuffix(" (deleted)") for s in shm),
    )


def descendants(root: int, proc: Path = Path("/proc")) -> dict[int, int]:
    """Every live descendant of ``root``, as pid -> parent pid."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (found := _ppid_and_name(int(entry.name))):
            parents[int(entry.name)] = found[0]
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in out:
                out[pid] = ppid
                frontier.append(pid)
    return out


def shm_bytes(paths: Sequence[str] | frozenset[str]) -> int:
    """Bytes the ``/dev/shm`` files take (their allocated blocks; gone files count 0)."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_blocks * 512
    return total


def label_processes(
    roles: dict[int, str], tree: dict[int, int], names: dict[int, str]
) -> dict[int, str]:
    """A stable label for each process: its role, or its nearest role ancestor's with its name.

    A worker's child is its work horse (one per job, so they share one label); a Triton
    child is a python-backend stub, labelled with its process name.
    """
    labels: dict[int, str] = {}
    for pid in tree:
        if pid in roles:
            labels[pid] = roles[pid]
            continue
        ancestor = tree.get(pid)
        while ancestor is not None and ancestor not in roles:
            ancestor = tree.get(ancestor)
        if ancestor is None:
            continue  # not a stack process (the benchmark's own helpers)
        role = roles[ancestor]
        if role.startswith("worker"):
            labels[pid] = HORSE
        else:
            labels[pid] = f"{role}/{names.get(pid, '?')}[{pid}]"
    return labels


def take_sample(stack: Stack, started: float) -> dict:
    """One row of the time series: every stack process by label, and the stack's /dev/shm."""
    roles = {pid: name for name, pid in stack.group.pids().items()}
    if stack.redis is not None and stack.redis.pid is not None:
        roles[stack.redis.pid] = "redis"
    if stack.triton is not None:
        roles[stack.triton.pid] = "triton"
    tree = descendants(os.getpid())
    samples = {pid: s for pid in tree if (s := sample_process(pid)) is not None}
    labels = label_processes(roles, tree, {pid: s.name for pid, s in samples.items()})
    processes: dict[str, dict] = {}
    shm: set[str] = set()
    for pid, s in samples.items():
        label = labels.get(pid)
        if label is None:
            continue
        shm |= s.shm_files
        row = {"pid": pid, "rss_mb": s.rss_bytes / MIB, "fds": s.fds, "shm_files": len(s.shm_files)}
        if label == HORSE and processes.get(label, {"rss_mb": -1})["rss_mb"] >= row["rss_mb"]:
            continue  # the largest horse (only one runs with one worker)
        processes[label] = row
    return {
        "t_s": round(time.monotonic() - started, 1),
        "processes": processes,
        "shm_mb": shm_bytes(frozenset(shm)) / MIB,
        "shm_files": len(shm),
    }


def window_median(
    series: list[dict], key: str, metric: str, lo_s: float, hi_s: float
) -> float | None:
    values = [
        s["processes"][key][metric]
        for s in series
        if lo_s <= s["t_s"] <= hi_s and key in s["processes"]
    ]
    return statistics.median(values) if values else None


def growth(series: list[dict], warmup_s: float, window_s: float = WINDOW_S) -> dict[str, dict]:
    """Per process label: the median RSS and fds of the window after warm-up and of the last
    window, and their difference. A process absent from either window has no growth figure."""
    if not series:
        return {}
    end = series[-1]["t_s"]
    after = (warmup_s, warmup_s + window_s)
    last = (max(end - window_s, warmup_s), end)
    labels = sorted({k for s in series for k in s["processes"]})
    out: dict[str, dict] = {}
    for label in labels:
        row: dict = {}
        for metric in ("rss_mb", "fds", "shm_files"):
            a = window_median(series, label, metric, *after)
            b = window_median(series, label, metric, *last)
            row[metric] = {
                "after_warmup": a,
                "end": b,
                "growth": None if a is None or b is None else b - a,
            }
        out[label] = row
    stack_shm = {}
    for metric in ("shm_mb", "shm_files"):
        a_vals = [s[metric] for s in series if after[0] <= s["t_s"] <= after[1]]
        b_vals = [s[metric] for s in series if last[0] <= s["t_s"] <= last[1]]
        a = statistics.median(a_vals) if a_vals else None
        b = statistics.median(b_vals) if b_vals else None
        stack_shm[metric] = {
            "after_warmup": a,
            "end": b,
            "growth": None if a is None or b is None else b - a,
        }
    out["/dev/shm (stack)"] = stack_shm
    return out


def media_list(media_dir: Path) -> list[Path]:
    """The small real media the soak cycles through: GRID clips and audio files, mixed."""
    clips = sorted((media_dir / "grid").glob("*.mpg"))
    audio = sorted((media_dir / "asvspoof2019_la").rglob("*.flac"))
    if not clips:
        raise SystemExit(f"bench_soak: expected GRID clips in {media_dir / 'grid'}, found none")
    mixed: list[Path] = []
    for i, clip in enumerate(clips):
        mixed.append(clip)
        if audio:
            mixed.append(audio[i % len(audio)])
    return mixed


def run_job(client: JobClient, source: str, kind: str) -> dict:
    started = time.perf_counter()
    try:
        job_id = client.submit(source)
        view = client.wait(job_id, timeout_s=1800, poll_s=1.0)
    except Exception as exc:  # recorded: a soak counts what went wrong, it does not stop
        return {
            "kind": kind,
            "status": "error",
            "error": str(exc),
            "wall_s": time.perf_counter() - started,
        }
    return {
        "kind": kind,
        "status": view["status"],
        "error": view.get("error"),
        "wall_s": time.perf_counter() - started,
    }


def soak(args: argparse.Namespace, log_dir: Path) -> dict:
    media = media_list(args.media_dir)
    interval = args.minutes * 60 / args.jobs
    settings = Settings()
    series: list[dict] = []
    results: list[dict] = []
    with (
        serve_folder(args.media_dir / "grid", quiet=True) as base,
        (log_dir / "stack.log").open("wb") as log,
        Stack(
            settings, port=0, workers=1, child_output=log, log=lambda s: None, exporter_port=0
        ) as stack,
    ):
        endpoints = stack.endpoints
        assert endpoints is not None
        started = time.monotonic()
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                series.append(take_sample(stack, started))
                stop.wait(args.interval_s)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        with (
            httpx.Client(base_url=endpoints.gateway, timeout=120) as http,
            ThreadPoolExecutor(32) as pool,
        ):
            client = JobClient(http)
            futures = []
            for i in range(args.jobs):
                time.sleep(max(0.0, started + i * interval - time.monotonic()))
                if i % 10 == 9:
                    clip = media[(i // 2 * 2) % len(media)]
                    source, kind = f"{base}/{clip.name}", "url"
                else:
                    path = media[i % len(media)]
                    source, kind = str(path), "audio" if path.suffix == ".flac" else "video"
                futures.append(pool.submit(run_job, client, source, kind))
            results = [f.result() for f in futures]
        time.sleep(args.interval_s)  # one more sample with everything idle
        stop.set()
        thread.join()
        series.append(take_sample(stack, started))
    return {"series": series, "jobs": results, "job_interval_s": interval}


def markdown(report: dict) -> str:
    m = report["machine"]
    g = report["growth"]
    jobs = report["jobs"]
    by_status: dict[str, int] = {}
    for j in jobs:
        by_status[j["status"]] = by_status.get(j["status"], 0) + 1
    walls = sorted(j["wall_s"] for j in jobs)
    lines = [
        f"# Soak: {len(jobs)} small jobs over {report['minutes']:g} minutes, one worker",
        "",
        f"Run {report['when']} with `{report['command']}`. Machine: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}. Load average (1, 5, 15 min) at start {report['loadavg']['start']}, "
        f"at end {report['loadavg']['end']} (a shared machine, loaded by other work). Jobs: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(by_status.items()))}; kinds "
        f"{report['kinds']}; one submitted every {report['job_interval_s']:.1f} s; per-job wall "
        f"time p50 {statistics.median(walls):.1f} s, max {walls[-1]:.1f} s. Warm-up: the first "
        f"{report['warmup_s']:.0f} s; growth compares the median of the minute after it with the "
        "median of the last minute (target: RSS under 50 MB, no fd or /dev/shm growth).",
        "",
        "## Growth per process, after warm-up to the end",
        "",
        "| process | RSS after warm-up MB | RSS end MB | RSS growth MB | fds after | fds end | fd growth | /dev/shm files growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in g.items():
        if label.startswith("/dev/shm"):
            continue
        r, f, s = row["rss_mb"], row["fds"], row["shm_files"]

        def v(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1f}"

        def d(x: float | None) -> str:
            return "n/a" if x is None else f"{x:+.1f}"

        lines.append(
            f"| {label} | {v(r['after_warmup'])} | {v(r['end'])} | {d(r['growth'])} | "
            f"{v(f['after_warmup'])} | {v(f['end'])} | {d(f['growth'])} | {d(s['growth'])} |"
        )
    shm = g["/dev/shm (stack)"]
    lines += [
        "",
        f"/dev/shm files the stack holds: {shm['shm_files']['after_warmup']} after warm-up, "
        f"{shm['shm_files']['end']} at the end; {shm['shm_mb']['after_warmup']:.1f} MB and "
        f"{shm['shm_mb']['end']:.1f} MB. Verdict: {report['verdict']}.",
        "",
        "## Time series (every few samples)",
        "",
    ]
    series = report["series"]
    keys = [k for k in g if not k.startswith("/dev/shm") and k != HORSE and "/" not in k]
    lines.append(
        "| t s | "
        + " | ".join(f"{k} RSS MB / fds" for k in keys)
        + " | horse RSS MB | /dev/shm MB |"
    )
    lines.append("|---:|" + "---:|" * (len(keys) + 2))
    step = max(1, len(series) // 12)
    picked = series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
    for s in picked:
        cells = []
        for k in keys:
            p = s["processes"].get(k)
            cells.append("-" if p is None else f"{p['rss_mb']:.0f} / {p['fds']}")
        horse = s["processes"].get(HORSE)
        horse_mb = "-" if horse is None else f"{horse['rss_mb']:.0f}"
        lines.append(
            f"| {s['t_s']:.0f} | " + " | ".join(cells) + f" | {horse_mb} | {s['shm_mb']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def verdict(g: dict[str, dict]) -> str:
    problems = []
    for label, row in g.items():
        if label.startswith("/dev/shm"):
            if (row["shm_files"]["growth"] or 0) > 0:
                problems.append(f"/dev/shm files +{row['shm_files']['growth']:g}")
            continue
        if (row["rss_mb"]["growth"] or 0) >= TARGET_RSS_GROWTH_MB:
            problems.append(f"{label} RSS +{row['rss_mb']['growth']:.0f} MB")
        if label != HORSE and (row["fds"]["growth"] or 0) > FD_TOLERANCE:
            problems.append(f"{label} fds +{row['fds']['growth']:g}")
    return "flat (within the targets)" if not problems else "growth: " + "; ".join(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup-fraction", type=float, default=0.15)
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(os.environ.get("DFD_MEDIA_DIR", "/work/shared/media")),
    )
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()
    os.environ.update(BENCH_ENV)
    os.environ.setdefault("DFD_FETCH_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="dfd-bench-soak-") as tmp:
        run = soak(args, Path(tmp))
    warmup_s = args.minutes * 60 * args.warmup_fraction
    g = growth(run["series"], warmup_s)
    kinds: dict[str, int] = {}
    for j in run["jobs"]:
        kinds[j["kind"]] = kinds.get(j["kind"], 0) + 1
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.bench_soak " + " ".join(sys.argv[1:]),
        "machine": describe(),
        "loadavg": {"start": load_before, "end": load_average()},
        "minutes": args.minutes,
        "warmup_s": warmup_s,
        "job_interval_s": run["job_interval_s"],
        "kinds": kinds,
        "growth": g,
        "verdict": verdict(g),
        "jobs": run["jobs"],
        "series": run["series"],
    }
    write_results(RESULTS, f"soak_{args.tag}", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
