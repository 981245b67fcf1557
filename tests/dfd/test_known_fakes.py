"""The bank's hash-list format: export and import give back the same entries."""

from __future__ import annotations

import json

import pytest

from dfd.known_fakes import HashListError, KnownFake, MediaHashes, export_lines, import_lines

pytestmark = pytest.mark.unit

T = "2026-12-01T00:00:00+00:00"


def _entry(entry_id: str, label: str, n: int) -> KnownFake:
    frames = [
        {"time_s": float(i), "pdq": f"{i:02x}" * 32, "quality": 80 + i, "pdq_center": "ee" * 32}
        for i in range(n)
    ]
    return KnownFake(
        id=entry_id, label=label, note="a note", job_id="job", created_at=T,
        hashes=MediaHashes.model_validate({"frames": frames}),
    )  # fmt: skip


def test_export_then_import_is_the_same_bank() -> None:
    bank = [_entry("0" * 16, "first, with a comma", 3), _entry("1" * 16, "second", 2)]
    lines = list(export_lines(bank))
    assert [line.split(" ")[0] for line in lines] == ["#", "vpdq", "#", "vpdq"]
    assert import_lines(lines, "unused", T) == bank


def test_a_plain_list_has_threatexchange_vpdq_lines() -> None:
    (line,) = export_lines([_entry("0" * 16, "x", 2)], plain=True)
    signal_type, _, signal = line.partition(" ")
    # As python-threatexchange's vPDQ signal type serialises compact features.
    assert signal_type == "vpdq"
    assert json.loads(signal) == ["00" * 32 + ",80,0.000", "01" * 32 + ",81,1.000"]
    (entry,) = import_lines([line], "from TX", T)
    assert entry.label == "from TX" and len(entry.hashes.frames) == 2
    assert entry.hashes.frames[1].quality == 81 and entry.hashes.frames[1].pdq_center is None


def test_pdq_lines_become_one_entry_and_other_signal_types_are_skipped() -> None:
    lines = ["pdq " + "ab" * 32, "md5 d41d8cd98f00b204e9800998ecf8427e", "", "pdq " + "cd" * 32]
    (entry,) = import_lines(lines, "images", T)
    assert [f.pdq for f in entry.hashes.frames] == ["ab" * 32, "cd" * 32]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pdq 1234", "line 1: expected pdq <64 hex digits>"),
        ('vpdq ["ab,1"]', "line 1: expected vpdq"),
        ("vpdq not json", "line 1: expected vpdq"),
        ("# dfd-entry {not json", "line 1: expected a dfd-entry JSON object"),
        ('# dfd-entry {"id": "x", "label": "y"}', "line 1: expected a dfd-entry JSON object"),
    ],
)
def test_malformed_lines_name_their_number(line, message) -> None:
    with pytest.raises(HashListError, match=message):
        import_lines([line], "x", T)
