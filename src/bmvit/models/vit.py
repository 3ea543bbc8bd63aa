"""Plain ViT video backbone in the VideoMAE layout (Tong et al., "VideoMAE", NeurIPS 2022), for BMViT §6.1.

The paper's "Generalization" experiment (Table 2 bottom, Table 3) swaps MViTv2-S for "the same
ViT-B backbone used for EVAD", i.e. a VideoMAE ViT-B/16 fine-tuned on Kinetics-400 (Table 3 also:
VideoMAE V2 ViT-B, K710 pre-training + K400 fine-tuning), trained at 288² with 16×4 clips. This
module implements that backbone from the reference semantics:

* tubelet embedding: ``Conv3d(3, C, kernel=2×16×16, stride=2×16×16)`` — 16×288² -> 8×18×18 tokens;
* fixed sine-cosine position embedding, added once after the embedding (see below);
* ``depth`` pre-norm blocks ``x + attn(LN(x))``, ``x + mlp(LN(x))``, optional layer scale
  (``init_values > 0``), stochastic depth; LayerNorm eps 1e-6, exact GELU, MLP ratio 4;
* attention: one ``qkv`` weight without bias plus separate ``q_bias`` and ``v_bias`` (the key
  bias is fixed at zero, VideoMAE/BEiT layout), run through ``F.scaled_dot_product_attention``;
* no class token; a final LayerNorm ``norm`` over every token.

``forward_features(clip (B, 3, T, H, W)) -> (B, C, T/2, H/16, W/16)`` (tokens after ``norm``,
row-major ``(t, h, w)``), ``grid(T, H, W)``, ``out_dim`` and ``blocks.{i}`` naming match
:class:`bmvit.models.mvit.MViT`, so the detector, the FLOP counter and layer-wise lr decay treat
both alike. Any clip whose T, H, W are multiples of the tubelet size runs.

Position embedding (``model.pos_embed``). VideoMAE's table is 1-D over the flattened token index
``p = (t·h + y)·w + x``: ``PE[p, 2i] = sin(p / 10000^(2i/C))``, ``PE[p, 2i+1] = cos(·)``, built for
the pre-training grid (8×14×14 at 16×224²). Two readings exist for another input size:

=============  ==================================================================================
interpolate    (default) EVAD's rule, which the paper follows ("the same ViT-B backbone used for
               EVAD ... Following EVAD, we trained our model using a resolution of 288"): build
               the table for the pre-training grid, view it as ``(t, 14, 14, C)`` and resize each
               temporal slice bicubically (``align_corners=False``) to the input's ``h × w``
               (EVAD ``interpolate_pos_embed_online``). Our extension for another ``t`` (EVAD
               asserts it equal): the slices are then resized linearly along time.
regenerate     VideoMAE fine-tuning's rule when a model is built at another ``img_size``: a fresh
               1-D table of length ``t·h·w`` for the input grid (no interpolation).
=============  ==================================================================================

Both give the pre-training table unchanged at the pre-training grid. Tables are computed on the
CPU in float64 -> float32 (as the reference's numpy code) and cached per grid, device and dtype.

Checkpoint import (:meth:`ViT.load_checkpoint`, ``model.pretrained_format: videomae | bmvit``): the
VideoMAE / VideoMAE V2 key rules live with the other converters, in
:mod:`bmvit.models.checkpoints.videomae`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bmvit.errors import ConfigError
from bmvit.models.checkpoints.files import ConversionReport
from bmvit.models.checkpoints.videomae import load_vit_checkpoint
from bmvit.models.layers import DropPath, init_weights
from bmvit.models.position import sincos_table

Shape3 = tuple[int, int, int]
POS_EMBED_MODES = ("interpolate", "regenerate")


@dataclass(frozen=True)
class ViTSpec:
    """A plain video ViT (VideoMAE ``vit_*_patch16_224`` arguments)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch: Shape3 = (2, 16, 16)  # tubelet size × patch size (kernel = stride)
    qkv_bias: bool = True  # q and v biases (k has none)
    init_values: float = 0.0  # layer scale; 0: off (VideoMAE / VideoMAE V2 ViT-B checkpoints)
    drop_path: float = 0.1  # VideoMAE ViT-B K400 fine-tuning and EVAD ViT-B both use 0.1
    norm_eps: float = 1e-6
    pretrain_input: Shape3 = (16, 224, 224)  # clip the sin-cos table was trained at (T, H, W)


