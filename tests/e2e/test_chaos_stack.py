"""Chaos through the whole stack: a real ``dfd serve`` (gateway, two workers, local Redis,
local Triton on the ``cpu`` repository, all under its supervisor) takes 30 uploads of
GRID clips and 5 URL jobs served from a loopback HTTP server, through the HTTP API only,
while work horses and workers are SIGKILLed (the supervisor restarts the workers), the
local Redis is restarted and the local Triton is SIGKILLed (the supervisor restarts
both), at seeded random moments.

Every job must end completed within ``BOUND_S`` (only the service's faults are
injected, and retries outnumber them), none lost or run to completion twice, none failed
with a fault of the user's; no upload or temp file is left; and of every answer the
client got (each submit and each poll is recorded), the only 5xx are 503s while Redis
was down.

Seeded by ``CHAOS_SEED`` (default 16: the plan of faults, their moments and the order
of the jobs; which job a kill finds depends on timing); prints the plan and its figures.
Redis is restarted with SIGTERM, not SIGKILL: with ``appendfsync everysec`` (the local
Redis's policy) a SIGKILL may by design lose the last second of writes, a job the gateway
has already answered 202 for.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest
from redis import Redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from benchmarks.folder_server import serve_folder
from tests.dispatcher.test_chaos import USER_FAULTS
from tests.fixtures.triton import triton_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
# Read at import, before the autouse fixture hides DFD_* from the tests: where the built
# cpu repository is (as the session's ``triton`` fixture finds it).
_TEST_DATA_DIR = os.environ.get("DFD_TEST_DATA_DIR")
UPLOADS = 30
URLS = 5
HORSE_KILLS = 3
WORKER_KILLS = 3
# Every job terminal within this, from the first submit (a GRID job takes a few seconds
# on 2 idle cores; ``CHAOS_STACK_BOUND_S`` raises it on a machine shared with other work).
BOUND_S = float(os.environ.get("CHAOS_STACK_BOUND_S", "300"))
READY_TIMEOUT_S = 180  # dfd serve up (Triton's start on a loaded machine)
FAULT_WAIT_S = 45  # longest wait for a victim (a running horse) before a fault counts as missed
REDIS_DOWN_SLACK_S = 3.0  # after Redis answers again, the gateway's pool reconnects
# Retries to outlast every fault that can hit one job (a Triton start-up included), and
# short backoffs so the suite stays within CI's time; the heartbeat and maintenance
# intervals are the defaults: a killed worker's job is resolved as in production.
ENV = {
    "DFD_JOB_RETRIES": "10",
    "DFD_RETRY_BACKOFF_S": "1",
    "DFD_FETCH_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    "DFD_RATE_LIMIT_PER_HOUR": "100000",
    "DFD_RATE_LIMIT_UPLOADS_PER_HOUR": "100000",
    "DFD_RATE_LIMIT_ANALYZE_PER_HOUR": "100000",
    "DFD_MAX_CONCURRENT_UPLOADS_PER_IP": "64",
    "DFD_LOG_JSON": "false",
}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    output: Path
    gateway: str
    redis: str

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def children(self, needle: str) -> list[psutil.Process]:
        """``dfd serve``'s own children whose command line holds ``needle``."""
        out = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if needle in " ".join(child.cmdline()):
                    out.append(child)
            except psutil.NoSuchProcess:
                pass
        return out

    def horses(self) -> list[psutil.Process]:
        """The workers' work horses: rq forks each into a process group of its own (the
        scheduler, the workers' other fork, stays in the worker's)."""
        out = []
        for worker in self.children("cli.main worker"):
            try:
                for child in worker.children():
                    if os.getpgid(child.pid) == child.pid:
                        out.append(child)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        return out


def _wait_for(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if match := re.search(pattern, text, re.M):
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"expected {pattern!r} within {timeout_s:.0f} s; output:\n{text[-4000:]}")


