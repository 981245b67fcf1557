"""The bank of known fakes: what is stored in Redis, under which keys, shared by every process.

The worker hashes every analysed video (PDQ of each sampled frame) and keeps the
hashes under :func:`job_hashes_key` for as long as the job's result; an admin adds a
job's hashes to the bank (``POST /api/known-fakes``), which is one Redis hash,
:data:`BANK_KEY`, of entry id -> :class:`KnownFake` JSON. Every analysis compares its
hashes with every entry. The gateway reads and writes these keys; only the worker hashes.

The exchange format (``dfd hashes import|export``) is the hash list that Meta's
ThreatExchange file exchange (and so Hasher-Matcher-Actioner) reads: one signal a line,
``<signal type> <hash hex>``, here ``pdq <hex>``, with dfd's metadata on comment lines;
see :func:`export_lines`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, Field, ValidationError

BANK_KEY = "dfd:known-fakes"
"""Redis hash: entry id -> KnownFake JSON."""

PDQ = "pdq"
"""The signal type name of a PDQ frame hash, as HMA and ThreatExchange name it."""

_HEX256 = re.compile(r"[0-9a-f]{64}")
ENTRY_ID_PATTERN = r"[0-9a-f]{16}"


def job_hashes_key(job_id: str) -> str:
    """Redis string: a finished job's :class:`MediaHashes` JSON, kept as long as its result."""
    return f"dfd:hashes:{job_id}"


class FrameHash(BaseModel):
    time_s: float = Field(ge=0, description="The sampled frame's time in the video.")
    pdq: str = Field(pattern=r"^[0-9a-f]{64}$", description="PDQ hash, 256 bits as hex.")
    quality: int = Field(ge=0, le=100, description="PDQ quality (low: flat, blank frame).")
    pdq_center: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="PDQ of the frame's central 60 % (without the corners logos go in).",
    )


class MediaHashes(BaseModel):
    """The perceptual hashes of one analysed video."""

    frames: list[FrameHash] = Field(default_factory=list)


class KnownFake(BaseModel):
    id: str = Field(pattern=f"^{ENTRY_ID_PATTERN}$")
    label: str = Field(min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)
    job_id: str | None = Field(None, description="The analysis the hashes came from.")
    created_at: str
    hashes: MediaHashes


class HashListError(ValueError):
    """A hash-list line that is neither ``pdq <hex>`` nor a ``# dfd-entry`` line."""


ENTRY_LINE = "# dfd-entry "


def export_lines(entries: Iterable[KnownFake], plain: bool = False) -> Iterator[str]:
    """The bank as a hash list: ``pdq <hex>`` lines, as ThreatExchange's file exchange reads.

    Each entry's frame lines follow a ``# dfd-entry {JSON}`` line holding its id, label,
    note, creation time and the frames' times and qualities, so an import rebuilds the
    same entries; ``plain`` leaves those lines out (a list for a matcher that only needs
    the hashes).
    """
    for entry in entries:
        if not plain:
            meta = entry.model_dump(mode="json", exclude={"hashes"})
            meta["frames"] = [[f.time_s, f.quality, f.pdq_center] for f in entry.hashes.frames]
            yield ENTRY_LINE + json.dumps(meta, separators=(",", ":"))
        for frame in entry.hashes.frames:
            yield f"{PDQ} {frame.pdq}"


def import_lines(lines: Iterable[str], default_label: str, created_at: str) -> list[KnownFake]:
    """Entries from a hash list (``pdq <hex>`` lines, other signal types skipped).

    Frame lines after a ``# dfd-entry`` line belong to that entry; lines before any (a
    plain list) form one entry labelled ``default_label``.

    Raises:
        HashListError: a malformed line, naming its number.
    """
    import secrets

    entries: list[KnownFake] = []
    current: KnownFake | None = None
    frames_meta: list[list[float | str | None]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith(ENTRY_LINE.strip()):
            try:
                meta = json.loads(line[len(ENTRY_LINE) :])
                frames_meta = list(meta.pop("frames", []))
                current = KnownFake.model_validate({**meta, "hashes": MediaHashes()})
            except (json.JSONDecodeError, ValidationError, TypeError) as exc:
                raise HashListError(
                    f"hash list line {number}: expected a dfd-entry JSON object, got {exc}"
                ) from exc
            entries.append(current)
            continue
        if not line or line.startswith("#"):
            continue
        signal_type, _, signal = line.partition(" ")
        if signal_type.lower() != PDQ:
            continue
        signal = signal.strip().lower()
        if not _HEX256.fullmatch(signal):
            raise HashListError(
                f"hash list line {number}: expected pdq <64 hex digits>, got {line[:90]!r}"
            )
        if current is None:
            current = KnownFake(
                id=secrets.token_hex(8),
                label=default_label,
                created_at=created_at,
                hashes=MediaHashes(),
            )
            entries.append(current)
        i = len(current.hashes.frames)
        time_s, quality, center = frames_meta[i] if i < len(frames_meta) else (i, 100, None)
        try:
            frame = FrameHash.model_validate(
                {"time_s": time_s, "pdq": signal, "quality": quality, "pdq_center": center}
            )
        except ValidationError as exc:
            raise HashListError(
                f"hash list line {number}: its dfd-entry frame metadata does not parse: {exc}"
            ) from exc
        current.hashes.frames.append(frame)
    return [e for e in entries if e.hashes.frames]
