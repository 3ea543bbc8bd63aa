"""MViTv2 architecture as data: :class:`MViTSpec`, the named specs, and the per-block table.

:class:`MViTSpec` describes a model in the compact form of the reference configs (depth, where
channels/heads double, where queries are pooled, the initial adaptive K/V stride);
:func:`block_table` expands it into one :class:`BlockSetting` per block, which
:class:`~bmvit.models.mvit.MViT` builds with one generic block class; :func:`output_grid` gives the
output token grid by conv arithmetic, without tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MVIT_SPECS", "PRETRAIN_INPUT", "BlockSetting", "MViTSpec", "block_table", "output_grid"]

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class MViTSpec:
    """Compact description of an MViTv2 (mirrors the reference config keys)."""

    depth: int = 16
    embed_dim: int = 96
    num_heads: int = 1
    mlp_ratio: float = 4.0
    dim_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    head_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    pool_q_stride: tuple[tuple[int, int, int, int], ...] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2))
    pool_kv_stride_adaptive: Shape3 = (1, 8, 8)
    pool_kvq_kernel: Shape3 = (3, 3, 3)
    patch_kernel: Shape3 = (3, 7, 7)
    patch_stride: Shape3 = (2, 4, 4)
    patch_padding: Shape3 = (1, 3, 3)
    drop_path: float = 0.2
    cls_token: bool = True
    rel_pos: bool = True
    # Learned absolute position embedding, separable in space and time (PySlowFast MVIT.USE_ABS_POS with
    # SEP_POS_EMBED, MViTv1's form). Off in MViTv2 and its checkpoints; a cheap position cue for small
    # models trained without the relative-position terms (rel_pos=False).
    abs_pos: bool = False
    residual_pooling: bool = True
    dim_mul_in_att: bool = True
    qkv_bias: bool = True
    norm_eps: float = 1e-6


MVIT_SPECS: dict[str, MViTSpec] = {
    # PySlowFast configs/Kinetics/MVITv2_S_16x4.yaml (= torchvision mvit_v2_s).
    "mvitv2_s": MViTSpec(),
    # PySlowFast configs/Kinetics/MVITv2_B_32x3.yaml.
    "mvitv2_b": MViTSpec(
        depth=24,
        dim_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        head_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
        drop_path=0.3,
    ),
    # CPU-sized model for the synthetic data and tests: 3 stages, width 32 -> 128, no class token.
    "mvit_tiny": MViTSpec(
        depth=5,
        embed_dim=32,
        num_heads=1,
        dim_mul=((1, 2.0), (3, 2.0)),
        head_mul=((1, 2.0), (3, 2.0)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
        drop_path=0.0,
        cls_token=False,
        norm_eps=1e-5,
    ),
    # The demo's backbone (configs/synthetic/tiny.yaml): mvit_tiny kept at width 64 after stage 1
    # (no doubling at block 3) and pooled 2x in time at block 1 as well as in space. At 8x96^2 with
    # the last pool removed: output 2x12x12 x 64, about 0.5x mvit_tiny's training-step time at one
    # thread (1250 instead of 800 steps in one 2-thread process; docs/ablations.md, "The demo recipe").
    "mvit_tiny_fast": MViTSpec(
        depth=5,
        embed_dim=32,
        num_heads=1,
        dim_mul=((1, 2.0),),
        head_mul=((1, 2.0),),
        pool_q_stride=((1, 2, 2, 2), (3, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
        drop_path=0.0,
        cls_token=False,
        norm_eps=1e-5,
    ),
}

# Input size each named model was pre-trained at (T, H, W); the default of its builder.
PRETRAIN_INPUT: dict[str, Shape3] = {"mvitv2_s": (16, 224, 224), "mvitv2_b": (32, 224, 224), "mvit_tiny": (8, 96, 96),
                                    "mvit_tiny_fast": (8, 96, 96)}


@dataclass(frozen=True)
class BlockSetting:
    """Everything one block needs; a row of the table built by :func:`block_table`."""

    dim_in: int
    dim_out: int
    num_heads: int
    stride_q: Shape3
    stride_kv: Shape3
    kernel_q: Shape3
    kernel_kv: Shape3
    drop_path: float


def _round_width(width: float, multiplier: float, divisor: int = 1) -> int:
    """Reference channel rounding: scale, round to a multiple of ``divisor``, never below 90%."""
    width *= multiplier
    out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


def _pool_kernel(stride: Shape3, kvq_kernel: Shape3 | None) -> Shape3:
    return tuple(kvq_kernel) if kvq_kernel else tuple(s + 1 if s > 1 else s for s in stride)


def block_table(spec: MViTSpec, remove_last_pool: bool = False) -> list[BlockSetting]:
    """Expand an :class:`MViTSpec` into per-block settings (reference ``_prepare_mvit_configs``)."""
    depth = spec.depth
    dim_mul, head_mul = [1.0] * (depth + 1), [1.0] * (depth + 1)
    for i, m in spec.dim_mul:
        dim_mul[i] = m
    for i, m in spec.head_mul:
        head_mul[i] = m
    stride_q: list[Shape3] = [(1, 1, 1)] * depth
    for i, *s in spec.pool_q_stride:
        stride_q[i] = tuple(s)
    # Adaptive K/V stride: starts at pool_kv_stride_adaptive and is divided by every Q stride.
    stride_kv: list[Shape3] = []
    kv = list(spec.pool_kv_stride_adaptive)
    for i in range(depth):
        kv = [max(kv[d] // stride_q[i][d], 1) for d in range(3)]
        stride_kv.append(tuple(kv))
    if remove_last_pool and spec.pool_q_stride:
        last = max(i for i, *_ in spec.pool_q_stride)
        stride_q[last] = (1, 1, 1)  # K/V of the last stage keep the reference strides.
    dpr = [spec.drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule (no tensors: meta-safe)
    rows: list[BlockSetting] = []
    dim, heads = spec.embed_dim, spec.num_heads
    for i in range(depth):
        heads = _round_width(heads, head_mul[i])
        if spec.dim_mul_in_att:
            dim_out = _round_width(dim, dim_mul[i], divisor=_round_width(heads, head_mul[i]))
        else:
            dim_out = _round_width(dim, dim_mul[i + 1], divisor=_round_width(heads, head_mul[i + 1]))
        rows.append(
            BlockSetting(
                dim_in=dim,
                dim_out=dim_out,
                num_heads=heads,
                stride_q=stride_q[i],
                stride_kv=stride_kv[i],
                kernel_q=_pool_kernel(stride_q[i], spec.pool_kvq_kernel),
                kernel_kv=_pool_kernel(stride_kv[i], spec.pool_kvq_kernel),
                drop_path=dpr[i],
            )
        )
        dim = dim_out
    return rows


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def output_grid(spec: MViTSpec, input_size: Shape3, remove_last_pool: bool = False) -> Shape3:
    """Output token grid ``(t, h, w)`` for a clip ``(T, H, W)`` (conv arithmetic, no tensors)."""
    thw = tuple(_conv_out(n, k, s, p) for n, k, s, p in zip(input_size, spec.patch_kernel, spec.patch_stride, spec.patch_padding))
    for row in block_table(spec, remove_last_pool):
        if math.prod(row.kernel_q) > 1 or math.prod(row.stride_q) > 1:
            thw = tuple(_conv_out(n, k, s, k // 2) for n, k, s in zip(thw, row.kernel_q, row.stride_q))
    return thw
