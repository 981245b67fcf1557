"""Perceptual hashes of an analysed video and their look-up in the bank of known fakes.

``hash_frames`` computes PDQ (Meta's perceptual image hash, 256 bits) of every sampled
frame and of its centre (so a logo in a corner does not hide a copy), scaled down first (PDQ reduces to 64x64 anyway, and a 1080p frame costs 30x
more than a 360p one). ``find_matches`` compares a video's frame hashes with each bank
entry's: a frame matches an entry when some frame of the entry is within
``known_fake_max_distance`` bits (PDQ's authors suggest 31 of 256), and the video
matches when at least ``known_fake_min_share`` of its hashed frames do, as vPDQ
compares videos. Frame order is ignored, so trimmed and re-cut copies still match.

An audio file has no frames: it is fingerprinted with Chromaprint (``fpcalc -raw``) and
compared by the bit error rate of the two fingerprints at their best alignment (a few
seconds either way, so a trimmed copy still lines up), as AcoustID compares recordings.

:class:`RedisBank` is the bank in Redis (keys in ``dfd.known_fakes``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.known_fakes import BANK_KEY, FrameHash, KnownFake, MediaHashes, job_hashes_key
from dfd.schemas import KnownFakeMatch
from dfd.settings import Settings

log = logging.getLogger(__name__)

# Frames are scaled so their longer side is at most this before hashing.
HASH_MAX_SIDE_PX = 512
# Share of each side cut off for the centre hash.
CENTER_MARGIN = 0.2


def _shrink(image: np.ndarray) -> np.ndarray:
    """``image`` box-averaged by the whole factor that brings its longer side to at most
    ``HASH_MAX_SIDE_PX`` (a whole factor: PIL's ``reduce``, several times cheaper than a resize)."""
    factor = -(-max(image.shape[:2]) // HASH_MAX_SIDE_PX)
    if factor <= 1:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).reduce(factor))


