"""Hiera architecture as data: :class:`HieraSpec`, the named specs, and the per-block table.

:class:`HieraSpec` mirrors the arguments of the reference ``Hiera`` constructor;
:func:`block_table` expands it into one :class:`HieraBlockSetting` per block, which
:class:`~bmvit.models.hiera.Hiera` builds; :func:`token_grid` / :func:`output_grid` give the token
grids by conv arithmetic, without tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bmvit.errors import ConfigError

__all__ = ["HIERA_SPECS", "PRETRAIN_INPUT", "HieraBlockSetting", "HieraSpec", "block_table", "output_grid", "token_grid"]

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class HieraSpec:
    """Compact description of a video Hiera (mirrors the reference ``Hiera`` arguments)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    q_pool: int = 3  # stage transitions that pool queries (reference default: all of them)
    q_stride: Shape3 = (1, 2, 2)
    mask_unit_size: Shape3 = (1, 8, 8)  # tokens; must equal q_stride ** (len(stages) - 1)
    mask_unit_attn: tuple[bool, ...] = (True, True, False, False)  # per stage (lagged by one block)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    patch_kernel: Shape3 = (3, 7, 7)
    patch_stride: Shape3 = (2, 4, 4)
    patch_padding: Shape3 = (1, 3, 3)
    mlp_ratio: float = 4.0
    drop_path: float = 0.2  # our recipe's value (the reference constructor defaults to 0.0)
    norm_eps: float = 1e-6


HIERA_SPECS: dict[str, HieraSpec] = {
    # Reference hiera_base_16x224: 51 M parameters (K400 head included), stages 2-3-16-3, 96 -> 768 channels.
    "hiera_b_16x224": HieraSpec(),
    # Reference hiera_large_16x224: 213 M parameters (K400 head included), stages 2-6-36-4, 144 -> 1152 channels, heads 2 -> 16.
    "hiera_l_16x224": HieraSpec(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    # CPU-sized model for tests and the synthetic data (not the reference Hiera-T image model):
    # 3 stages (1-2-2 blocks), width 32 -> 128, mask units of 1×4×4 tokens.
    "hiera_tiny": HieraSpec(
        embed_dim=32,
        stages=(1, 2, 2),
        q_pool=2,
        mask_unit_size=(1, 4, 4),
        mask_unit_attn=(True, False, False),
        drop_path=0.0,
    ),
}

# Input size (T, H, W) each named model was pre-trained at; the default of its builder.
PRETRAIN_INPUT: dict[str, Shape3] = {
    "hiera_b_16x224": (16, 224, 224),
    "hiera_l_16x224": (16, 224, 224),
    "hiera_tiny": (8, 64, 64),
}


@dataclass(frozen=True)
class HieraBlockSetting:
    """Everything one block needs; a row of the table built by :func:`block_table`."""

    dim_in: int
    dim_out: int
    num_heads: int
    q_stride: int  # flattened query-pooling stride of this block (1: no pooling)
    window: int  # tokens per mask unit after this block's pooling (reference ``window_size``)
    mask_unit_attn: bool  # attention within mask units (True) or over all tokens (False)
    drop_path: float
    stage: int


def block_table(spec: HieraSpec, q_pool: int | None = None) -> list[HieraBlockSetting]:
    """Expand a :class:`HieraSpec` into per-block settings (the loop of the reference constructor)."""
    q_pool = spec.q_pool if q_pool is None else q_pool
    n_stages = len(spec.stages)
    if not 0 <= q_pool < n_stages:
        raise ConfigError(f"Hiera: q_pool={q_pool} must be in [0, {n_stages - 1}] for {n_stages} stages")
    if len(spec.mask_unit_attn) != n_stages:
        raise ConfigError(f"Hiera: mask_unit_attn has {len(spec.mask_unit_attn)} entries for {n_stages} stages")
    want = tuple(s ** (n_stages - 1) for s in spec.q_stride)
    if tuple(spec.mask_unit_size) != want:
        raise ConfigError(f"Hiera: mask_unit_size {tuple(spec.mask_unit_size)} must be q_stride ** (stages - 1) = {want}")
    depth = sum(spec.stages)
    stage_ends = [sum(spec.stages[: i + 1]) - 1 for i in range(n_stages)]
    pool_blocks = {e + 1 for e in stage_ends[:q_pool]}
    flat_stride = math.prod(spec.q_stride)
    window = math.prod(spec.mask_unit_size)
    dpr = [spec.drop_path * i / max(depth - 1, 1) for i in range(depth)]  # = torch.linspace(0, p, depth)
    rows, dim, heads, stage = [], spec.embed_dim, spec.num_heads, 0
    for i in range(depth):
        dim_out = dim
        mask_unit_attn = spec.mask_unit_attn[stage]  # the kind of the stage *before* a transition
        if i - 1 in stage_ends:
            dim_out, heads, stage = int(dim * spec.dim_mul), int(heads * spec.head_mul), stage + 1
            if i in pool_blocks:
                window //= flat_stride
        rows.append(HieraBlockSetting(dim, dim_out, heads, flat_stride if i in pool_blocks else 1, window,
                                      mask_unit_attn, dpr[i], stage))
        dim = dim_out
    return rows


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def token_grid(spec: HieraSpec, input_size: Shape3) -> Shape3:
    """Token grid ``(t, h, w)`` after the patch embedding of a clip ``(T, H, W)``."""
    conv = zip(input_size, spec.patch_kernel, spec.patch_stride, spec.patch_padding)
    return tuple(_conv_out(n, k, s, p) for n, k, s, p in conv)


def output_grid(spec: HieraSpec, input_size: Shape3, q_pool: int | None = None) -> Shape3:
    """Output token grid ``(t, h, w)`` for a clip ``(T, H, W)`` (arithmetic only)."""
    q_pool = spec.q_pool if q_pool is None else q_pool
    return tuple(n // s**q_pool for n, s in zip(token_grid(spec, input_size), spec.q_stride))
