"""S3 evidence links presigned afresh at every read of the job, through the gateway,
against a real S3 API server (moto over HTTP): a result whose worker-signed links died
long ago reads with links signed at that read, valid ``evidence_url_ttl_s``, that fetch
the objects."""

from __future__ import annotations

import time
import urllib.parse
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dfd.schemas import FaceTrack
from tests.gateway import jobstore

pytestmark = pytest.mark.integration

JPEG = b"\xff\xd8\xff\xe0" + b"s3 evidence" * 50


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_s3_links_are_presigned_at_each_read(gateway, s3_server, s3_settings, redis) -> None:
    from minio import Minio

    from dispatcher.store import S3Store

    overrides = s3_server.settings_overrides(s3_settings.s3_bucket)
    overrides["evidence_url_ttl_s"] = 600
    with gateway(**overrides) as client:
        settings = client.settings
        store = S3Store(settings)  # as the worker keeps evidence
        job = jobstore.enqueue(redis, settings)
        key = store.put(job.id, "thumb_00_f3.jpg", JPEG, "image/jpeg")
        # What the worker stored a day ago: a link dead for 23 hours.
        signed_then = datetime.now(UTC) - timedelta(days=1)
        stale = store.client.presigned_get_object(
            settings.s3_bucket, key, expires=timedelta(hours=1), request_date=signed_then
        )
        result = jobstore.result_with_evidence(settings, job.id, "http://testserver")
        result["evidence"]["thumbnails"] = [stale]
        result["evidence"]["heatmaps"] = [stale]
        result["evidence"]["tracks"] = [
            FaceTrack(track=0, frames=1, first_s=0.0, last_s=0.0, thumbnail=stale).model_dump()
        ]
        jobstore.finish(job, result)

        views = []
        for _ in range(2):
            before = datetime.now(UTC).replace(microsecond=0)
            response = client.get(f"/api/job/{job.id}")
            assert response.status_code == 200
            views.append((before, response.json()))
            time.sleep(1.1)  # SigV4 dates are in whole seconds

    reference = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    links = []
    for before, view in views:
        thumb = view["result"]["evidence"]["thumbnails"][0]
        assert view["result"]["evidence"]["heatmaps"] == [thumb]
        assert view["result"]["evidence"]["tracks"][0]["thumbnail"] == thumb
        q = _query(thumb)
        signed_at = datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert before <= signed_at <= before + timedelta(seconds=5), (before, signed_at)
        assert q["X-Amz-Expires"] == "600"
        # The signature is the one S3's own client makes for that moment.
        assert thumb == reference.presigned_get_object(
            s3_settings.s3_bucket, key, expires=timedelta(seconds=600), request_date=signed_at
        )
        fetched = httpx.get(thumb, timeout=10)
        assert fetched.status_code == 200 and fetched.content == JPEG
        links.append(thumb)
    assert links[0] != links[1] != stale  # each read signs anew


def test_a_local_store_gateway_leaves_s3_links_alone(gateway, redis) -> None:
    """Only the configured store's links are re-signed: a local-store gateway never
    rewrites an S3-looking URL."""
    with gateway() as client:
        job = jobstore.enqueue(redis, client.settings)
        result = jobstore.result_with_evidence(client.settings, job.id, "http://testserver")
        link = (
            "http://127.0.0.1:9/dfd-evidence/k/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Date=20250101T000000Z&X-Amz-Signature=" + "0" * 64
        )
        result["evidence"]["heatmaps"] = [link]
        jobstore.finish(job, result)
        view = client.get(f"/api/job/{job.id}").json()
    assert view["result"]["evidence"]["heatmaps"] == [link]
