"""The fusion model: per-modality item scores, a mask and weights in, one confidence out.

Two implementations of one rule, kept side by side so they cannot drift:

- :class:`Fusion`, a tiny torch module exported to ONNX and served by Triton as the
  ``fusion`` step of ``deepfake_ensemble`` (tensors exactly as ``SPECS["fusion"]``);
- :func:`fuse`, the numpy reference, used by the tests and by the dispatcher for the
  per-second timeline.

The rule: a modality's score is the mean of its item scores (P(manipulated) per face
crop, audio window or lip-sync clip). The confidence is the weighted mean of the scores
of the modalities whose mask is 1, the weights renormalised over those. When no
modality is available (mask all zero, or every available weight zero) the confidence is
0.5: no evidence either way, which the label rule turns into ``inconclusive``.

The dispatcher imports this module for :func:`fuse`, so torch is imported only inside
:func:`build`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dfd.states import MODALITY_ORDER

NO_SIGNAL_CONFIDENCE = 0.5


def fuse(
    item_scores: Mapping[str, np.ndarray | None],
    weights: Sequence[float] | Mapping[str, float],
) -> tuple[np.ndarray, float]:
    """Fuse per-item scores into per-modality scores and one confidence.

    Args:
        item_scores: modality name (``visual``, ``audio``, ``lipsync``) -> item scores
            (any shape, flattened); ``None``, an empty array or a missing key marks the
            modality unavailable.
        weights: three non-negative weights in ``MODALITY_ORDER`` or a name -> weight map.

    Returns:
        ``(modality_scores, confidence)``: modality_scores has three float32 entries in
        ``MODALITY_ORDER``, NaN for an unavailable modality; confidence is in [0, 1],
        0.5 when nothing is available.
    """
    names = [m.value for m in MODALITY_ORDER]
    if isinstance(weights, Mapping):
        w = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(names),):
            raise ValueError(f"fusion: expected {len(names)} weights {names}, got shape {w.shape}")
    if np.any(w < 0):
        raise ValueError(f"fusion: weights must be non-negative, got {w.tolist()}")
    scores = np.full(len(names), np.nan, dtype=np.float64)
    for i, name in enumerate(names):
        items = item_scores.get(name)
        if items is not None and np.size(items) > 0:
            scores[i] = float(np.mean(np.asarray(items, dtype=np.float64)))
    used = ~np.isnan(scores)
    total = float(np.sum(w[used]))
    confidence = (
        float(np.sum(w[used] * scores[used]) / total) if total > 0 else NO_SIGNAL_CONFIDENCE
    )
    return scores.astype(np.float32), confidence


def build():
    """The ONNX-exportable torch module (imports torch)."""
    import torch
    from torch import nn

    class Fusion(nn.Module):
        """``(visual_scores, audio_scores, lipsync_scores, mask, weights)`` -> ``(modality_scores, confidence)``.

        Item score tensors are (K, 1) with K >= 1 per modality (rows of a masked-out
        modality are ignored, so callers send one dummy row); mask and weights are (3,).
        """

        def forward(self, visual_scores, audio_scores, lipsync_scores, mask, weights):
            scores = torch.stack(
                [
                    visual_scores.mean(dim=(0, 1)),
                    audio_scores.mean(dim=(0, 1)),
                    lipsync_scores.mean(dim=(0, 1)),
                ]
            )
            use = mask > 0.5
            w = torch.where(use, weights, torch.zeros_like(weights))
            # masked-out rows may hold anything, NaN included: zero them before summing
            safe = torch.where(use, scores, torch.zeros_like(scores))
            total = w.sum()
            fused = (w * safe).sum() / torch.clamp(total, min=1e-12)
            confidence = torch.where(total > 0, fused, torch.full_like(fused, NO_SIGNAL_CONFIDENCE))
            return scores, confidence.reshape(1)

    return Fusion().eval()