VIT_SPECS: dict[str, ViTSpec] = {
    # VideoMAE vit_base_patch16_224 (86.2 M parameters without the head); VideoMAE V2's ViT-B is the same.
    "vit_b": ViTSpec(),
    # CPU-sized model for tests: the ViT-B layout (same patch, same key names) at width 64.
    "vit_tiny": ViTSpec(embed_dim=64, depth=3, num_heads=4, drop_path=0.0, pretrain_input=(8, 64, 64)),
}


def interpolate_pos_embed(table: Tensor, src: Shape3, dst: Shape3) -> Tensor:
    """Resize a position table ``(t·h·w, C)`` laid out on grid ``src`` to grid ``dst``.

    Spatially: bicubic per temporal slice, ``align_corners=False`` (EVAD's on-line rule); along
    time, if ``t`` differs: linear, ``align_corners=False``. Identity when ``src == dst``.
    """
    if tuple(src) == tuple(dst):
        return table
    (t, h, w), (t2, h2, w2) = src, dst
    C = table.shape[-1]
    x = table.reshape(t, h, w, C).permute(0, 3, 1, 2)  # (t, C, h, w)
    if (h, w) != (h2, w2):
        x = F.interpolate(x, size=(h2, w2), mode="bicubic", align_corners=False)
    if t != t2:
        y = x.permute(2, 3, 1, 0).reshape(h2 * w2, C, t)  # (h2*w2, C, t)
        y = F.interpolate(y, size=t2, mode="linear", align_corners=False)
        x = y.reshape(h2, w2, C, t2).permute(3, 2, 0, 1)  # (t2, C, h2, w2)
    return x.permute(0, 2, 3, 1).reshape(t2 * h2 * w2, C)


def pos_embed_table(spec: ViTSpec, grid: Shape3, mode: str = "interpolate") -> Tensor:
    """Position embedding ``(t·h·w, C)`` for an output grid ``(t, h, w)`` (CPU, float32)."""
    if mode == "regenerate":
        return sincos_table(math.prod(grid), spec.embed_dim)
    if mode == "interpolate":
        src = tuple(n // p for n, p in zip(spec.pretrain_input, spec.patch))
        return interpolate_pos_embed(sincos_table(math.prod(src), spec.embed_dim), src, grid)
    raise ConfigError(f"'model.pos_embed': {mode!r} is not one of {', '.join(POS_EMBED_MODES)}")


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's q/v-only biases."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3C)
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d), as the reference
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, spec: ViTSpec, drop_path: float) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.attn = Attention(dim, spec.num_heads, spec.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=spec.norm_eps)
        hidden = int(dim * spec.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)
        if spec.init_values > 0:
            self.ls1 = nn.Parameter(torch.full((dim,), float(spec.init_values)))
            self.ls2 = nn.Parameter(torch.full((dim,), float(spec.init_values)))
        else:
            self.ls1 = self.ls2 = None

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.norm1(x))
        x = x + self.drop_path(a if self.ls1 is None else self.ls1 * a)
        m = self.mlp(self.norm2(x))
        return x + self.drop_path(m if self.ls2 is None else self.ls2 * m)


