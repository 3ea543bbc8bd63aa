"""MViTv2 video backbone (Li et al., "MViTv2", CVPR 2022), written from the reference semantics.

Architecture as data: :class:`MViTSpec` describes a model in the compact form of the reference
configs (depth, where channels/heads double, where queries are pooled, the initial adaptive K/V
stride); :func:`block_table` expands it into one :class:`BlockSetting` per block, and
:class:`MViT` builds every block from that table with one generic block class.

Ingredients: conv patch embedding (kernel 3×7×7, stride 2×4×4), pooling attention with depthwise
conv pooling + LayerNorm on Q/K/V, decomposed relative position embeddings (spatial and temporal,
linearly interpolated when the table size differs), residual pooling connection, channel
expansion inside attention (``dim_mul_in_att``), stochastic depth, optional class token, no
absolute position embedding. Attention runs through ``F.scaled_dot_product_attention`` with the
relative-position terms passed as an additive bias.

``remove_last_pool`` (BMViT §3.2, Table 1a) drops the query stride of the block that opens the
last stage, keeping that stage's K/V strides as in the reference table; the output grid doubles
in h and w (16×16 instead of 8×8 at 256²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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
    cls_token: bool = False
    rel_pos: bool = True
    residual_pooling: bool = True
    dim_mul_in_att: bool = True
    qkv_bias: bool = True


MVIT_SPECS: dict[str, MViTSpec] = {
    "mvitv2_s": MViTSpec(),
    "mvitv2_b": MViTSpec(
        depth=24,
        dim_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        head_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
        drop_path=0.3,
    ),
    # CPU-sized model for the synthetic data and tests: 3 stages, width 32 -> 128.
    "mvit_tiny": MViTSpec(
        depth=5,
        embed_dim=32,
        num_heads=1,
        dim_mul=((1, 2.0), (3, 2.0)),
        head_mul=((1, 2.0), (3, 2.0)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
        drop_path=0.0,
    ),
}


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
    dpr = torch.linspace(0, spec.drop_path, depth).tolist()
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


def _rel_pos_table(table: Tensor, length: int) -> Tensor:
    """Linearly interpolate a ``(L, C)`` relative-position table to ``(length, C)`` if needed."""
    if table.shape[0] == length:
        return table
    out = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")
    return out.squeeze(0).t()


def _rel_index(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Index into a relative table for query/key grids of different lengths (reference scaling)."""
    q_ratio, k_ratio = max(k_len / q_len, 1.0), max(q_len / k_len, 1.0)
    dist = torch.arange(q_len, device=device)[:, None] * q_ratio - torch.arange(k_len, device=device)[None, :] * k_ratio
    return (dist + (k_len - 1) * k_ratio).long()  # (q_len, k_len)


def _rel_pos_bias(q: Tensor, q_shape: Shape3, k_shape: Shape3, rel_t: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """Decomposed relative position term added to the attention logits.

    q: (B, heads, Nq, d) pooled queries without class token; returns (B, heads, Nq, Nk).
    """
    B, H, _, d = q.shape
    (qt, qh, qw), (kt, kh, kw) = q_shape, k_shape
    Rt = _rel_pos_table(rel_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt, q.device)]  # (qt, kt, d)
    Rh = _rel_pos_table(rel_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh, q.device)]  # (qh, kh, d)
    Rw = _rel_pos_table(rel_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw, q.device)]  # (qw, kw, d)
    r_q = q.reshape(B, H, qt, qh, qw, d)
    bt = torch.einsum("bnthwc,tkc->bnthwk", r_q, Rt)  # (B, H, qt, qh, qw, kt)
    bh = torch.einsum("bnthwc,hkc->bnthwk", r_q, Rh)  # (B, H, qt, qh, qw, kh)
    bw = torch.einsum("bnthwc,wkc->bnthwk", r_q, Rw)  # (B, H, qt, qh, qw, kw)
    bias = bt[..., :, None, None] + bh[..., None, :, None] + bw[..., None, None, :]
    return bias.reshape(B, H, qt * qh * qw, kt * kh * kw)


