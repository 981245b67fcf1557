"""``POST /api/batch`` and ``GET /api/batch/{id}`` with a real Redis and a real worker.

The worker has no Triton here, so each job fails at once (``configuration``): what is
under test is the batch's mechanics, its counts and its one webhook when all have ended.
"""

from __future__ import annotations

import json

import pytest

from dfd.webhook_signature import verify
from tests.dispatcher.test_worker import FAST

pytestmark = pytest.mark.integration

SECRET = "w" * 32
NETS = ["93.184.216.0/24", "127.0.0.1/32"]
ITEMS = [{"url": f"http://93.184.216.34/{i}.mp4"} for i in range(3)]


@pytest.mark.slow
def test_a_batch_is_counted_and_gets_one_webhook_when_all_ended(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    import time

    settings = {**FAST, "job_retries": 0, "webhook_secret": SECRET, "fetch_allowed_networks": NETS}
    with gateway(**settings) as client:
        response = client.post(
            "/api/batch", json={"items": ITEMS, "callback_url": webhook_receiver.url}
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
        jobs = [j["jobId"] for j in response.json()["jobs"]]
        assert response.headers["location"] == f"/api/batch/{batch_id}"
        view = client.get(f"/api/batch/{batch_id}").json()
        assert view["counts"] == {"waiting": 3} and view["done"] is False
        assert client.get(f"/api/job/{jobs[0]}").json()["batchId"] == batch_id
        worker_process(client.settings)
        (delivery,) = webhook_receiver.wait(1)
        deadline = time.monotonic() + 20
        while (
            client.get(f"/api/batch/{batch_id}").json().get("webhook", {}).get("status")
            != "delivered"
        ):
            assert time.monotonic() < deadline, "the batch's webhook outcome was not recorded"
            time.sleep(0.1)
        final = client.get(f"/api/batch/{batch_id}").json()
    headers = delivery.headers
    assert verify(SECRET, headers["x-dfd-timestamp"], headers["x-dfd-signature"], delivery.body)
    body = json.loads(delivery.body)
    assert body["batchId"] == batch_id and body["counts"] == {"failed": 3}
    assert sorted(j["jobId"] for j in body["jobs"]) == sorted(jobs)
    assert final["done"] is True and final["counts"] == {"failed": 3}
    time.sleep(0.5)
    assert len(webhook_receiver.deliveries) == 1, "one webhook for the whole batch"


def test_one_refused_item_refuses_the_batch_and_names_it(gateway, redis) -> None:
    items = [ITEMS[0], {"url": "http://10.0.0.1/a.mp4"}, ITEMS[1]]
    with gateway(fetch_allowed_networks=NETS) as client:
        response = client.post("/api/batch", json={"items": items})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("items[1]: ")
    assert redis.llen("rq:queue:default") == 0


def test_batch_size_and_rate_limits_count_each_item(gateway, redis) -> None:
    with gateway(fetch_allowed_networks=NETS, max_batch_items=2) as client:
        response = client.post("/api/batch", json={"items": ITEMS})
        assert response.status_code == 400
        assert response.json()["detail"] == "batch: expected at most 2 items, got 3"
    with gateway(fetch_allowed_networks=NETS, rate_limit_analyze_per_hour=2) as client:
        assert client.post("/api/batch", json={"items": ITEMS}).status_code == 429
        assert client.post("/api/batch", json={"items": ITEMS[:2]}).status_code == 202
    assert redis.llen("rq:queue:default") == 2


def test_a_batch_is_visible_only_to_its_tenant(gateway, redis) -> None:
    a, b = "a" * 24, "b" * 24
    tenants = {"acme": {"keys": [a]}, "bravo": {"keys": [b]}}
    with gateway(fetch_allowed_networks=NETS, tenants=tenants) as client:
        response = client.post(
            "/api/batch", json={"items": ITEMS[:1]}, headers={"Authorization": f"Bearer {a}"}
        )
        batch_id = response.json()["batchId"]
        own = client.get(f"/api/batch/{batch_id}", headers={"Authorization": f"Bearer {a}"})
        other = client.get(f"/api/batch/{batch_id}", headers={"Authorization": f"Bearer {b}"})
    assert own.status_code == 200 and other.status_code == 404
