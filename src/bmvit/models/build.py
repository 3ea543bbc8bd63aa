"""Build a detector from a config: one small dict of backbone builders, no registry magic."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from torch import nn

from bmvit.config import DataConfig, ModelConfig
from bmvit.errors import CheckpointError, ConfigError
from bmvit.models.detector import BMViT
from bmvit.models.heads import BMViTHeads
from bmvit.models.hiera import hiera_builder
from bmvit.models.mvit import MVIT_SPECS, MViT
from bmvit.models.vit import vit_builder


def _mvit(name: str) -> Callable[[ModelConfig, tuple[int, int, int]], nn.Module]:
    def build(cfg: ModelConfig, input_size: tuple[int, int, int]) -> MViT:
        spec = replace(MVIT_SPECS[name], rel_pos=cfg.rel_pos, abs_pos=cfg.abs_pos)
        if cfg.drop_path is not None:
            spec = replace(spec, drop_path=cfg.drop_path)
        if cfg.kv_stride is not None:
            if len(cfg.kv_stride) != 3:
                raise ConfigError(f"'model.kv_stride': expected 3 integers (t, h, w), got {cfg.kv_stride}")
            spec = replace(spec, pool_kv_stride_adaptive=tuple(cfg.kv_stride))
        try:
            return MViT(spec, input_size, remove_last_pool=cfg.remove_last_pool, grad_checkpointing=cfg.grad_checkpointing)
        except RuntimeError as e:  # a pooled (key/value) grid of size < 1: the clip is too small for this backbone
            raise ConfigError(f"'data.num_frames' x 'data.size' = {input_size[0]}x{input_size[1]}: too small for the "
                              f"{name} backbone ({e}); use more frames or a larger size") from None

    return build


def _load_pretrained(backbone: nn.Module, model: ModelConfig) -> None:
    """Initialize the backbone from ``model.pretrained`` through its ``load_checkpoint`` (the
    :class:`~bmvit.models.backbone.Backbone` contract; converters in :mod:`bmvit.models.checkpoints`)."""
    try:
        report = backbone.load_checkpoint(model.pretrained, model.pretrained_format)
    except CheckpointError as e:
        hint = "" if Path(model.pretrained).is_file() else " (or set model.pretrained=null to start from random weights)"
        raise CheckpointError(f"'model.pretrained': {e}{hint}") from None
    print(f"backbone initialized from {model.pretrained}: {report}", file=sys.stderr)


# ``model.backbone`` name -> builder(model config, (T, H, W)); the one list of backbones (config.CHOICES reads it)
BACKBONES: dict[str, Callable[[ModelConfig, tuple[int, int, int]], nn.Module]] = {
    "mvitv2_s": _mvit("mvitv2_s"),
    "mvitv2_b": _mvit("mvitv2_b"),
    "mvit_tiny": _mvit("mvit_tiny"),
    "mvit_tiny_fast": _mvit("mvit_tiny_fast"),
    # Hiera video models (BMViT §6.1; bmvit.models.hiera): model.remove_last_pool drops the last Q-pooling stage.
    "hiera_b_16x224": hiera_builder("hiera_b_16x224"),
    "hiera_l_16x224": hiera_builder("hiera_l_16x224"),
    "hiera_tiny": hiera_builder("hiera_tiny"),
    # VideoMAE-layout ViTs (BMViT §6.1, Tables 2-3; bmvit.models.vit): model.pos_embed picks the table rule.
    "vit_b": vit_builder("vit_b"),
    "vit_tiny": vit_builder("vit_tiny"),
}


def _check_grid(backbone: nn.Module, model: ModelConfig, data: DataConfig) -> None:
    """The clip size must leave the backbone a token grid the token selection can use (ConfigError)."""
    t, h, w = backbone.grid(data.num_frames, data.size, data.size)
    clip = f"'data.num_frames'={data.num_frames}, 'data.size'={data.size}"
    if min(t, h, w) < 1:
        raise ConfigError(f"{clip}: the {model.backbone} backbone's token grid would be {t}x{h}x{w} (t x h x w); "
                          "use more frames or a larger size")
    if model.token_selection == "2(c+t)" and t < 2:
        raise ConfigError(f"{clip}: 'model.token_selection' 2(c+t) needs at least 2 output time slices, the "
                          f"{model.backbone} backbone gives {t}; use more frames or another token selection")


def build_detector(model: ModelConfig, data: DataConfig, num_classes: int, load_pretrained: bool = True) -> BMViT:
    """Detector for ``data``'s clip size; the backbone starts from ``model.pretrained`` when set and
    ``load_pretrained`` (pass False when the weights are about to be replaced, e.g. by a trained checkpoint)."""
    if model.backbone not in BACKBONES:
        raise ConfigError(f"'model.backbone': unknown backbone {model.backbone!r}; expected one of {', '.join(BACKBONES)}")
    backbone = BACKBONES[model.backbone](model, (data.num_frames, data.size, data.size))
    _check_grid(backbone, model, data)
    if model.pretrained and load_pretrained:
        _load_pretrained(backbone, model)
    heads = BMViTHeads(backbone.out_dim, num_classes, model.head_hidden, model.box_layers, model.cls_layers,
                       action_head=model.action_head, cross_attn_heads=model.cross_attn_heads)
    return BMViT(backbone, heads, model.token_selection)
