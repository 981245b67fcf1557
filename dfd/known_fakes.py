"""The bank of known fakes: what is stored in Redis, under which keys, shared by every process.

The worker hashes every analysed video (PDQ of each sampled frame) and keeps the
hashes under :func:`job_hashes_key` for as long as the job's result; an admin adds a
job's hashes to the bank (``POST /api/known-fakes``), which is one Redis hash,
:data:`BANK_KEY`, of entry id -> :class:`KnownFake` JSON. Every analysis compares its
hashes with every entry. The gateway reads and writes these keys; only the worker hashes.

The exchange format (``dfd hashes import|export``) is the hash list that Meta's
ThreatExchange file exchange (and so Hasher-Matcher-Actioner) reads: one signal a line,
``<signal type> <signal>``: ``vpdq <JSON list of "hex,quality,time">`` per video (the
vPDQ signal format) and ``pdq <hex>`` per image or frame, with dfd's metadata on comment
lines; see :func:`export_lines`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, Field, ValidationError

BANK_KEY = "dfd:known-fakes"
"""Redis hash: entry id -> KnownFake JSON."""

PDQ = "pdq"
"""The signal type of one PDQ hash (an image, a frame), as ThreatExchange names it."""
VPDQ = "vpdq"
"""The signal type of a video's PDQ frame hashes (vPDQ features), as ThreatExchange names it."""

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
    """The perceptual hashes of one analysed video (its frames) or audio file (its sound)."""

    frames: list[FrameHash] = Field(default_factory=list)
    audio_fingerprint: list[int] | None = Field(
        None,
        description="Chromaprint's raw fingerprint of an audio file (fpcalc -raw): one 32-bit "
        "sub-fingerprint per ~0.124 s.",
    )


class KnownFake(BaseModel):
    id: str = Field(pattern=f"^{ENTRY_ID_PATTERN}$")
    label: str = Field(min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)
    job_id: str | None = Field(None, description="The analysis the hashes came from.")
    created_at: str
    hashes: MediaHashes


class HashListError(ValueError):
    """A hash-list line that is not a ``vpdq``, ``pdq`` or ``# dfd-entry`` line dfd can read."""


ENTRY_LINE = "# dfd-entry "


def vpdq_signal(hashes: MediaHashes) -> str:
    """The video's hashes as a vPDQ signal: a JSON list of ``"<hex>,<quality>,<time s>"``."""
    return json.dumps([f"{f.pdq},{f.quality},{f.time_s:.3f}" for f in hashes.frames])


def export_lines(entries: Iterable[KnownFake], plain: bool = False) -> Iterator[str]:
    """The bank as a hash list: one ``vpdq <signal>`` line per entry.

    ``<signal type> <signal>`` lines are what ThreatExchange's file exchange (and so
    Hasher-Matcher-Actioner) reads; a vPDQ signal is the JSON list of compact features
    its ``vpdq`` signal type parses. Each line follows a ``# dfd-entry {JSON}`` comment
    holding the entry's id, label, note, creation time and centre hashes, so an import
    rebuilds the same entries; ``plain`` leaves the comments out.
    """
    for entry in entries:
        if not plain:
            meta = entry.model_dump(mode="json", exclude={"hashes"})
            meta["centers"] = [f.pdq_center for f in entry.hashes.frames]
            yield ENTRY_LINE + json.dumps(meta, separators=(",", ":"))
        yield f"{VPDQ} {vpdq_signal(entry.hashes)}"


def _vpdq_frames(signal: str, number: int) -> list[FrameHash]:
    try:
        features = json.loads(signal)
        frames = []
        for feature in features:
            digest, quality, time_s = str(feature).split(",")
            frames.append(FrameHash(time_s=float(time_s), pdq=digest.lower(), quality=int(quality)))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise HashListError(
            f'hash list line {number}: expected vpdq ["<hex>,<quality>,<time>", ...], got {exc}'
        ) from exc
    return frames


def import_lines(lines: Iterable[str], default_label: str, created_at: str) -> list[KnownFake]:
    """Entries from a hash list; signal types other than ``vpdq`` and ``pdq`` are skipped.

    A ``vpdq`` line is one video: the entry of the ``# dfd-entry`` line before it, or a
    new entry labelled ``default_label``. ``pdq`` lines (frames or images from another
    list) together form one entry labelled ``default_label``.

    Raises:
        HashListError: a malformed line, naming its number.
    """
    import secrets

    def new_entry(meta: dict[str, object] | None = None) -> KnownFake:
        fields = meta or {"id": secrets.token_hex(8), "label": default_label}
        return KnownFake.model_validate(
            {"created_at": created_at, **fields, "hashes": MediaHashes()}
        )

    entries: list[KnownFake] = []
    pending: tuple[dict[str, object], list[object]] | None = None  # the last dfd-entry
    loose: KnownFake | None = None  # where pdq lines go
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith(ENTRY_LINE.strip()):
            try:
                meta = json.loads(line[len(ENTRY_LINE) :])
                centers = list(meta.pop("centers", []))
                new_entry(meta)  # validates the fields now, naming this line
            except (json.JSONDecodeError, ValidationError, TypeError, AttributeError) as exc:
                raise HashListError(
                    f"hash list line {number}: expected a dfd-entry JSON object, got {exc}"
                ) from exc
            pending = (meta, centers)
            continue
        if not line or line.startswith("#"):
            continue
        signal_type, _, signal = line.partition(" ")
        signal_type, signal = signal_type.lower(), signal.strip()
        if signal_type == VPDQ:
            entry = new_entry(pending[0] if pending else None)
            entry.hashes.frames.extend(_vpdq_frames(signal, number))
            if pending:
                for frame, center in zip(entry.hashes.frames, pending[1], strict=False):
                    if isinstance(center, str) and _HEX256.fullmatch(center):
                        frame.pdq_center = center
            pending = None
            entries.append(entry)
        elif signal_type == PDQ:
            if not _HEX256.fullmatch(signal.lower()):
                raise HashListError(
                    f"hash list line {number}: expected pdq <64 hex digits>, got {line[:90]!r}"
                )
            if loose is None:
                loose = new_entry()
                entries.append(loose)
            i = len(loose.hashes.frames)
            loose.hashes.frames.append(FrameHash(time_s=i, pdq=signal.lower(), quality=100))
    return [e for e in entries if e.hashes.frames]
