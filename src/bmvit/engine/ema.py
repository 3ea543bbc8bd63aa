"""Exponential moving average of model weights (optional; ``train.ema_decay > 0``).

After every optimizer step ``ema = d * ema + (1 - d) * weights`` with the warm-up
``d = min(decay, (1 + n) / (10 + n))`` (n = updates so far) used by timm and the YOLO family, so
early averages are not dominated by the random initialization. Buffers are copied, not averaged.
Evaluation and the final ``model.safetensors`` use the EMA weights when EMA is on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.updates)
        d = min(self.decay, (1 + n) / (10 + n))
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(src[name].detach(), 1 - d)
        src_buffers = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(src_buffers[name])
        self.updates += 1
