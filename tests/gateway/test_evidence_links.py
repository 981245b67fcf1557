"""Every evidence link of a stored result is signed afresh when the job is read
(``gateway.evidence_links``), the face tracks' thumbnails included.

The link fields are found by walking ``dfd.schemas.Evidence`` (every string in it is a
link), so a link field added to the schema is filled with a dead link here and must come
back alive, or this fails.
"""

from __future__ import annotations

import time
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from dfd import signing
from dfd.schemas import Evidence, FaceTrack
from tests.gateway import jobstore

pytestmark = pytest.mark.integration

JPEG = b"\xff\xd8\xff\xe0" + b"track thumbnail" * 40


def link_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Paths of the string fields of ``model`` (``a``, ``a[]``, ``a[].b``), nested models
    walked."""
    paths = []
    for name, field in model.model_fields.items():
        path, kind = prefix + name, field.annotation
        while True:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            origin = typing.get_origin(kind)
            if origin in (typing.Union, types.UnionType) and len(args) == 1:
                kind = args[0]
            elif origin is list:
                path, kind = path + "[]", args[0]
            else:
                break
        if kind is str:
            paths.append(path)
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += link_fields(kind, path + ".")
    return paths


def values_at(doc: Any, path: str) -> list[Any]:
    """Every value at ``path`` in a JSON document."""
    head, _, rest = path.partition(".")
    many = head.endswith("[]")
    value = doc[head.removesuffix("[]")]
    items = value if many else [value]
    return [v for item in items for v in (values_at(item, rest) if rest else [item])]


def test_the_schema_link_fields_are_the_ones_known() -> None:
    """Each link field of the evidence; a new one is added here and so tested below."""
    assert sorted(link_fields(Evidence)) == [
        "heatmaps[]",
        "mouth_sync[]",
        "sbi_heatmaps[]",
        "spectrogram",
        "thumbnails[]",
        "timeline_chart",
        "tracks[].thumbnail",
    ]


def test_every_link_field_is_resigned_at_read(gateway, redis) -> None:
    with gateway(evidence_url_ttl_s=600) as client:
        settings = client.settings
        secret = signing.load_secret(settings)
        job = jobstore.enqueue(redis, settings)
        dead_at = int(time.time()) - 3600  # what the worker signed an hour and more ago
        stale: dict[str, str] = {}

        def dead_link(name: str) -> str:
            key = f"{job.id}/{'0' * 20}-{name}"
            path = signing.evidence_path(settings, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(JPEG)
            link = signing.signed_url("http://testserver", key, dead_at, secret)
            stale[link] = name
            return link

        result = jobstore.result_with_evidence(settings, job.id, "http://testserver")
        ev = result["evidence"]
        ev["thumbnails"] = [dead_link("thumb_00_f25.jpg"), dead_link("thumb_01_f50.jpg")]
        ev["heatmaps"] = [dead_link("heatmap_00_f25.jpg")]
        ev["timeline_chart"] = dead_link("timeline.png")
        ev["spectrogram"] = dead_link("spectrogram.png")
        ev["mouth_sync"] = [dead_link("mouth_sync_t0.png")]
        ev["sbi_heatmaps"] = [dead_link("heatmap_sbi_00_f25.jpg")]
        ev["tracks"] = [
            FaceTrack(
                track=k,
                frames=3,
                first_s=0.0,
                last_s=2.0,
                score=0.5,
                thumbnail=dead_link(f"track_{k:02d}_f25.jpg"),
                thumbnail_s=1.0,
            ).model_dump()
            for k in range(2)
        ]
        assert client.get(next(iter(stale))).status_code == 403  # dead as stored
        jobstore.finish(job, result)

        before = int(time.time())
        view = client.get(f"/api/job/{job.id}").json()["result"]["evidence"]
        links = {path: values_at(view, path) for path in link_fields(Evidence)}
        assert len(links["tracks[].thumbnail"]) == 2
        assert sum(len(v) for v in links.values()) == len(stale)  # every field filled above
        for path, urls in links.items():
            for url in urls:
                assert url not in stale, path
                exp = int(url.split("exp=")[1].split("&")[0])
                assert before + 600 <= exp <= int(time.time()) + 600, path
                fetched = client.get(url)
                assert fetched.status_code == 200 and fetched.content == JPEG, path