@pytest.fixture
def served(tmp_path: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """``dfd serve --workers 2`` on a fresh data folder, serving the built ``cpu`` repository."""
    from export.triton_repo import build_repository

    if _TEST_DATA_DIR:
        monkeypatch.setenv("DFD_TEST_DATA_DIR", _TEST_DATA_DIR)
    repository = build_repository(triton_settings(weights_dir), "cpu")  # current: reused
    data_dir = tmp_path / "data"
    (data_dir / "model_repository").mkdir(parents=True)
    (data_dir / "model_repository" / "cpu").symlink_to(repository, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    env.update(ENV, DFD_DATA_DIR=str(data_dir))
    output = tmp_path / "serve.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", "0", "--workers", "2"]
            + ["--no-exporter"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        gateway = _wait_for(output, r"^  gateway\s+(http://\S+)", process, READY_TIMEOUT_S)
        redis = _wait_for(output, r"^  redis\s+(redis://\S+)", process, 5)
        yield Served(process, output, gateway, redis)
    finally:
        if process.poll() is None:
            leftovers = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for p in leftovers:
                if p.is_running():
                    p.kill()


@dataclass
class Record:
    """What the client saw: every answer's status, when; the 202s and the last views."""

    answers: list[tuple[float, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str, status: int) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), what, status))


def _submit(http: httpx.Client, record: Record, source: str | Path, deadline: float) -> str:
    """Submit once accepted; a 503 (Redis down) is asked again, as a client would."""
    while True:
        if isinstance(source, Path):
            with source.open("rb") as fh:
                files = {"file": (source.name, fh, "application/octet-stream")}
                response = http.post("/api/upload", files=files)
        else:
            response = http.post("/api/analyze", json={"url": source})
        record.note("submit", response.status_code)
        if response.status_code == 202:
            return str(response.json()["jobId"])
        assert response.status_code == 503 and time.monotonic() < deadline, (
            response.status_code,
            response.text,
        )
        time.sleep(0.5)


