"""Paper Fig. 3: what the output tokens say about one key frame.

Left panel: the actor confidence ``p(actor)`` of each of the ``h × w`` detection tokens of one
output slice, as a heat map rescaled to the frame (nearest neighbour: one block per token) and
blended over it; the cells of the tokens above the threshold θ are outlined in yellow. Right panel:
the boxes predicted by all ``h × w`` tokens of that slice — red for ``p(actor) ≤ θ`` (assigned to
"no actor"), yellow for the confident ones (drawn last, on top).

With ``2(c+t)`` there are two detection slices (``t/2 − 1`` and ``t/2``); the one with the most
confident tokens is shown (ties: the highest confidence), as in the paper, which shows "the frame
where the actor confidences were resulting in positive detections".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from bmvit.boxes import cxcywh_to_xyxy
from bmvit.inference.render import _font

YELLOW, RED = (255, 230, 0), (230, 40, 40)


def _heat_colors(p: np.ndarray) -> np.ndarray:
    """``(...)`` values in [0, 1] -> ``(..., 3)`` uint8 RGB with matplotlib's ``inferno`` map."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.clip(p, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def pick_slice(actor_probs: np.ndarray, tokens_per_slice: int, threshold: float) -> int:
    """The slice (group of ``h·w`` consecutive tokens) with the most tokens above ``threshold``,
    ties broken by the highest probability."""
    p = actor_probs.reshape(-1, tokens_per_slice)  # (S, h*w)
    counts, peaks = (p > threshold).sum(1), p.max(1)
    return int(max(range(len(p)), key=lambda s: (counts[s], peaks[s])))


def explain_image(frame: np.ndarray, outputs: dict[str, Any], threshold: float, min_width: int = 320) -> np.ndarray:
    """Fig. 3 for one key frame: ``frame (H, W, 3)`` uint8 and the raw outputs of its clip
    (``boxes (L, 4)`` cxcywh, ``actor_probs (L,)``, ``grid (t, h, w)``, as kept by
    ``Detector.predict(..., with_outputs=True)``) -> ``(H', 2·W', 3)`` uint8 (two panels)."""
    _, h, w = outputs["grid"]
    probs = np.asarray(torch.as_tensor(outputs["actor_probs"]).float(), dtype=np.float64)  # (L,)
    boxes = cxcywh_to_xyxy(torch.as_tensor(outputs["boxes"]).float()).clamp(0, 1).numpy()  # (L, 4) normalized
    s = pick_slice(probs, h * w, threshold)
    p = probs[s * h * w:(s + 1) * h * w].reshape(h, w)  # (h, w)
    b = boxes[s * h * w:(s + 1) * h * w]  # (h*w, 4)

    H, W = frame.shape[:2]
    scale = max(1.0, min_width / W)
    out_w, out_h = round(W * scale), round(H * scale)
    base = Image.fromarray(frame).resize((out_w, out_h), Image.Resampling.BILINEAR)

    heat = Image.fromarray(_heat_colors(p)).resize((out_w, out_h), Image.Resampling.NEAREST)
    left = Image.blend(base, heat, 0.5)
    draw = ImageDraw.Draw(left)
    lw = max(1, round(min(out_w, out_h) / 160))
    for y, x in zip(*np.nonzero(p > threshold)):
        draw.rectangle([x * out_w / w, y * out_h / h, (x + 1) * out_w / w - 1, (y + 1) * out_h / h - 1], outline=YELLOW, width=lw)
    font = _font(max(10, round(min(out_w, out_h) / 24)))
    n = int((p > threshold).sum())
    draw.text((4, 2), f"p(actor), slice {s + 1}/{len(probs) // (h * w)}: {n} > {threshold:g}", fill=(255, 255, 255), font=font)

    right = base.copy()
    draw = ImageDraw.Draw(right)
    px = b * np.array([out_w, out_h, out_w, out_h])  # (h*w, 4) output pixels
    confident = p.reshape(-1) > threshold
    for i in np.argsort(confident, kind="stable"):  # red first, yellow on top
        draw.rectangle(px[i].tolist(), outline=YELLOW if confident[i] else RED, width=lw + 1 if confident[i] else 1)

    panel = Image.new("RGB", (2 * out_w, out_h))
    panel.paste(left, (0, 0))
    panel.paste(right, (out_w, 0))
    return np.asarray(panel, dtype=np.uint8).copy()