def pdq_hex(image: np.ndarray) -> tuple[str, int]:
    """PDQ of an RGB uint8 image: ``(64 hex digits, quality 0..100)``."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(_shrink(image)))
    packed = np.packbits(bits.astype(np.uint8))
    return packed.tobytes().hex(), int(quality)


def center(image: np.ndarray) -> np.ndarray:
    """The central 60 % of each side: what is left when corner logos and captions are cut.

    A solid logo box over a few per cent of a small frame moves full-frame PDQ by 40-50
    bits (measured on GRID); the centre's hash does not move.
    """
    h, w = image.shape[:2]
    dy, dx = int(h * CENTER_MARGIN), int(w * CENTER_MARGIN)
    return image[dy : h - dy, dx : w - dx]


def hash_frames(frames: Sequence[Any], settings: Settings) -> MediaHashes:
    """PDQ of every sampled frame (``.image`` RGB, ``.time_s``) good enough to hash.

    Flat frames (PDQ quality under ``pdq_min_quality``: blank, faded, one colour) are
    left out: their hashes match every other flat frame.
    """
    out = []
    for frame in frames:
        image = _shrink(frame.image)
        digest, quality = pdq_hex(image)
        if quality >= settings.pdq_min_quality:
            middle, _ = pdq_hex(center(image))
            out.append(
                FrameHash(
                    time_s=round(float(frame.time_s), 3),
                    pdq=digest,
                    quality=quality,
                    pdq_center=middle,
                )
            )
    return MediaHashes(frames=out)


def _bits(hexes: list[str]) -> np.ndarray:
    """``[N, 32]`` uint8: each row one hash's bytes."""
    if not hexes:
        return np.zeros((0, 32), np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(-1, 32)


# Set bits of every byte value, for Hamming distances by table look-up.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _hamming(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _POPCOUNT[x[:, None, :] ^ y[None, :, :]].sum(axis=2, dtype=np.int32)


def distances(a: MediaHashes, b: MediaHashes) -> np.ndarray:
    """``[len(a), len(b)]`` frame distances: the nearer of the full and the centre hash.

    A frame without a centre hash (an imported plain list) compares by its full hash.
    """
    full = _hamming(_bits([f.pdq for f in a.frames]), _bits([f.pdq for f in b.frames]))
    zero = "0" * 64
    mid = _hamming(
        _bits([f.pdq_center or zero for f in a.frames]),
        _bits([f.pdq_center or zero for f in b.frames]),
    )
    has_a = np.array([f.pdq_center is not None for f in a.frames], bool)
    has_b = np.array([f.pdq_center is not None for f in b.frames], bool)
    both = has_a[:, None] & has_b[None, :]
    return np.where(both, np.minimum(full, mid), full)


# --- audio files: Chromaprint ------------------------------------------------------------

FPCALC_TIMEOUT_S = 60.0
# Two sub-fingerprints of the same sound differ in few of their 32 bits; unrelated ones in
# about half. Over an aligned overlap, a bit error rate under this is the same recording.
FP_MAX_BIT_ERROR = 0.25
FP_MAX_SHIFT = 40  # sub-fingerprints (~7 s) one copy may be trimmed by against the other
FP_MIN_OVERLAP = 16  # ~3 s: Chromaprint gives ~5 sub-fingerprints a second, after ~1 s


def audio_fingerprint(path: Path) -> list[int] | None:
    """Chromaprint's raw fingerprint of an audio file (``fpcalc``, Debian's
    libchromaprint-tools), or ``None`` when ``fpcalc`` is missing or cannot read it."""
    fpcalc = shutil.which("fpcalc")
    if fpcalc is None:
        log.warning("known fakes: fpcalc not found (apt-get install libchromaprint-tools)")
        return None
    try:
        done = subprocess.run(
            [fpcalc, "-raw", "-json", "-length", "600", str(path)],
            capture_output=True,
            timeout=FPCALC_TIMEOUT_S,
            check=False,
        )
        # fpcalc may exit non-zero on a decoding error at the very end after printing a
        # whole fingerprint: its output, not its status, says whether there is one.
        values = json.loads(done.stdout or b"{}").get("fingerprint") or []
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return None
    return [int(v) & 0xFFFFFFFF for v in values] or None


def fingerprint_match(a: Sequence[int], b: Sequence[int]) -> tuple[float, float] | None:
    """``(bit error rate, share of a matched)`` at the best alignment of ``b`` against
    ``a`` within :data:`FP_MAX_SHIFT`, or ``None`` when no alignment overlaps enough."""
    x = np.asarray(a, np.uint32)
    y = np.asarray(b, np.uint32)
    best: tuple[float, float] | None = None
    for shift in range(-FP_MAX_SHIFT, FP_MAX_SHIFT + 1):
        xs = x[max(0, shift) :]
        ys = y[max(0, -shift) :]
        n = min(len(xs), len(ys))
        if n < FP_MIN_OVERLAP:
            continue
        diff = np.bitwise_xor(xs[:n], ys[:n]).view(np.uint8)
        ber = float(_POPCOUNT[diff].sum()) / (32.0 * n)
        if best is None or ber < best[0]:
            best = (ber, n / len(x))
    return best


def _audio_matches(hashes: MediaHashes, bank: Sequence[KnownFake]) -> list[KnownFakeMatch]:
    found = []
    for entry in bank:
        theirs = entry.hashes.audio_fingerprint
        if not theirs or not hashes.audio_fingerprint:
            continue
        hit = fingerprint_match(hashes.audio_fingerprint, theirs)
        if hit is None or hit[0] > FP_MAX_BIT_ERROR:
            continue
        back = fingerprint_match(theirs, hashes.audio_fingerprint)
        found.append(
            KnownFakeMatch(
                entry_id=entry.id,
                label=entry.label,
                note=entry.note,
                distance=int(round(hit[0] * 32)),
                matched_share=round(min(hit[1], 1.0), 4),
                entry_share=round(min(back[1], 1.0), 4) if back else 0.0,
            )
        )
    return found


def find_matches(
    hashes: MediaHashes, bank: Sequence[KnownFake], settings: Settings
) -> list[KnownFakeMatch]:
    """The bank entries ``hashes`` matches, closest first: by frames for a video, by
    Chromaprint fingerprint for an audio file (``distance`` is then the mean differing bits
    of 32 per sub-fingerprint)."""
    if not hashes.frames:
        return sorted(_audio_matches(hashes, bank), key=lambda m: (-m.matched_share, m.distance))
    found = []
    for entry in bank:
        if not entry.hashes.frames:
            continue
        d = distances(hashes, entry.hashes)
        nearest = d.min(axis=1)
        hit = nearest <= settings.known_fake_max_distance
        share = float(hit.mean())
        if share < settings.known_fake_min_share:
            continue
        entry_share = float((d.min(axis=0) <= settings.known_fake_max_distance).mean())
        found.append(
            KnownFakeMatch(
                entry_id=entry.id,
                label=entry.label,
                note=entry.note,
                distance=int(np.median(nearest[hit])),
                matched_share=round(share, 4),
                entry_share=round(entry_share, 4),
            )
        )
    return sorted(found, key=lambda m: (-m.matched_share, m.distance))


@dataclass(frozen=True)
class RedisBank:
    """The bank of known fakes in Redis, and where a job's own hashes are kept.

    Args:
        redis: a synchronous Redis client (the worker's rq connection).
        ttl_s: how long a job's hashes are kept (the result's lifetime).
    """

    redis: Any
    ttl_s: int

    def entries(self) -> list[KnownFake]:
        """Every entry; one that does not parse is skipped with a warning, not fatal."""
        try:
            raw = self.redis.hgetall(BANK_KEY)
        except RedisError as exc:
            raise UpstreamUnavailableError(
                f"known fakes: expected Redis to answer for {BANK_KEY}, got {exc}"
            ) from exc
        out = []
        for key, value in raw.items():
            try:
                out.append(KnownFake.model_validate_json(value))
            except ValidationError:
                log.warning("known fakes: entry %r does not parse; skipped", key)
        return out

    def keep(self, job_id: str, hashes: MediaHashes) -> None:
        """Keep a job's hashes, so an admin can add them to the bank later."""
        try:
            self.redis.set(job_hashes_key(job_id), hashes.model_dump_json(), ex=self.ttl_s)
        except RedisError as exc:
            raise UpstreamUnavailableError(
                f"known fakes: expected Redis to keep job {job_id}'s hashes, got {exc}"
            ) from exc