class PoolNorm(nn.Module):
    """Depthwise conv pooling of one of Q/K/V followed by LayerNorm (reference ``attention_pool``)."""

    def __init__(self, dim: int, kernel: Shape3, stride: Shape3) -> None:
        super().__init__()
        self.pool = nn.Conv3d(dim, dim, kernel, stride, [k // 2 for k in kernel], groups=dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, thw: Shape3, has_cls: bool) -> tuple[Tensor, Shape3]:
        # x: (B, heads, N, d) with N = [cls +] t*h*w
        if has_cls:
            cls, x = x[:, :, :1], x[:, :, 1:]
        B, H, _, d = x.shape
        x = x.reshape(B * H, *thw, d).permute(0, 4, 1, 2, 3)  # (B*heads, d, t, h, w)
        x = self.pool(x)
        new_thw = tuple(x.shape[2:])
        x = x.reshape(B, H, d, -1).transpose(2, 3)  # (B, heads, N', d)
        if has_cls:
            x = torch.cat((cls, x), dim=2)
        return self.norm(x), new_thw


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
        self.pool_q = PoolNorm(head_dim, s.kernel_q, s.stride_q) if needs(s.kernel_q, s.stride_q) else None
        self.pool_k = PoolNorm(head_dim, s.kernel_kv, s.stride_kv) if needs(s.kernel_kv, s.stride_kv) else None
        self.pool_v = PoolNorm(head_dim, s.kernel_kv, s.stride_kv) if needs(s.kernel_kv, s.stride_kv) else None
        self.rel_pos = spec.rel_pos
        if spec.rel_pos:
            t, size = input_thw[0], input_thw[1]
            q_size, kv_size = size // s.stride_q[1], size // s.stride_kv[1]
            sp = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(sp, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(sp, head_dim))
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * t - 1, head_dim))
            for p in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
                nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: Tensor, thw: Shape3) -> tuple[Tensor, Shape3]:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        q_thw = k_thw = thw
        if self.pool_q is not None:
            q, q_thw = self.pool_q(q, thw, self.has_cls)
        if self.pool_k is not None:
            k, k_thw = self.pool_k(k, thw, self.has_cls)
            v, _ = self.pool_v(v, thw, self.has_cls)
        bias = None
        if self.rel_pos:
            c = 1 if self.has_cls else 0
            rel = _rel_pos_bias(q[:, :, c:], q_thw, k_thw, self.rel_pos_t, self.rel_pos_h, self.rel_pos_w)
            bias = F.pad(rel, (c, 0, c, 0)) if c else rel  # class token gets no relative term
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, Nq, d)
        if self.residual_pooling:
            if self.has_cls:
                out = torch.cat((out[:, :, :1], out[:, :, 1:] + q[:, :, 1:]), dim=2)
            else:
                out = out + q
        out = out.transpose(1, 2).reshape(B, out.shape[2], -1)
        return self.proj(out), q_thw


class MultiScaleBlock(nn.Module):
    def __init__(self, s: BlockSetting, input_thw: Shape3, spec: MViTSpec) -> None:
        super().__init__()
        self.s, self.has_cls, self.dim_mul_in_att = s, spec.cls_token, spec.dim_mul_in_att
        att_dim = s.dim_out if spec.dim_mul_in_att else s.dim_in
        self.norm1 = nn.LayerNorm(s.dim_in)
        self.attn = MultiScaleAttention(s, att_dim, input_thw, spec)
        self.drop_path = DropPath(s.drop_path)
        self.norm2 = nn.LayerNorm(att_dim)
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
        x = self.pool_skip(x.reshape(B, *thw, C).permute(0, 4, 1, 2, 3)).flatten(2).transpose(1, 2)
        return torch.cat((cls, x), dim=1) if self.has_cls else x

    def forward(self, x: Tensor, thw: Shape3) -> tuple[Tensor, Shape3]:
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
    """

    def __init__(
        self,
        spec: MViTSpec,
        input_size: Shape3 = (16, 224, 224),
        remove_last_pool: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.table = block_table(spec, remove_last_pool)
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = nn.Conv3d(3, spec.embed_dim, spec.patch_kernel, spec.patch_stride, spec.patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim)) if spec.cls_token else None
        thw = tuple(i // s for i, s in zip(input_size, spec.patch_stride))
        self.blocks = nn.ModuleList()
        for s in self.table:
            self.blocks.append(MultiScaleBlock(s, thw, spec))
            thw = tuple(max(a // b, 1) for a, b in zip(thw, s.stride_q))
        self.out_dim = self.table[-1].dim_out
        self.norm = nn.LayerNorm(self.out_dim)
        self.apply(self._init)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # (B, C, t, h, w)
        B, C = x.shape[:2]
        thw: Shape3 = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, t*h*w, C), tokens in (t, h, w) row-major order
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x, thw = checkpoint(blk, x, thw, use_reentrant=False)
            else:
                x, thw = blk(x, thw)
        x = self.norm(x)
        if self.cls_token is not None:
            x = x[:, 1:]
        return x.transpose(1, 2).reshape(B, self.out_dim, *thw)  # (B, C, t, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


def build_mvit(name: str, input_size: Shape3, remove_last_pool: bool = False, **overrides) -> MViT:
    """Build a named MViT (``mvitv2_s``, ``mvitv2_b``, ``mvit_tiny``); ``overrides`` replace spec fields."""
    spec = replace(MVIT_SPECS[name], **overrides)
    return MViT(spec, input_size, remove_last_pool=remove_last_pool)
