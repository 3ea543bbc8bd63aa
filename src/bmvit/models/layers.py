"""Layers shared by the backbones (MViT, ViT, Hiera): stochastic depth and the transformer initialization."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DropPath", "init_weights"]


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def init_weights(m: nn.Module) -> None:
    """Transformer initialization of the MViTv2 and VideoMAE references: trunc-normal(0.02) linear
    weights with zero biases, unit LayerNorms (``module.apply(init_weights)``)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
