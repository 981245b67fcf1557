"""Where the voice changes: cosine similarity of consecutive speech segments' speaker embeddings.

Each speech segment is embedded by the voice encoder (Resemblyzer's GE2E, served as
``voice``; the front end is ``dfd.voice_features``): a unit vector of 256 numbers, the
normalised mean of its 1.6 s partials'. Two segments of one voice point the same way; a
change of speaker, or of the voice a generator was cloning, shows as a low cosine between
one segment and the next. :func:`voice_changes` is pure: embeddings and spans in, the
points of change out, as evidence for the timeline ("voice changes at 12.4 s"). It is not
a detector and does not enter the verdict.

:data:`VOICE_CHANGE_SIMILARITY` was picked from measured distributions, not from one
file: over the 11 GRID clips of ``media/grid`` (10 speakers; one speaker in two clips),
each cut into two 1.5 s halves and embedded by our encoder, same-speaker pairs (15) had
cosine 0.60-0.80 and different-speaker pairs (216) 0.39-0.82 (95th percentile 0.75). The
threshold is their equal-error point, 0.66, where 27 % of same-speaker pairs fall below
it and 26 % of different-speaker pairs rise above it. Whole 3 s clips separate better
(the one same-speaker pair 0.83, different-speaker pairs 0.56-0.82) but still overlap:
on clips this short a low similarity is a hint, not proof.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfd.errors import InputError

VOICE_CHANGE_SIMILARITY = 0.66


def voice_changes(
    embeddings: np.ndarray | Sequence[np.ndarray],
    spans: Sequence[tuple[float, float]],
    threshold: float = VOICE_CHANGE_SIMILARITY,
) -> list[tuple[float, float]]:
    """The points where the voice changes between consecutive speech segments.

    Args:
        embeddings: one speaker embedding per segment, (segments, dims); need not be
            unit length (each is normalised here).
        spans: each segment's (start_s, end_s) in the media's time, in time order.
        threshold: a cosine below it between one segment and the next is a change.

    Returns:
        ``(time_s, similarity)`` per change, in time order: ``time_s`` is the start of the
        segment whose voice differs from the one before it, ``similarity`` the cosine.

    Raises:
        InputError: the embeddings are not a non-empty finite 2-D array with one row per
            span, a span is not finite with start <= end, or the spans are out of order.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise InputError(
            f"voice changes: expected embeddings (segments, dims), got shape {emb.shape}"
        )
    if emb.shape[0] != len(spans):
        raise InputError(
            f"voice changes: {emb.shape[0]} embeddings for {len(spans)} spans; need one each"
        )
    if not np.all(np.isfinite(emb)):
        raise InputError("voice changes: embeddings hold NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1)
    if np.any(norms == 0):
        raise InputError(f"voice changes: segment {int(np.argmin(norms))} has a zero embedding")
    times = np.asarray(spans, dtype=np.float64).reshape(-1, 2) if len(spans) else np.zeros((0, 2))
    if not np.all(np.isfinite(times)) or np.any(times[:, 0] > times[:, 1]):
        raise InputError(f"voice changes: spans must be finite (start_s, end_s), got {spans!r}")
    if np.any(np.diff(times[:, 0]) < 0):
        raise InputError("voice changes: spans must be in time order")
    unit = emb / norms[:, None]
    sims = np.sum(unit[1:] * unit[:-1], axis=1)
    return [
        (float(times[i + 1, 0]), float(sims[i])) for i in range(len(sims)) if sims[i] < threshold
    ]
