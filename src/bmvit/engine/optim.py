"""Optimizer and learning-rate schedule.

AdamW (paper: lr 1e-4, weight decay 1e-4). Parameters without weight decay, as in the MViTv2
reference: every 1-D tensor (norms, biases), relative-position tables, the class token and
absolute position embeddings (``pos_embed*``; Hiera's ``no_weight_decay``).

Layer-wise lr decay (``train.layer_decay < 1``, off by default — not in the paper): backbone
block ``i`` of ``D`` gets ``lr * decay^(D - i)``, the patch embedding / class token / position
embeddings ``lr * decay^(D + 1)``; the final backbone norm and the heads keep ``lr``.

On CUDA and on the CPU the optimizer is the fused AdamW kernel (one pass over all parameters;
on the CPU about 4× faster than the default for-each implementation on the demo model); on other
devices torch's default implementation.

Schedule: linear warm-up over ``warmup_steps`` optimizer steps, then cosine decay to
``lr * min_lr_ratio`` at the last step. Under a time budget (``train.max_minutes``, not in the
paper) the cosine follows whichever is further along, the steps or the budget's minutes (both
counted from the end of the warm-up), so it reaches its end when the budget runs out even on a
machine too slow for all the steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bmvit.models.backbone import BLOCK, layer_id  # the blocks.{i} naming of the backbone contract


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or "rel_pos" in name or "cls_token" in name or "pos_embed" in name


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW parameter groups; each carries ``lr_scale`` (multiplied into the scheduled lr)."""
    names = [n for n, _ in model.named_parameters()]
    depth = 1 + max((int(m.group(1)) for n in names if (m := BLOCK.search(n)) and n.startswith("backbone.")), default=-1)
    groups: dict[tuple[bool, float], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = layer_decay ** (depth + 1 - layer_id(name, depth)) if layer_decay != 1.0 else 1.0
        groups.setdefault((_no_decay(name, p), scale), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_scale": s}
            for (nd, s), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; fused on CUDA and the CPU."""
    fused = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups(model, weight_decay, layer_decay), lr=lr, fused=fused or None)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float, time_progress: float = 0.0) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based) of ``total``.

    ``time_progress``: the fraction of a time budget used since the warm-up ended (0 without a
    budget); the cosine's progress is the larger of it and the steps' fraction."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(opt: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = base_lr * factor * g.get("lr_scale", 1.0)
