"""The SDK (``dfd.client``) and ``dfd submit`` against a real gateway (uvicorn), Redis and
worker; the waited-on jobs are test functions reporting progress (``tests.dispatcher.jobfuncs``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from dfd.client import ApiError, AsyncClient, Client, verify_webhook
from dfd.webhook_signature import headers as signed_headers
from dispatcher.store import LocalStore
from tests.dispatcher.test_worker import FAST, enqueue
from tests.fixtures.redis import ROOT, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = {**FAST, "events_poll_interval_s": 0.05, "job_retries": 0}


@pytest.mark.unit
def test_verify_webhook_accepts_only_the_signed_body() -> None:
    body = b'{"jobId":"x","status":"completed"}'
    headers = signed_headers(b"s" * 32, body)
    assert verify_webhook("s" * 32, headers, body)
    assert verify_webhook("s" * 32, {k.upper(): v for k, v in headers.items()}, body)
    assert not verify_webhook("s" * 32, headers, body[:-1] + b" ")
    assert not verify_webhook("t" * 32, headers, body)
    stale = signed_headers(b"s" * 32, body, now=1_000_000)
    assert not verify_webhook("s" * 32, stale, body)  # a replay from long ago


@pytest.mark.parametrize("use_events", [True, False])
def test_wait_reports_progress_then_the_final_view(
    gateway_server, redis, worker_process, use_events
) -> None:
    server = gateway_server(**EVENTS)
    job_id = enqueue(server.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
    worker_process(server.settings)
    seen = []
    with Client(server.url) as client:
        view = client.wait(job_id, on_progress=seen.append, poll_s=0.1, use_events=use_events)
    assert view.status.value == "completed" and view.result is not None
    values = [v.progress for v in seen if v.progress is not None]
    assert len(set(values)) >= 2 and values == sorted(values)


def test_async_client_waits_and_cancels(gateway_server, redis, worker_process) -> None:
    server = gateway_server(**EVENTS)
    running = enqueue(server.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
    waiting = enqueue(server.settings, redis, "tests.dispatcher.jobfuncs.slow_job")

    async def scenario() -> tuple:
        async with AsyncClient(server.url) as client:
            cancelled = await client.cancel(waiting)
            seen: list = []
            done = await client.wait(running, on_progress=seen.append)
            return cancelled, done, seen

    worker_process(server.settings)
    cancelled, done, seen = asyncio.run(scenario())
    assert cancelled.status.value == "cancelled"
    assert done.status.value == "completed" and seen


def test_refusals_are_api_errors_and_evidence_is_fetched(gateway_server, small_videos) -> None:
    server = gateway_server(**EVENTS)
    store = LocalStore(server.settings)
    key = store.put("0123456789abcdef0123456789abcdef", "thumb.jpg", b"\xff\xd8jpeg", "image/jpeg")
    with Client(server.url) as client:
        with pytest.raises(ApiError) as refused:
            client.submit_url("http://10.0.0.1/a.mp4")
        assert refused.value.status == 422 and refused.value.type == "rejected-url"
        job = client.submit_file(small_videos["mp4"])
        assert job.status.value == "waiting"
        assert client.cancel(job.jobId).status.value == "cancelled"
        assert client.evidence(store.url(key).removeprefix(server.settings.public_base_url)) == (
            b"\xff\xd8jpeg"
        )


def test_dfd_submit_prints_progress_and_the_final_view(
    gateway_server, redis, worker_process, small_videos
) -> None:
    """No Triton here: the job fails at its first step, and the command says so (exit 1)."""
    server = gateway_server(**EVENTS)
    worker_process(server.settings)
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "submit", str(small_videos["mp4"]), "--api", server.url],
        cwd=ROOT,
        env=settings_env(server.settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "dfd submit: job " in done.stderr
    view = json.loads(done.stdout)
    assert view["status"] == "failed" and view["error"]["type"] == "configuration"


def test_a_real_video_through_the_real_pipeline_with_events_and_a_webhook(
    gateway_server, redis, worker_process, webhook_receiver, triton, weights_dir, media_dir
) -> None:
    """Gateway (uvicorn) -> Redis -> worker -> real pipeline on the real Triton: progress
    advances within the stages, the webhook arrives signed, evidence links work and do
    not name the job."""
    secret = "w" * 32
    server = gateway_server(
        **EVENTS,
        triton_url=triton.grpc_url,
        weights_dir=weights_dir,
        webhook_secret=secret,
        fetch_allowed_networks=["127.0.0.1/32"],
    )
    worker_process(server.settings)
    clip = media_dir / "grid" / "id2_vcd_swwp2s.mpg"
    seen = []
    with Client(server.url) as client:
        job = client.submit_file(clip, callback_url=webhook_receiver.url)
        view = client.wait(job.jobId, on_progress=seen.append, timeout_s=300)
        assert view.status.value == "completed", view
        assert view.result is not None
        thumb = view.result.evidence.thumbnails[0]
        assert job.jobId not in thumb
        assert (
            client.evidence(thumb.removeprefix(server.settings.public_base_url))[:2] == b"\xff\xd8"
        )
    active = [v for v in seen if v.status.value == "active" and v.progress is not None]
    values = [v.progress for v in active]
    assert values == sorted(values) and len(set(values)) >= 4, values
    assert len({v.stage for v in active}) >= 3
    (delivery,) = webhook_receiver.wait(1, timeout_s=60)
    assert verify_webhook(secret, delivery.headers, delivery.body)
    assert json.loads(delivery.body)["result"]["label"] == view.result.label.value


def test_a_batch_of_files_through_both_clients(gateway_server, small_videos, tmp_path) -> None:
    """One request, one job per file, through the real gateway (uvicorn); a file the
    gateway refuses on its own comes back in ``refused``."""
    server = gateway_server(**EVENTS)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    paths = [small_videos["mp4"], notes, small_videos["webm"]]
    with Client(server.url) as client:
        batch = client.submit_files(paths, priority="low")
        assert len(batch.jobIds) == 2
        assert [(r["index"], r["filename"], r["status"]) for r in batch.refused] == [
            (1, "notes.txt", 415)
        ]
        view = client.batch(batch.batchId)
        assert view["counts"] == {"waiting": 2}
        assert {j["jobId"] for j in view["jobs"]} == set(batch.jobIds)

    async def again() -> object:
        async with AsyncClient(server.url) as client:
            return await client.submit_files([small_videos["mkv"]])

    other = asyncio.run(again())
    assert len(other.jobIds) == 1 and other.refused == ()
