"""Hiera video backbone (Ryali et al., "Hiera", ICML 2023), written from the reference semantics.

BMViT §6.1 ("Scaling up to large backbones") trains a Hiera-L end-to-end from the public Kinetics-400
checkpoint (MAE pre-trained). This module holds the video Hiera model, architecture as data
(:mod:`bmvit.models.hiera_spec`): :class:`HieraSpec` mirrors the arguments of the reference ``Hiera``
constructor, :func:`block_table` expands it into one :class:`HieraBlockSetting` per block, and
:class:`Hiera` builds every block from that table.

Ingredients (all as in the reference ``hiera_base_16x224`` / ``hiera_large_16x224``):

* patch embedding: one ``Conv3d``, kernel 3×7×7, stride 2×4×4, padding 1×3×3;
* separate position embeddings (``sep_pos_embed``): a spatial table ``(1, h·w, C)`` shared by all
  time slices plus a temporal table ``(1, t, C)`` shared by all positions, added before the blocks.
  A clip whose token grid differs from the table grid gets them interpolated (spatial: bicubic,
  temporal: linear, ``align_corners=False``) — at load time for the configured input size (the
  parameters are sized to it), and on the fly for any other clip size;
* the *unrolled* token order: tokens are permuted once, after the embedding, so that every 2×2
  query pooling is a max over the outermost chunk of the sequence and every mask unit (1×8×8
  tokens at 16×224²) is a contiguous set of positions (:func:`unroll` / :func:`reroll`);
* mask-unit attention (attention within each mask unit) in the first two stages, global attention
  afterwards — lagged by one block as in the reference: the block that opens a stage still uses the
  previous stage's kind;
* query pooling (max over 2×2 spatial neighbours, ``q_stride`` 1×2×2) in the block that opens each
  of the first ``q_pool`` stages after the first, applied to Q and to the (projected) residual;
  K and V are never pooled; channels and heads double at every stage;
* stochastic depth (linear rule), LayerNorm eps 1e-6, attention through
  ``F.scaled_dot_product_attention`` (4-D inputs, so GPU fused kernels apply; counted by
  :mod:`bmvit.models.flops`).

Output contract (as :class:`~bmvit.models.mvit.MViT`): ``forward_features(clip (B, 3, T, H, W))``
returns ``(B, C, t, h, w)`` on the spatial grid in row-major ``(t, h, w)`` order (the unrolling is
undone), ``out_dim`` is C, ``grid(T, H, W)`` gives ``(t, h, w)`` without tensors, blocks are
``blocks.{i}`` (layer-wise lr decay) and ``grad_checkpointing`` recomputes each block.

Fewer pooling stages (the analogue of MViT's ``remove_last_pool``): ``q_pool`` is the number of
stage transitions that pool queries (reference default 3 for 4 stages). ``q_pool=2`` keeps the last
stage at the third stage's resolution: 8×14×14 output tokens at 16×224² instead of 8×7×7. The
detector config maps ``model.remove_last_pool: true`` to ``q_pool = spec.q_pool - 1``. Unroll levels
not consumed by pooling are undone by :func:`reroll` at the end (the reference's ``Reroll``).

Final norm: the reference applies ``norm`` to the *mean-pooled* vector before its classifier. For
per-token features we apply the same LayerNorm (with the checkpoint's ``norm`` weights) to every
output token, as MViT's ``forward_features`` does; the detector heads add their own LayerNorm on
top. MAE-only checkpoints have no ``norm`` (their ``encoder_norm`` normalizes the multi-scale fused
MAE features, a different input), so it then starts as the identity LayerNorm (reported missing).

Temporal mapping: output slice ``j`` is the conv centred on input frame ``2j`` (frames
``2j-1 .. 2j+1``); Hiera never pools time, so for ``T`` even the key frame ``T/2`` maps to output
slice ``t//2`` exactly as for the MViT 16×4 stem (16 frames -> 8 slices, key frame 8 -> slice 4).

Checkpoint import (:meth:`Hiera.load_checkpoint`, formats ``hiera`` (official files) and
``bmvit``): the key table and rules live with the other converters, in
:mod:`bmvit.models.checkpoints.hiera`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bmvit.errors import ConfigError
from bmvit.models.checkpoints.files import ConversionReport
from bmvit.models.checkpoints.hiera import load_hiera_checkpoint
from bmvit.models.hiera_spec import (
    HIERA_SPECS,
    PRETRAIN_INPUT,
    HieraBlockSetting,
    HieraSpec,
    block_table,
    output_grid,
    token_grid,
)
from bmvit.models.layers import DropPath
from bmvit.models.position import resize_pos_embed

Shape3 = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Token order. A grid axis of n = c · s^L tokens (c coarse cells, L unroll levels of stride s)
# writes a position as the digits (c, b_L, ..., b_1), b_1 the finest. The unrolled order puts
# the finest digits of all axes outermost: (b_1 of t,h,w), (b_2 of t,h,w), ..., (b_L), then the
# coarse (t, h, w). So the 2×2 max pool of level 1 is a max over the outermost chunk of the
# sequence, after which the rest is the unrolled order of the pooled grid with L - 1 levels; and
# the tokens of one coarse cell (a mask unit, s^L per axis) are the positions sharing the inner
# index, i.e. the sequence is (within-unit position) × (mask unit), mask-unit index innermost.
# ---------------------------------------------------------------------------------------------


def _unroll_layout(thw: Shape3, stride: Shape3, levels: int) -> tuple[list[int], list[int]]:
    """Digit shape of the spatial order and the permutation that gives the unrolled order."""
    shape: list[int] = []
    for n, s in zip(thw, stride):
        unit = s**levels
        if n % unit:
            raise ValueError(f"Hiera: token grid {tuple(thw)} is not divisible by the mask unit "
                             f"{tuple(st**levels for st in stride)} ({levels} unroll levels of stride {tuple(stride)})")
        shape += [n // unit] + [s] * levels
    base = [d * (levels + 1) for d in range(3)]
    order = [base[d] + levels - k for k in range(levels) for d in range(3)] + base  # finest level first
    return shape, order


def unroll(x: Tensor, thw: Shape3, stride: Shape3, levels: int) -> Tensor:
    """``(B, t·h·w, C)`` in row-major ``(t, h, w)`` order -> the unrolled order with ``levels`` levels."""
    if levels == 0:
        return x
    B, N, C = x.shape
    shape, order = _unroll_layout(thw, stride, levels)
    return x.reshape(B, *shape, C).permute(0, *(o + 1 for o in order), len(shape) + 1).reshape(B, N, C)


def reroll(x: Tensor, thw: Shape3, stride: Shape3, levels: int) -> Tensor:
    """Inverse of :func:`unroll`: unrolled ``(B, N, C)`` -> row-major ``(t, h, w)`` order."""
    if levels == 0:
        return x
    B, N, C = x.shape
    shape, order = _unroll_layout(thw, stride, levels)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    x = x.reshape(B, *(shape[o] for o in order), C)
    return x.permute(0, *(i + 1 for i in inverse), len(shape) + 1).reshape(B, N, C)


def _pool_outer(x: Tensor, stride: int) -> Tensor:
    """Max pool of the finest unrolled level: a max over the outermost ``stride`` chunks of dim -2."""
    return x.unflatten(-2, (stride, -1)).amax(dim=-3)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class MaskUnitAttention(nn.Module):
    """Attention within mask units or over all tokens, with query max pooling.

    Input tokens are in the unrolled order ``(within-unit position) × (mask unit)``; the output
    keeps that order (with ``q_stride`` times fewer positions when the block pools).
    """

    def __init__(self, s: HieraBlockSetting) -> None:
        super().__init__()
        self.s = s
        self.head_dim = s.dim_out // s.num_heads
        self.qkv = nn.Linear(s.dim_in, 3 * s.dim_out)
        self.proj = nn.Linear(s.dim_out, s.dim_out)

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, N, _ = x.shape
        units = N // (s.q_stride * s.window) if s.mask_unit_attn else 1
        qkv = self.qkv(x).view(B, N // units, units, 3, s.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 4, 1, 5).unbind(0)  # each (B, units, heads, n, d)
        if s.q_stride > 1:
            q = _pool_outer(q, s.q_stride)  # (B, units, heads, n / q_stride, d)
        nq = q.shape[3]
        # 4-D inputs (mask units folded into the batch) so fused GPU kernels apply.
        out = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1))  # (B·units, heads, nq, d)
        out = out.view(B, units, s.num_heads, nq, self.head_dim).permute(0, 3, 1, 2, 4).reshape(B, nq * units, s.dim_out)
        return self.proj(out)


class HieraBlock(nn.Module):
    def __init__(self, s: HieraBlockSetting, spec: HieraSpec) -> None:
        super().__init__()
        self.s = s
        self.norm1 = nn.LayerNorm(s.dim_in, eps=spec.norm_eps)
        self.attn = MaskUnitAttention(s)
        self.norm2 = nn.LayerNorm(s.dim_out, eps=spec.norm_eps)
        hidden = int(s.dim_out * spec.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(s.dim_out, hidden), nn.GELU(), nn.Linear(hidden, s.dim_out))
        self.proj = nn.Linear(s.dim_in, s.dim_out) if s.dim_in != s.dim_out else None
        self.drop_path = DropPath(s.drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, N, C_in) unrolled -> (B, N / q_stride, C_out)
        x_norm = self.norm1(x)
        if self.proj is not None:
            x = self.proj(x_norm)  # the residual branch of a stage opening starts from the normed input
        if self.s.q_stride > 1:
            x = _pool_outer(x, self.s.q_stride)
        x = x + self.drop_path(self.attn(x_norm))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class Hiera(nn.Module):
    """Video Hiera feature extractor.

    ``forward_features(x)`` maps a clip ``(B, 3, T, H, W)`` to output tokens ``(B, C, t, h, w)``
    (spatial row-major order, final LayerNorm applied per token); ``out_dim`` is C and
    ``grid(T, H, W)`` gives ``(t, h, w)``. ``input_size`` sizes the position embeddings (other clip
    sizes interpolate them on the fly); H and W must be multiples of ``4 · 2^(stages-1)`` (32 for
    the 4-stage models) so the token grid splits into mask units.
    """

    # Kinetics normalization of the MAE-ST pipeline the video Hiera checkpoints come from (as configs use)
    input_mean, input_std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)

    def __init__(
        self,
        spec: HieraSpec,
        input_size: Shape3 = (16, 224, 224),
        q_pool: int | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_size = tuple(input_size)
        self.q_pool = spec.q_pool if q_pool is None else q_pool
        self.table = block_table(spec, self.q_pool)
        self.levels = len(spec.stages) - 1  # unroll levels: one per stage transition, pooled or not
        self.stage_ends = [sum(spec.stages[: i + 1]) - 1 for i in range(len(spec.stages))]
        self.grad_checkpointing = grad_checkpointing
        self.pos_thw = token_grid(spec, self.input_size)
        try:
            _unroll_layout(self.pos_thw, spec.q_stride, self.levels)
        except ValueError as e:
            raise ConfigError(f"input size {tuple(input_size)}: {e}; use H and W multiples of "
                              f"{spec.patch_stride[1] * spec.q_stride[1] ** self.levels}") from None
        t, h, w = self.pos_thw
        self.patch_embed = nn.Conv3d(3, spec.embed_dim, spec.patch_kernel, spec.patch_stride, spec.patch_padding)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, spec.embed_dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, spec.embed_dim))
        self.blocks = nn.ModuleList(HieraBlock(s, spec) for s in self.table)
        self.out_dim = self.table[-1].dim_out
        self.norm = nn.LayerNorm(self.out_dim, eps=spec.norm_eps)
        nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
        nn.init.trunc_normal_(self.pos_embed_temporal, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # Reference _init_weights: truncated normal weights, Linear and LayerNorm biases at 0.02.
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 0.02)

    def grid(self, T: int, H: int, W: int) -> Shape3:
        """Output token grid ``(t, h, w)`` for an input clip of ``T × H × W``."""
        return output_grid(self.spec, (T, H, W), self.q_pool)

    def pos_embed(self, thw: Shape3) -> Tensor:
        """Position embedding ``(1, t·h·w, C)`` of a token grid, row-major (interpolated if needed)."""
        spatial, temporal = self.pos_embed_spatial, self.pos_embed_temporal
        if tuple(thw) != self.pos_thw:
            spatial, temporal = resize_pos_embed(spatial, temporal, self.pos_thw[1:], thw)
        t, hw = temporal.shape[1], spatial.shape[1]
        return (temporal[:, :, None, :] + spatial[:, None, :, :]).reshape(1, t * hw, -1)

    def _blocks(self, x: Tensor, stage_outputs: bool) -> tuple[Tensor, Shape3, int, list[Tensor]]:
        """Embedding + blocks: unrolled tokens, their grid, the unroll levels left, rerolled stage outputs."""
        x = self.patch_embed(x)  # (B, C, t, h, w)
        B = x.shape[0]
        thw: Shape3 = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2) + self.pos_embed(thw).to(x.dtype)  # (B, t·h·w, C) row-major
        levels = self.levels
        x = unroll(x, thw, self.spec.q_stride, levels)
        outs: list[Tensor] = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if blk.s.q_stride > 1:  # this block consumed the outermost unroll level
                thw, levels = tuple(n // s for n, s in zip(thw, self.spec.q_stride)), levels - 1
            if stage_outputs and i in self.stage_ends:
                y = reroll(x, thw, self.spec.q_stride, levels)
                outs.append(y.transpose(1, 2).reshape(B, -1, *thw))
        return x, thw, levels, outs

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, C, t, h, w)``: last-stage tokens, spatial order, final LayerNorm."""
        x, thw, levels, _ = self._blocks(x, stage_outputs=False)
        x = self.norm(reroll(x, thw, self.spec.q_stride, levels))  # (B, t·h·w, C) row-major
        return x.transpose(1, 2).reshape(x.shape[0], self.out_dim, *thw)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Every stage's output ``(B, C_s, t_s, h_s, w_s)`` in spatial order, before the final norm
        (the reference's ``return_intermediates``, as feature maps)."""
        return self._blocks(x, stage_outputs=True)[3]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def load_checkpoint(self, path: str | Path, fmt: str = "auto") -> ConversionReport:
        """Initialize from a checkpoint file (``fmt``: ``auto``, ``hiera`` or ``bmvit``;
        :func:`bmvit.models.checkpoints.hiera.load_hiera_checkpoint`)."""
        return load_hiera_checkpoint(self, path, fmt)


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def build_hiera(
    name: str,
    input_size: Shape3 | None = None,
    q_pool: int | None = None,
    grad_checkpointing: bool = False,
    **overrides,
) -> Hiera:
    """Build a named Hiera (``hiera_b_16x224``, ``hiera_l_16x224``, ``hiera_tiny``); ``overrides`` replace spec fields.

    ``input_size`` (T, H, W) defaults to the size the model was pre-trained at; ``q_pool`` to the spec's.
    """
    if name not in HIERA_SPECS:
        raise ConfigError(f"unknown Hiera {name!r}; expected one of {', '.join(HIERA_SPECS)}")
    spec = replace(HIERA_SPECS[name], **overrides)
    size = tuple(input_size) if input_size is not None else PRETRAIN_INPUT[name]
    return Hiera(spec, size, q_pool=q_pool, grad_checkpointing=grad_checkpointing)


def hiera_builder(name: str):
    """Backbone builder for :data:`bmvit.models.build.BACKBONES`: ``(ModelConfig, input_size) -> Hiera``.

    ``model.remove_last_pool: true`` removes the last query-pooling stage (``q_pool = spec.q_pool - 1``);
    ``model.drop_path`` overrides the spec's rate; the MViT-only keys ``model.rel_pos`` and
    ``model.kv_stride`` do not apply (Hiera has absolute position embeddings and never pools K/V)
    and are ignored, as for the ViT backbones.
    """

    def build(cfg, input_size: Shape3) -> Hiera:
        spec = HIERA_SPECS[name]
        if cfg.drop_path is not None:
            spec = replace(spec, drop_path=cfg.drop_path)
        q_pool = spec.q_pool - 1 if cfg.remove_last_pool else spec.q_pool
        return Hiera(spec, input_size, q_pool=q_pool, grad_checkpointing=cfg.grad_checkpointing)

    return build
