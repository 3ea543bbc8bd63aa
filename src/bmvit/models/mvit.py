"""MViTv2 video backbone (Li et al., "MViTv2", CVPR 2022), written from the reference semantics.

Architecture as data: :class:`MViTSpec` describes a model in the compact form of the reference
configs (depth, where channels/heads double, where queries are pooled, the initial adaptive K/V
stride); :func:`block_table` expands it into one :class:`BlockSetting` per block, and
:class:`MViT` builds every block from that table with one generic block class (spec and table:
:mod:`bmvit.models.mvit_spec`).

Ingredients: conv patch embedding (kernel 3×7×7, stride 2×4×4), pooling attention with depthwise
conv pooling + LayerNorm on Q/K/V, decomposed relative position embeddings (spatial and temporal,
linearly interpolated when the table size differs), residual pooling connection, channel
expansion inside attention (``dim_mul_in_att``), stochastic depth, class token (on in the
Kinetics-400 checkpoints of MViTv2-S/B), no absolute position embedding (``abs_pos`` adds
MViTv1's separable one, off in every MViTv2 spec), LayerNorm eps 1e-6.
Attention runs through ``F.scaled_dot_product_attention``; the relative-position terms are folded
into extra query/key channels instead of a dense additive bias (:mod:`bmvit.models.rel_pos_attention`).

Contract (numerically checked against torchvision 0.28 ``mvit_v2_s`` / PySlowFast ``MViT``):
``mvitv2_s(input_size, remove_last_pool, **overrides).forward_features(x)`` maps a clip
``(B, 3, T, H, W)`` to ``(B, C, t, h, w)``: the tokens after the final LayerNorm, class token
removed. ``forward_tokens`` also returns the class token (for a classification head).

``remove_last_pool`` (BMViT §3.2, Table 1a) drops the query stride of the block that opens the
last stage, keeping that stage's K/V strides as in the reference table; the output grid doubles
in h and w (16×16 instead of 8×8 at 256²). Non-square inputs work: the spatial relative-position
tables are sized per axis (the reference assumes square inputs; both agree when H = W).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bmvit.errors import ConfigError
from bmvit.models.checkpoints.files import ConversionReport
from bmvit.models.checkpoints.mvit import load_mvit_checkpoint
from bmvit.models.depthwise import depthwise_conv3d
from bmvit.models.layers import DropPath, init_weights
from bmvit.models.mvit_spec import MVIT_SPECS, PRETRAIN_INPUT, BlockSetting, MViTSpec, block_table, output_grid
from bmvit.models.position import interpolate_rel_pos, resize_pos_embed  # noqa: F401  (interpolate_rel_pos: importable here as before)
from bmvit.models.rel_pos_attention import rel_pos_attention, rel_pos_bias, rel_pos_index  # noqa: F401  (the last two: as before)

Shape3 = tuple[int, int, int]


class PoolNorm(nn.Module):
    """Depthwise conv pooling of one of Q/K/V followed by LayerNorm (reference ``attention_pool``).

    One ``(d, 1, k, k, k)`` kernel is shared by all heads, as in the reference; the heads are
    folded into the channels of a single grouped convolution over a channels-last view of the
    tokens, which avoids layout copies.
    """

    def __init__(self, dim: int, kernel: Shape3, stride: Shape3, eps: float) -> None:
        super().__init__()
        self.pool = nn.Conv3d(dim, dim, kernel, stride, [k // 2 for k in kernel], groups=dim, bias=False)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, thw: Shape3, heads: int, has_cls: bool) -> tuple[Tensor, Shape3]:
        # x: (B, N, heads*d) with N = [cls +] t*h*w
        B, _, HD = x.shape
        if has_cls:
            cls, x = x[:, :1], x[:, 1:]
        x = x.unflatten(1, thw).permute(0, 4, 1, 2, 3)  # (B, heads*d, t, h, w), channels-last memory
        weight = self.pool.weight.repeat(heads, 1, 1, 1, 1)  # (heads*d, 1, k, k, k)
        x = depthwise_conv3d(x, weight, self.pool.stride, self.pool.padding)  # F.conv3d(groups=HD), fast CPU backward
        new_thw = tuple(x.shape[2:])
        x = x.permute(0, 2, 3, 4, 1).reshape(B, -1, HD)  # (B, N', heads*d)
        if has_cls:
            x = torch.cat((cls, x), dim=1)
        x = self.norm(x.unflatten(2, (heads, -1)))  # (B, N', heads, d)
        return x.transpose(1, 2), new_thw  # (B, heads, N', d)


class MultiScaleAttention(nn.Module):
    """Pooling attention with relative positions and residual pooling."""

    def __init__(self, s: BlockSetting, att_dim: int, input_thw: Shape3, spec: MViTSpec) -> None:
        super().__init__()
        self.heads, self.has_cls = s.num_heads, spec.cls_token
        self.residual_pooling = spec.residual_pooling
        head_dim = att_dim // s.num_heads
        self.qkv = nn.Linear(s.dim_in, 3 * att_dim, bias=spec.qkv_bias)
        self.proj = nn.Linear(att_dim, att_dim)
        needs = lambda k, st: math.prod(k) > 1 or math.prod(st) > 1  # noqa: E731
        eps = spec.norm_eps
        self.pool_q = PoolNorm(head_dim, s.kernel_q, s.stride_q, eps) if needs(s.kernel_q, s.stride_q) else None
        self.pool_k = PoolNorm(head_dim, s.kernel_kv, s.stride_kv, eps) if needs(s.kernel_kv, s.stride_kv) else None
        self.pool_v = PoolNorm(head_dim, s.kernel_kv, s.stride_kv, eps) if needs(s.kernel_kv, s.stride_kv) else None
        self.rel_pos = spec.rel_pos
        if spec.rel_pos:
            # Table sizes as in the reference (block input size // stride), per spatial axis.
            t, h, w = input_thw
            size_h = 2 * max(h // s.stride_q[1], h // s.stride_kv[1]) - 1
            size_w = 2 * max(w // s.stride_q[2], w // s.stride_kv[2]) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(size_h, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(size_w, head_dim))
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * t - 1, head_dim))
            for p in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
                nn.init.trunc_normal_(p, std=0.02)

    def _pool(self, pool: PoolNorm | None, x: Tensor, thw: Shape3) -> tuple[Tensor, Shape3]:
        if pool is None:
            return x.unflatten(2, (self.heads, -1)).transpose(1, 2), thw  # (B, heads, N, d)
        return pool(x, thw, self.heads, self.has_cls)

    def forward(self, x: Tensor, thw: Shape3) -> tuple[Tensor, Shape3]:
        B = x.shape[0]
        # Q, K and V as three products with slices of the fused qkv weight: each comes out dense,
        # so the pooling convolution reads it in place (no strided reorder).
        w, b = self.qkv.weight.chunk(3), self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None,) * 3
        q, k, v = (F.linear(x, wi, bi) for wi, bi in zip(w, b))  # each (B, N, heads*d)
        q, q_thw = self._pool(self.pool_q, q, thw)  # (B, heads, Nq, d)
        k, k_thw = self._pool(self.pool_k, k, thw)  # (B, heads, Nk, d)
        v, _ = self._pool(self.pool_v, v, thw)  # (B, heads, Nk, d)
        if self.rel_pos:
            out = rel_pos_attention(q, k, v, q_thw, k_thw, self.rel_pos_t, self.rel_pos_h, self.rel_pos_w, self.has_cls)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Nq, d)
        if self.residual_pooling:
            res = out + q
            if self.has_cls and torch.jit.is_tracing():  # export path: same values, no in-place write
                res = torch.cat((out[:, :, :1], res[:, :, 1:]), dim=2)
            elif self.has_cls:  # the class token gets no residual (reference: residual_with_cls_embed=False)
                res[:, :, 0] = out[:, :, 0]
            out = res
        out = out.transpose(1, 2).reshape(B, out.shape[2], -1)  # (B, Nq, heads*d)
        return self.proj(out), q_thw


class MultiScaleBlock(nn.Module):
    def __init__(self, s: BlockSetting, input_thw: Shape3, spec: MViTSpec) -> None:
        super().__init__()
        self.s, self.has_cls, self.dim_mul_in_att = s, spec.cls_token, spec.dim_mul_in_att
        att_dim = s.dim_out if spec.dim_mul_in_att else s.dim_in
        self.norm1 = nn.LayerNorm(s.dim_in, eps=spec.norm_eps)
        self.attn = MultiScaleAttention(s, att_dim, input_thw, spec)
        self.drop_path = DropPath(s.drop_path)
        self.norm2 = nn.LayerNorm(att_dim, eps=spec.norm_eps)
        hidden = int(att_dim * spec.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(att_dim, hidden), nn.GELU(), nn.Linear(hidden, s.dim_out))
        self.proj = nn.Linear(s.dim_in, s.dim_out) if s.dim_in != s.dim_out else None
        if math.prod(s.stride_q) > 1:
            k = tuple(st + 1 if st > 1 else st for st in s.stride_q)
            self.pool_skip = nn.MaxPool3d(k, s.stride_q, [kk // 2 for kk in k])
        else:
            self.pool_skip = None

    def _skip(self, x: Tensor, thw: Shape3) -> Tensor:
        if self.pool_skip is None:
            return x
        if self.has_cls:
            cls, x = x[:, :1], x[:, 1:]
        B, _, C = x.shape
        x = self.pool_skip(x.unflatten(1, thw).permute(0, 4, 1, 2, 3))  # (B, C, t', h', w')
        x = x.permute(0, 2, 3, 4, 1).reshape(B, -1, C)  # (B, N', C)
        return torch.cat((cls, x), dim=1) if self.has_cls else x

    def forward(self, x: Tensor, thw: Shape3) -> tuple[Tensor, Shape3]:
        # x: (B, [1+]t*h*w, C_in)
        x_norm = self.norm1(x)
        x_att, new_thw = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)
        x = self._skip(x, thw) + self.drop_path(x_att)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), new_thw


class MViT(nn.Module):
    """MViTv2 feature extractor.

    ``forward_features(x)`` maps a clip ``(B, 3, T, H, W)`` to output tokens ``(B, C, t, h, w)``
    (class token dropped); ``out_dim`` is C and ``grid(T, H, W)`` gives ``(t, h, w)``.
    ``input_size`` only sizes the relative-position tables (other sizes interpolate them).
    A :class:`~bmvit.models.backbone.Backbone`.
    """

    # Kinetics normalization of the PySlowFast / torchvision checkpoints (bmvit's default data.mean/std)
    input_mean, input_std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)

    def __init__(
        self,
        spec: MViTSpec,
        input_size: Shape3 = (16, 224, 224),
        remove_last_pool: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_size = tuple(input_size)
        self.remove_last_pool = remove_last_pool
        self.table = block_table(spec, remove_last_pool)
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = nn.Conv3d(3, spec.embed_dim, spec.patch_kernel, spec.patch_stride, spec.patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim)) if spec.cls_token else None
        thw = tuple(i // s for i, s in zip(input_size, spec.patch_stride))
        self.pos_hw = thw[1:]  # the grid the spatial position table is sized for (others: resized)
        if spec.abs_pos:  # PySlowFast's separable layout: spatial (1, h*w, C) + temporal (1, t, C) [+ class (1, 1, C)]
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, thw[1] * thw[2], spec.embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, thw[0], spec.embed_dim))
        self.pos_embed_class = (nn.Parameter(torch.zeros(1, 1, spec.embed_dim)) if spec.abs_pos and spec.cls_token
                                else None)
        self.blocks = nn.ModuleList()
        for s in self.table:
            self.blocks.append(MultiScaleBlock(s, thw, spec))
            thw = tuple(max(a // b, 1) for a, b in zip(thw, s.stride_q))
        self.out_dim = self.table[-1].dim_out
        self.norm = nn.LayerNorm(self.out_dim, eps=spec.norm_eps)
        self.apply(init_weights)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if spec.abs_pos:
            for p in (self.pos_embed_spatial, self.pos_embed_temporal, self.pos_embed_class):
                if p is not None:
                    nn.init.trunc_normal_(p, std=0.02)

    def _abs_pos(self, thw: Shape3) -> Tensor:
        """``(1, t*h*w, C)``: spatial table repeated over time + temporal table repeated over space
        (tables resized to ``thw`` by :func:`~bmvit.models.position.resize_pos_embed` when it differs)."""
        t, h, w = thw
        spatial, temporal = resize_pos_embed(self.pos_embed_spatial, self.pos_embed_temporal, self.pos_hw, thw)
        return spatial.repeat(1, t, 1) + temporal.repeat_interleave(h * w, dim=1)  # (t, h, w) row-major

    def grid(self, T: int, H: int, W: int) -> Shape3:
        """Output token grid ``(t, h, w)`` for an input clip of ``T × H × W``."""
        return output_grid(self.spec, (T, H, W), self.remove_last_pool)

    def forward_tokens(self, x: Tensor) -> tuple[Tensor, Shape3]:
        """``(B, 3, T, H, W)`` -> tokens after the final LayerNorm ``(B, [1+]t*h*w, C)`` and ``(t, h, w)``."""
        x = self.patch_embed(x)  # (B, C, t, h, w)
        B = x.shape[0]
        thw: Shape3 = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, t*h*w, C), tokens in (t, h, w) row-major order
        if self.spec.abs_pos:
            x = x + self._abs_pos(thw)
        if self.cls_token is not None:
            cls = self.cls_token if self.pos_embed_class is None else self.cls_token + self.pos_embed_class
            x = torch.cat((cls.expand(B, -1, -1), x), dim=1)  # (B, 1+t*h*w, C)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x, thw = checkpoint(blk, x, thw, use_reentrant=False)
            else:
                x, thw = blk(x, thw)
        return self.norm(x), thw

    def forward_features(self, x: Tensor) -> Tensor:
        x, thw = self.forward_tokens(x)
        if self.cls_token is not None:
            x = x[:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], self.out_dim, *thw)  # (B, C, t, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def load_checkpoint(self, path: str | Path, fmt: str = "auto") -> ConversionReport:
        """Initialize from a checkpoint file in the bmvit, PySlowFast or torchvision layout (``fmt``
        ``auto`` guesses it); :func:`bmvit.models.checkpoints.mvit.load_mvit_checkpoint`."""
        return load_mvit_checkpoint(self, path, fmt)


def build_mvit(
    name: str,
    input_size: Shape3 | None = None,
    remove_last_pool: bool = False,
    grad_checkpointing: bool = False,
    **overrides,
) -> MViT:
    """Build a named MViT (``mvitv2_s``, ``mvitv2_b``, ``mvit_tiny``, ``mvit_tiny_fast``); ``overrides`` replace spec fields.

    ``input_size`` (T, H, W) defaults to the size the model was pre-trained at.
    """
    if name not in MVIT_SPECS:
        raise ConfigError(f"unknown MViT {name!r}; expected one of {', '.join(MVIT_SPECS)}")
    spec = replace(MVIT_SPECS[name], **overrides)
    size = tuple(input_size) if input_size is not None else PRETRAIN_INPUT[name]
    return MViT(spec, size, remove_last_pool=remove_last_pool, grad_checkpointing=grad_checkpointing)


def mvitv2_s(input_size: Shape3 = (16, 224, 224), remove_last_pool: bool = False, **overrides) -> MViT:
    """MViTv2-S 16×4 (Kinetics-400 layout, 34.5 M parameters with the K400 head, 64.22 GMACs at 16×224²)."""
    return build_mvit("mvitv2_s", input_size, remove_last_pool, **overrides)


def mvitv2_b(input_size: Shape3 = (32, 224, 224), remove_last_pool: bool = False, **overrides) -> MViT:
    """MViTv2-B 32×3 (Kinetics-400 layout)."""
    return build_mvit("mvitv2_b", input_size, remove_last_pool, **overrides)
