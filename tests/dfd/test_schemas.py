"""The result schema: the face tracks' thumbnails, optional so older results still read."""

from __future__ import annotations

import pytest

from dfd.schemas import Evidence, FaceTrack, JobView

pytestmark = pytest.mark.unit


def test_a_track_without_a_thumbnail_still_reads() -> None:
    """Results stored before tracks had thumbnails (or tracks past the bound) have none."""
    old = FaceTrack.model_validate({"track": 0, "frames": 2, "first_s": 0.0, "last_s": 1.0})
    assert old.thumbnail is None and old.thumbnail_s is None
    assert Evidence.model_validate({"tracks": [old.model_dump()]}).tracks == [old]


def test_a_track_thumbnail_round_trips_and_is_documented() -> None:
    track = FaceTrack(
        track=1,
        frames=3,
        first_s=0.0,
        last_s=2.0,
        score=0.9,
        thumbnail="http://h/e/k?sig=x",
        thumbnail_s=1.0,
    )
    assert FaceTrack.model_validate_json(track.model_dump_json()) == track
    props = JobView.model_json_schema()["$defs"]["FaceTrack"]["properties"]
    assert "most suspicious crop" in props["thumbnail"]["description"]
    assert "DFD_MAX_FACES_PER_FRAME" in props["thumbnail"]["description"]
    assert props["thumbnail_s"]["description"]
    with pytest.raises(ValueError, match="thumbnail_s"):
        FaceTrack.model_validate({**track.model_dump(), "thumbnail_s": "soon"})