def test_a_served_stack_loses_nothing_under_kills_and_restarts(
    served: Served, media_dir: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "16"))
    rng = random.Random(seed)
    clips = sorted((media_dir / "grid").glob("*.mpg"))
    assert len(clips) >= URLS
    sources: list[str | Path] = [clips[i % len(clips)] for i in range(UPLOADS)]
    plan = ["horse"] * HORSE_KILLS + ["worker"] * WORKER_KILLS + ["redis", "triton"]
    rng.shuffle(plan)
    gaps = [round(rng.uniform(2.0, 9.0), 1) for _ in plan]
    submit_gaps = [round(rng.uniform(0.1, 0.8), 2) for _ in range(UPLOADS + URLS)]
    print(f"\nchaos stack seed {seed}: plan {list(zip(plan, gaps, strict=True))}")

    record = Record()
    faults: list[tuple[float, str]] = []
    redis_down: list[tuple[float, float]] = []
    done = threading.Event()
    redis = Redis.from_url(served.redis, socket_timeout=2, socket_connect_timeout=2)

    def redis_answers() -> bool:
        try:
            return bool(redis.ping())
        except Exception:  # noqa: BLE001 (down or coming back)
            return False

    def until(check: Callable[[], T | None], timeout_s: float) -> T | None:
        """``check()``'s first truthy value within ``timeout_s``; ``None`` if none came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done.is_set():
            if value := check():
                return value
            time.sleep(0.05)
        return None

    def kill_horse() -> str | None:
        for _ in range(3):  # a horse may end its job between being found and killed
            horses = until(served.horses, FAULT_WAIT_S)
            if horses is None:
                return None
            victim = rng.choice(horses)
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
            return f"horse {victim.pid}"
        return None

    def kill_worker() -> str | None:
        # The supervisor restarts a killed worker: wait until both run again.
        workers = until(
            lambda: w if len(w := served.children("cli.main worker")) == 2 else None,
            FAULT_WAIT_S,
        )
        if workers is None:
            return None
        victim = rng.choice(workers)
        victim.send_signal(signal.SIGKILL)
        return f"worker {victim.pid}"

    def restart_redis() -> str | None:
        (server,) = served.children("valkey-server")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)  # the supervisor starts it again on its port
        server.wait(timeout=30)
        back = until(redis_answers, 60)
        redis_down.append((started, time.monotonic() + REDIS_DOWN_SLACK_S))
        return f"redis restart ({time.monotonic() - started:.1f} s down)" if back else None

    def kill_triton() -> str | None:
        (server,) = served.children("tritonserver")
        server.send_signal(signal.SIGKILL)
        return "triton kill"

    inject = {
        "horse": kill_horse,
        "worker": kill_worker,
        "redis": restart_redis,
        "triton": kill_triton,
    }

    def chaos() -> None:
        for fault, gap in zip(plan, gaps, strict=True):
            if done.wait(gap):
                return
            at = time.monotonic() - started
            what = inject[fault]()
            faults.append((at, what or f"{fault} missed"))

    job_ids: list[str] = []
    views: dict[str, dict] = {}
    attempts: Counter[str] = Counter()
    terminal_s: dict[str, float] = {}
    with (
        serve_folder(media_dir / "grid") as base,
        httpx.Client(base_url=served.gateway, timeout=60) as http,
    ):
        urls = [f"{base}/{clip.name}" for clip in rng.sample(clips, URLS)]
        sources += urls
        rng.shuffle(sources)
        started = time.monotonic()
        submitted_at: dict[str, float] = {}

        def submit_all() -> None:
            for source, gap in zip(sources, submit_gaps, strict=True):
                job_id = _submit(http, record, source, started + BOUND_S)
                submitted_at[job_id] = time.monotonic()
                job_ids.append(job_id)
                if done.wait(gap):
                    return

        threads = [threading.Thread(target=chaos), threading.Thread(target=submit_all)]
        for thread in threads:
            thread.start()
        try:
            while time.monotonic() - started < BOUND_S:
                pending = [j for j in list(job_ids) if j not in terminal_s]
                if not pending and len(job_ids) == len(sources):
                    break
                for job_id in pending:
                    response = http.get(f"/api/job/{job_id}")
                    record.note("poll", response.status_code)
                    if response.status_code != 200:
                        continue
                    view = views[job_id] = response.json()
                    attempts[job_id] = max(attempts[job_id], int(view.get("attempt") or 1))
                    if view["status"] in ("completed", "failed"):
                        terminal_s[job_id] = time.monotonic() - submitted_at[job_id]
                time.sleep(0.5)
            took = time.monotonic() - started
            # The faults all had their moment: the rest of the plan runs out, then stop.
            threads[0].join(timeout=max(0.0, BOUND_S - took))
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=60)

    # -- figures -------------------------------------------------------------------------
    statuses = Counter(status for _, _, status in record.answers)
    fives = [(t, what, s) for t, what, s in record.answers if s >= 500]
    times = sorted(terminal_s.values())
    print(f"faults ({len(faults)}): " + ", ".join(f"{t:.1f} s {what}" for t, what in faults))
    print(
        f"{len(job_ids)} jobs ({UPLOADS} uploads, {URLS} URLs), all terminal in {took:.1f} s; "
        f"{sum(attempts.values()) - len(attempts)} retries seen over "
        f"{sum(1 for a in attempts.values() if a > 1)} jobs (most attempts "
        f"{max(attempts.values(), default=0)}); time to terminal p50 "
        f"{statistics.median(times) if times else float('nan'):.1f} s, max "
        f"{times[-1] if times else float('nan'):.1f} s"
    )
    print(
        f"answers: {len(record.answers)} ({dict(sorted(statuses.items()))}); 5xx: {len(fives)} "
        f"({dict(Counter(f'{w} {s}' for _, w, s in fives))})"
    )

    # -- what must hold ------------------------------------------------------------------
    assert len(job_ids) == len(sources), "not every job was accepted"
    assert [what for _, what in faults if what.endswith("missed")] == [], faults
    assert len(faults) == len(plan), faults
    lost = [j for j in job_ids if j not in terminal_s]
    assert not lost, f"jobs not terminal after {BOUND_S} s: {[views.get(j) for j in lost]}"
    errors = {j: views[j].get("error") for j in job_ids if views[j]["status"] != "completed"}
    assert not [e for e in errors.values() if e and e.get("type") in USER_FAULTS], errors
    assert not errors, errors
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        successes = [r for r in job.results() if r.type == Result.Type.SUCCESSFUL]
        assert len(successes) == 1, (job_id, [r.type for r in job.results()])
    outside = [
        (round(t - started, 1), what, s)
        for t, what, s in fives
        if s != 503 or not any(a <= t <= b for a, b in redis_down)
    ]
    assert not outside, f"5xx other than 503 while Redis was down: {outside}"
    data_dir = served.output.parent / "data"

    def leftovers() -> list[Path]:
        return [
            p
            for sub in ("uploads", "tmp")
            if (data_dir / sub).exists()
            for p in (data_dir / sub).iterdir()
        ]

    deadline = time.monotonic() + 15
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == [], "uploads or temp files left behind"
    assert served.process.poll() is None, served.text()[-4000:]
    redis.close()
