"""Model cost: multiply-accumulates (MACs) and parameters, for the backbone and the whole detector.

Convention (that of torchvision's ``_ops`` metadata and of the MViTv2 / BMViT papers, which call
MACs "FLOPs"): one MAC per multiply-add of every matrix product and convolution —

* linear layers, the patch-embedding convolution and the depthwise Q/K/V pooling convolutions;
* attention: ``Nq·Nk·d`` for ``QKᵀ`` plus ``Nq·Nk·d`` for ``AV``, per head (class token included);
* decomposed relative positions: ``Nq·d·(kt + kh + kw)`` per head (the three contractions of the
  queries with the gathered tables; the broadcast sum into the bias is an addition);

not counted: softmax, LayerNorm, GELU, additions (residuals, biases, the rel-pos bias sum), max
pooling, interpolation and the token-selection means. Under this convention torchvision's
``mvit_v2_s`` costs 64.22 GMACs at 16×224² (34.54 M parameters with its 400-way head), and so does
bmvit's ``mvitv2_s`` (its backbone alone: 64.2235 G, the head adds 0.0003 G).

Counting runs ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2 = MACs) over one forward
pass on the ``meta`` device, so no memory is allocated and nothing is computed: ~1 s for MViTv2-S.
Scaled-dot-product attention is counted by the formula above whichever kernel the device picks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bmvit.config import Config
from bmvit.models.build import build_detector
from bmvit.models.rel_pos_attention import dense_bias

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2 per MAC) of ``softmax(QKᵀ)V``: ``QKᵀ`` over the q/k head dim, ``AV`` over the value head dim."""
    *batch, nq, e = query_shape
    nk, ev = key_shape[-2], value_shape[-1]
    b = math.prod(batch)
    return 2 * b * nq * nk * e + 2 * b * nq * nk * ev


# Attention kernels FlopCounterMode does not know (CPU's fused kernel), counted as above.
_EXTRA = {}
for _name in ("_scaled_dot_product_flash_attention_for_cpu",):
    if hasattr(aten, _name):
        _EXTRA[getattr(aten, _name)] = _sdpa_flops


def count_macs(module_fn, *inputs) -> int:
    """MACs of ``module_fn(*inputs)`` under the convention of this module (inputs may be meta tensors)."""
    return count_macs_by_module(module_fn, *inputs)["Global"]


def count_macs_by_module(module_fn, *inputs) -> dict[str, int]:
    """MACs per module path (``"Global"``: everything; ``"BMViT.backbone"``: that submodule)."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA)
    with torch.no_grad(), dense_bias(), counter:  # MViT's rel-pos attention as the architecture defines it
        module_fn(*inputs)
    return {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}


@dataclass
class Cost:
    """What ``bmvit flops`` reports (``--json`` prints :meth:`to_json`)."""

    backbone: str
    input: list[int]  # [T, H, W]
    tokens: list[int]  # output grid [t, h, w] of the backbone
    num_classes: int
    token_selection: str
    gmacs_backbone: float
    gmacs_total: float  # backbone + token selection + heads
    params_backbone: int
    params: int  # whole detector

    def to_json(self) -> dict:
        return asdict(self)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def detector_cost(cfg: Config, num_classes: int, frame_hw: tuple[int, int] | None = None) -> Cost:
    """Count the detector of ``cfg`` for one clip (batch 1) at ``data.num_frames × data.size²``, or at
    ``frame_hw = (H, W)`` (e.g. a keep-aspect 16:9 frame, 256×455)."""
    H, W = frame_hw or (cfg.data.size, cfg.data.size)
    size = (cfg.data.num_frames, H, W)
    with torch.device("meta"):
        model = build_detector(cfg.model, cfg.data, num_classes, load_pretrained=False).eval()
        clip = torch.empty(1, 3, *size)
    backbone = model.backbone
    macs_backbone = count_macs(backbone.forward_features, clip)
    macs_total = count_macs(model, clip)
    return Cost(
        backbone=cfg.model.backbone,
        input=list(size),
        tokens=list(backbone.grid(*size)),
        num_classes=num_classes,
        token_selection=cfg.model.token_selection,
        gmacs_backbone=macs_backbone / 1e9,
        gmacs_total=macs_total / 1e9,
        params_backbone=num_params(backbone),
        params=num_params(model),
    )
