"""Temporal test-time augmentation (``eval.time_tta``; not in the paper, off by default).

Each key frame is predicted from ``V`` clips moved along the video by the frame offsets of
``eval.time_tta`` (e.g. ``[-1, 1]``: the clips one frame before and after the centred one; at
stride 2 the two interleave and together see every frame of the window), and the model's outputs
are averaged per token: boxes (cxcywh) arithmetically, actor and action scores as probabilities
(returned as logits again, so the output dict keeps the contract of DESIGN.md and
post-processing is unchanged) — the same rule as :mod:`bmvit.models.flip_tta`.

The targets stay the key frame's, as for ``data.time_jitter`` in training: right for actions
that last longer than the offset, a small box offset for fast actors. Tokens are compared cell
by cell (the output grid does not depend on time), so no re-indexing is needed.

Input layout: the readers (:mod:`bmvit.data.clips`, :mod:`bmvit.inference.windows`) put the
``V`` clips one after the other along time, ``(B, 3, V·T, H, W)``; :class:`TimeTTA` splits them
into one batch of ``V·B`` clips (one forward pass), so it composes with
:class:`~bmvit.models.flip_tta.FlipTTA` inside it (``2·V·B`` clips then). The cost is ``V``
passes per key frame.
"""

from __future__ import annotations

from torch import Tensor, nn

from bmvit.models.flip_tta import mean_probability_logit

__all__ = ["TimeTTA"]


class TimeTTA(nn.Module):
    """Wraps a detector: ``forward(clips (B, 3, V·T, H, W))`` -> the detector's output dict for
    ``B`` key frames, averaged over the ``V`` clips of ``T`` frames each (module docstring)."""

    def __init__(self, model: nn.Module, num_views: int, num_frames: int) -> None:
        super().__init__()
        if num_views < 1 or num_frames < 1:
            raise ValueError(f"time TTA needs at least one view of one frame, got {num_views} of {num_frames}")
        self.model = model
        self.num_views, self.num_frames = num_views, num_frames

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        B, V, T = clips.shape[0], self.num_views, self.num_frames
        if clips.shape[2] != V * T:  # a reader without the views would otherwise be split silently
            raise ValueError(f"time TTA: expected {V} clips of {T} frames one after the other, got {clips.shape[2]} frames")
        views = clips.unflatten(2, (V, T)).transpose(1, 2).flatten(0, 1)  # (B·V, 3, T, H, W), key frame-major
        out = self.model(views)
        if V == 1:
            return out
        avg = dict(out)
        avg["boxes"] = out["boxes"].unflatten(0, (B, V)).mean(1)  # (B, L, 4) cxcywh
        for key in ("actor_logits", "action_logits"):
            per_view = out[key].unflatten(0, (B, V)).unbind(1)  # V × (B, L[, K])
            avg[key] = mean_probability_logit(*per_view)
        return avg
