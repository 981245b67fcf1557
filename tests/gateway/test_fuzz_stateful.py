"""Stateful fuzz: a hypothesis state machine drives the gateway (in-process app, its lifespan
started, real Redis) through sequences that reach real job ids, batches and signed evidence
links, as two tenants: create jobs (URL, upload, batch), read them, cancel them, read their
events, follow evidence links (intact and tampered), read the other tenant's jobs and ids that
were never issued.

Invariants after every step: no 5xx; every error is ``application/problem+json`` whose
``type`` is the stable one for its status; a cancelled job stays cancelled; a tampered link is
refused (403); another tenant's job or batch is 404, exactly as an unknown id. The evidence
links are made by the worker's own store (``dispatcher.store.LocalStore`` on the same data
folder), as a finished job's would be; no worker runs, so the jobs stay waiting until cancelled.

Bounded: ``RUNS`` sequences of at most ``STEPS`` steps, derandomized (a fixed seed, the same
sequences in CI every time), and the whole run under ``TIME_BOUND_S``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from dfd.jobid import new_job_id
from dfd.settings import Settings
from dispatcher.store import LocalStore, new_key

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fuzz]

RUNS = 20
STEPS = 30
TIME_BOUND_S = 60.0

KEYS = {"acme": "a" * 24, "bravo": "b" * 24}
TENANTS = {name: {"keys": [key]} for name, key in KEYS.items()}
NET = "93.184.216.0/24"  # exempt from the SSRF check; nothing is fetched (no worker runs)

# The stable problem type of each error status the gateway answers here.
PROBLEM_TYPES = {
    400: {"invalid-request"},
    403: {"forbidden"},
    404: {"not-found"},
    409: {"conflict"},
    415: {"unsupported-media"},
    422: {"invalid-request", "rejected-url"},
}
TYPE_PREFIX = "urn:dfd:problem:"


@dataclass
class Job:
    job_id: str
    tenant: str
    cancelled: bool = False


@dataclass
class Link:
    key: str
    exp: str
    sig: str
    data: bytes


@dataclass
class Figures:
    sequences: int = 0
    steps: int = 0
    answers: Counter[str] = field(default_factory=Counter)


FIGURES = Figures()


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def _other(tenant: str) -> str:
    return "bravo" if tenant == "acme" else "acme"


tenants = st.sampled_from(sorted(KEYS))
paths = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)


def _flip(text: str, at: int) -> str:
    """``text`` with one character changed (a hex or base64url digit stays one)."""
    i = at % len(text)
    c = text[i]
    return text[:i] + ("b" if c == "a" else "a") + text[i + 1 :]


class GatewaySequences(RuleBasedStateMachine):
    """One sequence: a fresh app on the test's settings; the model of what was created."""

    jobs = Bundle("jobs")
    batches = Bundle("batches")
    links = Bundle("links")

    def __init__(self) -> None:
        super().__init__()
        self.settings: Settings = SETTINGS["settings"]
        self.video: bytes = SETTINGS["video"]
        self.redis: Any = SETTINGS["redis"]
        self.redis.flushall()
        from gateway.app import create_app

        self.client = TestClient(create_app(self.settings), raise_server_exceptions=False)
        self.client.__enter__()
        self.store = LocalStore(self.settings)
        self.known: list[Job] = []
        FIGURES.sequences += 1

    def teardown(self) -> None:
        self.client.__exit__(None, None, None)

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.client.request(method, url, **kwargs)
        FIGURES.steps += 1
        status = response.status_code
        parts = urlparse(url).path.split("/")[1:]
        route = "/".join(parts[:2] if parts[0] == "api" else parts[:1])
        FIGURES.answers[f"{method} /{route} {status}"] += 1
        where = f"{method} {url} -> {status}: {response.text[:300]}"
        assert status < 500, where
        if status >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), where
            problem = response.json()
            assert problem["type"].startswith(TYPE_PREFIX), where
            assert problem["type"].removeprefix(TYPE_PREFIX) in PROBLEM_TYPES[status], where
            assert problem["status"] == status and problem["detail"], where
        return response

    # Creating jobs

    @rule(target=jobs, tenant=tenants, path=paths)
    def analyze(self, tenant: str, path: str) -> Job:
        body = {"url": f"http://93.184.216.34/{path}.mp4"}
        response = self.send("POST", "/api/analyze", json=body, headers=auth(tenant))
        assert response.status_code == 202, response.text
        return self._created(response.json()["jobId"], tenant)

    @rule(target=jobs, tenant=tenants)
    def upload(self, tenant: str) -> Job:
        files = {"file": ("clip.mp4", self.video)}
        response = self.send("POST", "/api/upload", files=files, headers=auth(tenant))
        assert response.status_code == 202, response.text
        return self._created(response.json()["jobId"], tenant)

    @rule(target=batches, tenant=tenants, names=st.lists(paths, min_size=1, max_size=3))
    def batch(self, tenant: str, names: list[str]) -> tuple[str, str, list[Job]]:
        items = [{"url": f"http://93.184.216.34/{n}.mp4"} for n in names]
        response = self.send("POST", "/api/batch", json={"items": items}, headers=auth(tenant))
        assert response.status_code == 202, response.text
        doc = response.json()
        made = [self._created(j["jobId"], tenant) for j in doc["jobs"]]
        assert len(made) == len(names)
        return doc["batchId"], tenant, made

    @rule(tenant=tenants, body=st.dictionaries(st.text(max_size=8), st.text(max_size=8)))
    def analyze_garbage(self, tenant: str, body: dict[str, str]) -> None:
        response = self.send("POST", "/api/analyze", json=body, headers=auth(tenant))
        assert response.status_code in (400, 422), response.text

    @rule(target=jobs, tenant=tenants, data=st.binary(max_size=64))
    def upload_garbage(self, tenant: str, data: bytes) -> Any:
        files = {"file": ("clip.mp4", data)}
        response = self.send("POST", "/api/upload", files=files, headers=auth(tenant))
        if response.status_code == 202:  # its magic bytes name a container (b"GIF87a")
            return self._created(response.json()["jobId"], tenant)
        assert response.status_code in (400, 415), response.text
        return multiple()

    def _created(self, job_id: str, tenant: str) -> Job:
        job = Job(job_id, tenant)
        self.known.append(job)
        return job

    # Reading and cancelling

    @rule(job=jobs, as_owner=st.booleans())
    def read(self, job: Job, as_owner: bool) -> None:
        reader = job.tenant if as_owner else _other(job.tenant)
        response = self.send("GET", f"/api/job/{job.job_id}", headers=auth(reader))
        if not as_owner:
            assert response.status_code == 404
            assert response.json()["detail"] == (
                f"job: expected a known job id, got {job.job_id!r} (unknown or expired)"
            )
            return
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["status"] == ("cancelled" if job.cancelled else "waiting"), view

    @rule(job=jobs, as_owner=st.booleans())
    def cancel(self, job: Job, as_owner: bool) -> None:
        reader = job.tenant if as_owner else _other(job.tenant)
        response = self.send("DELETE", f"/api/job/{job.job_id}", headers=auth(reader))
        if not as_owner:
            assert response.status_code == 404
        elif job.cancelled:
            assert response.status_code == 409, response.text
        else:
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "cancelled"
            job.cancelled = True

    @rule(job=jobs, as_owner=st.booleans())
    def events(self, job: Job, as_owner: bool) -> None:
        reader = job.tenant if as_owner else _other(job.tenant)
        response = self.send("GET", f"/api/job/{job.job_id}/events", headers=auth(reader))
        if not as_owner:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        if job.cancelled:  # a final state: the stream ends with it
            assert "event: done" in response.text and '"status":"cancelled"' in response.text
        else:  # waiting: progress, then the stream's lifetime runs out
            assert '"status":"waiting"' in response.text, response.text

    @rule(batch=batches, as_owner=st.booleans())
    def read_batch(self, batch: tuple[str, str, list[Job]], as_owner: bool) -> None:
        batch_id, owner, made = batch
        reader = owner if as_owner else _other(owner)
        response = self.send("GET", f"/api/batch/{batch_id}", headers=auth(reader))
        if not as_owner:
            assert response.status_code == 404
            return
        assert response.status_code == 200, response.text
        views = {v["jobId"]: v["status"] for v in response.json()["jobs"]}
        assert views == {j.job_id: "cancelled" if j.cancelled else "waiting" for j in made}

    @rule(tenant=tenants, job_id=st.one_of(st.builds(new_job_id), paths))
    def read_unknown(self, tenant: str, job_id: str) -> None:
        for method, url in (
            ("GET", f"/api/job/{job_id}"),
            ("DELETE", f"/api/job/{job_id}"),
            ("GET", f"/api/job/{job_id}/events"),
            ("GET", f"/api/batch/{job_id}"),
        ):
            assert self.send(method, url, headers=auth(tenant)).status_code == 404

    # Evidence links

    @rule(target=links, job=jobs, data=st.binary(min_size=1, max_size=256))
    def evidence(self, job: Job, data: bytes) -> Link:
        key = self.store.put(job.job_id, "frame.jpg", data, "image/jpeg")
        query = parse_qs(urlparse(self.store.url(key)).query)
        return Link(key, query["exp"][0], query["sig"][0], data)

    @rule(link=links)
    def follow(self, link: Link) -> None:
        response = self.send("GET", f"/evidence/{link.key}?exp={link.exp}&sig={link.sig}")
        assert response.status_code == 200, response.text
        assert response.content == link.data

    @rule(link=links, at=st.integers(min_value=0), part=st.sampled_from(["sig", "exp", "key"]))
    def follow_tampered(self, link: Link, at: int, part: str) -> None:
        key, exp, sig = link.key, link.exp, link.sig
        if part == "sig":
            sig = _flip(sig, at)
        elif part == "exp":
            exp = str(int(exp) + 1 + at % 1000)
        else:  # one file's signature on another well-formed key of the same job
            key = new_key(key.split("/")[0], f"other-{at % 10}.jpg", "image/jpeg")
        response = self.send("GET", f"/evidence/{key}?exp={exp}&sig={sig}")
        assert response.status_code == 403, response.text

    @rule(link=consumes(links))
    def job_deleted_evidence(self, link: Link) -> None:
        Path(self.settings.evidence_dir, link.key).unlink()
        response = self.send("GET", f"/evidence/{link.key}?exp={link.exp}&sig={link.sig}")
        assert response.status_code == 404

    @invariant()
    def cancelled_jobs_stay_cancelled_in_redis(self) -> None:
        for job in self.known:
            if job.cancelled:
                meta = json.loads(self.redis.hget(f"rq:job:{job.job_id}", "meta") or b"{}")
                assert self.redis.hget(f"rq:job:{job.job_id}", "status") == b"canceled", meta


