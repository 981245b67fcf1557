"""The fusion model served by Triton as the ``fusion`` step of ``deepfake_ensemble``.

:func:`build` makes the torch module exported to ONNX (tensors exactly as
``SPECS["fusion"]``). It computes the rule of :func:`dfd.fusion.fuse`, the one place the
service computes a video's fused score; ``tests/export/test_fusion.py`` checks that the
two agree.
"""

from __future__ import annotations

from dfd.fusion import NO_SIGNAL_CONFIDENCE


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