class ViT(nn.Module):
    """Video ViT feature extractor (VideoMAE layout).

    ``input_size`` (T, H, W) is only checked (multiples of the tubelet); any such clip runs, the
    position embedding is computed for its grid (``pos_embed`` mode, see the module docstring).
    """

    # ImageNet normalization, which VideoMAE / VideoMAE V2 were trained with (the ViT configs set it)
    input_mean, input_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(
        self,
        spec: ViTSpec,
        input_size: Shape3 | None = None,
        grad_checkpointing: bool = False,
        pos_embed: str = "interpolate",
    ) -> None:
        super().__init__()
        if pos_embed not in POS_EMBED_MODES:
            raise ConfigError(f"'model.pos_embed': {pos_embed!r} is not one of {', '.join(POS_EMBED_MODES)}")
        if spec.embed_dim % spec.num_heads:
            raise ConfigError(f"ViT: embed_dim {spec.embed_dim} is not a multiple of num_heads {spec.num_heads}")
        self.spec = spec
        self.pos_embed_mode = pos_embed
        self.grad_checkpointing = grad_checkpointing
        if input_size is not None:
            self._check_size(tuple(input_size), "input size")
        self.input_size = tuple(input_size) if input_size is not None else spec.pretrain_input
        self.patch_embed = nn.Conv3d(3, spec.embed_dim, spec.patch, spec.patch)
        dpr = [spec.drop_path * i / max(spec.depth - 1, 1) for i in range(spec.depth)]  # linear rule (linspace)
        self.blocks = nn.ModuleList(Block(spec, p) for p in dpr)
        self.norm = nn.LayerNorm(spec.embed_dim, eps=spec.norm_eps)
        self.out_dim = spec.embed_dim
        self.num_heads = spec.num_heads
        self._pos_cache: dict[tuple, Tensor] = {}
        self.apply(init_weights)  # VideoMAE's; the conv keeps PyTorch's default initialization

    def _check_size(self, thw: tuple[int, ...], what: str) -> None:
        if any(n % p for n, p in zip(thw, self.spec.patch)) or any(n < p for n, p in zip(thw, self.spec.patch)):
            raise ConfigError(f"ViT: {what} {'×'.join(map(str, thw))} must be a positive multiple of the tubelet "
                              f"{'×'.join(map(str, self.spec.patch))} (T × H × W)")

    def grid(self, T: int, H: int, W: int) -> Shape3:
        """Output token grid ``(t, h, w)`` for an input clip of ``T × H × W``."""
        return tuple(n // p for n, p in zip((T, H, W), self.spec.patch))

    def pos_embed(self, grid: Shape3, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Position embedding ``(1, t·h·w, C)`` for ``grid`` (cached)."""
        key = (tuple(grid), str(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = pos_embed_table(self.spec, tuple(grid), self.pos_embed_mode).to(device=device, dtype=dtype)[None]
            self._pos_cache[key] = table
        return table

    def forward_tokens(self, x: Tensor) -> tuple[Tensor, Shape3]:
        """``(B, 3, T, H, W)`` -> tokens after the final LayerNorm ``(B, t*h*w, C)`` and ``(t, h, w)``."""
        self._check_size(tuple(x.shape[2:]), "clip")
        x = self.patch_embed(x)  # (B, C, t, h, w)
        thw: Shape3 = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, t*h*w, C), (t, h, w) row-major
        x = x + self.pos_embed(thw, x.device, x.dtype)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x), thw

    def forward_features(self, x: Tensor) -> Tensor:
        x, thw = self.forward_tokens(x)
        return x.transpose(1, 2).reshape(x.shape[0], self.out_dim, *thw)  # (B, C, t, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def load_checkpoint(self, path: str | Path, fmt: str = "auto") -> ConversionReport:
        """Initialize from a VideoMAE / VideoMAE V2 (``videomae``) or bmvit (``bmvit``) checkpoint file."""
        return load_vit_checkpoint(self, path, fmt)


def build_vit(name: str, input_size: Shape3 | None = None, grad_checkpointing: bool = False,
              pos_embed: str = "interpolate", **overrides) -> ViT:
    """Build a named ViT (``vit_b``, ``vit_tiny``); ``overrides`` replace spec fields."""
    if name not in VIT_SPECS:
        raise ConfigError(f"unknown ViT {name!r}; expected one of {', '.join(VIT_SPECS)}")
    return ViT(replace(VIT_SPECS[name], **overrides), input_size, grad_checkpointing, pos_embed)


def vit_builder(name: str):
    """``BACKBONES`` entry for a named ViT: ``build(model_config, (T, H, W)) -> ViT``.

    Reads ``model.drop_path`` (None: the spec's), ``model.grad_checkpointing`` and
    ``model.pos_embed``; MViT-only keys (``remove_last_pool``, ``rel_pos``, ``kv_stride``) do not
    apply to a plain ViT and are ignored.
    """

    def build(cfg, input_size: Shape3) -> ViT:
        overrides = {} if cfg.drop_path is None else {"drop_path": cfg.drop_path}
        return build_vit(name, tuple(input_size), cfg.grad_checkpointing, cfg.pos_embed, **overrides)

    return build