SETTINGS: dict[str, Any] = {}


def test_sequences_of_real_jobs_batches_and_links_keep_the_invariants(
    make_settings, redis, tmp_path
) -> None:
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"]
        + ["testsrc=size=64x48:rate=5", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast"]
        + ["-pix_fmt", "yuv420p", str(clip)],
        check=True,
        timeout=60,
    )
    SETTINGS.update(
        settings=make_settings(
            tenants=TENANTS,
            fetch_allowed_networks=[NET],
            rate_limit_per_hour=0,
            rate_limit_analyze_per_hour=0,
            events_max_s=0.3,
            events_poll_interval_s=0.1,
        ),
        video=clip.read_bytes(),
        redis=redis,
    )
    machine = settings(
        max_examples=RUNS,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],  # no shrinking: the failing sequence is printed as it ran
        suppress_health_check=list(HealthCheck),
    )(GatewaySequences)
    started = time.monotonic()
    try:
        machine.TestCase().runTest()
    finally:
        SETTINGS.clear()
    elapsed = time.monotonic() - started
    print(
        f"stateful fuzz: {FIGURES.sequences} sequences, {FIGURES.steps} requests in "
        f"{elapsed:.1f} s: {dict(sorted(FIGURES.answers.items()))}"
    )
    assert elapsed < TIME_BOUND_S
    reached = {k.rsplit(" ", 1)[0] for k in FIGURES.answers}
    for needed in ("DELETE /api/job", "GET /api/batch", "GET /evidence"):
        assert needed in reached, f"the sequences never reached {needed}: {reached}"
