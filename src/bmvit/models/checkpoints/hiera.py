"""Hiera checkpoints: the official video Hiera weights into bmvit's :class:`~bmvit.models.hiera.Hiera`.

Checkpoint import (:meth:`Hiera.load_checkpoint`, format ``hiera``: the official
``hiera_*_16x224.pth`` / ``mae_hiera_*_16x224.pth`` files, weights under ``model_state``; format
``bmvit``: this module's own keys, e.g. from a bmvit detector checkpoint). Key mapping
(:data:`KEY_TABLE`; ``{i}`` block index, ``{p}`` weight|bias):

=====================================  ======================================  ===================================
bmvit                                  official Hiera                          note
=====================================  ======================================  ===================================
``patch_embed.{p}``                    ``patch_embed.proj.{p}``                Conv3d (C, 3, 3, 7, 7)
``pos_embed_spatial`` (1, h·w, C)      ``pos_embed_spatial`` (1, 56·56, C)     bicubic-resized to the input grid
``pos_embed_temporal`` (1, t, C)       ``pos_embed_temporal`` (1, 8, C)        linearly resized
``blocks.{i}.norm1.{p}``               ``blocks.{i}.norm1.{p}``
``blocks.{i}.attn.qkv.{p}``            ``blocks.{i}.attn.qkv.{p}``             fused, Q|K|V along dim 0
``blocks.{i}.attn.proj.{p}``           ``blocks.{i}.attn.proj.{p}``
``blocks.{i}.norm2.{p}``               ``blocks.{i}.norm2.{p}``
``blocks.{i}.mlp.0.{p}``               ``blocks.{i}.mlp.fc1.{p}``
``blocks.{i}.mlp.2.{p}``               ``blocks.{i}.mlp.fc2.{p}``
``blocks.{i}.proj.{p}``                ``blocks.{i}.proj.{p}``                 stage openings only
``norm.{p}``                           ``norm.{p}``                            absent in MAE-only files
— (dropped, reported)                  ``head.projection.{p}``                 Kinetics-400 classifier
— (dropped, reported)                  ``encoder_norm.*``, ``mask_token``,     MAE decoder / fusion heads
                                       ``multi_scale_fusion_heads.*``,
                                       ``decoder_*``
=====================================  ======================================  ===================================

A ``module.`` prefix (DDP) is stripped; files are read with ``torch.load(weights_only=True)`` or
safetensors only (:func:`bmvit.models.checkpoints.files.read_state_dict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bmvit.errors import CheckpointError
from bmvit.models.checkpoints.files import ConversionReport, ConvertedStateDict, read_state_dict, refuse_foreign_keys
from bmvit.models.position import resize_pos_embed

# One row per parameter kind: (bmvit key, official Hiera key); {i} block index, {p} weight|bias.
KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("patch_embed.{p}", "patch_embed.proj.{p}"),
    ("pos_embed_spatial", "pos_embed_spatial"),
    ("pos_embed_temporal", "pos_embed_temporal"),
    ("blocks.{i}.norm1.{p}", "blocks.{i}.norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.proj.{p}"),
    ("blocks.{i}.norm2.{p}", "blocks.{i}.norm2.{p}"),
    ("blocks.{i}.mlp.0.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.2.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("blocks.{i}.proj.{p}", "blocks.{i}.proj.{p}"),
    ("norm.{p}", "norm.{p}"),
)
# Official keys dropped on purpose: the Kinetics classifier and the MAE decoder / fusion heads.
DROPPED_PREFIXES = ("head.", "encoder_norm.", "multi_scale_fusion_heads.", "decoder_", "mask_token")


def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(rx + "$")


_RULES = [(_pattern(ours), _pattern(theirs), ours, theirs) for ours, theirs in KEY_TABLE]


def map_key(key: str, to_bmvit: bool = True) -> str | None:
    """Official Hiera key -> bmvit key (``to_bmvit=False``: the other way); None if it has no place."""
    for ours_rx, theirs_rx, ours, theirs in _RULES:
        m = (theirs_rx if to_bmvit else ours_rx).match(key)
        if m:
            return (ours if to_bmvit else theirs).format(**m.groupdict())
    return None


def detect_layout(sd: Mapping[str, Tensor]) -> str | None:
    """``hiera`` (official keys), ``bmvit`` (this module's keys) or None."""
    keys = {k.removeprefix("module.") for k in sd}
    if "pos_embed_spatial" not in keys:
        return None  # not a video Hiera (image models have one joint pos_embed; MViT has none)
    if "patch_embed.proj.weight" in keys:
        return "hiera"
    if "patch_embed.weight" in keys:
        return "bmvit"
    return None


def fit_to(sd: Mapping[str, Tensor], target: nn.Module, report: ConversionReport | None = None) -> ConvertedStateDict:
    """Fit a bmvit-layout Hiera state dict to ``target``: position embeddings resized to its grid,
    keys it lacks reported as unexpected, keys it needs reported as missing; any other shape
    mismatch raises :class:`CheckpointError` naming the key."""
    report = report or ConversionReport("bmvit", "bmvit")
    shapes = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    out = ConvertedStateDict()
    spatial, temporal = sd.get("pos_embed_spatial"), sd.get("pos_embed_temporal")
    if spatial is not None and temporal is not None:
        n = spatial.shape[1]
        side = math.isqrt(n)
        src_hw = target.pos_thw[1:] if n == math.prod(target.pos_thw[1:]) else (side, side)
        if side * side != n and n != math.prod(target.pos_thw[1:]):
            raise CheckpointError(f"'pos_embed_spatial': {n} positions are not a square grid; cannot resize to "
                                  f"{target.pos_thw[1:]}")
        new_s, new_t = resize_pos_embed(spatial, temporal, src_hw, target.pos_thw)
        for key, old, new in (("pos_embed_spatial", spatial, new_s), ("pos_embed_temporal", temporal, new_t)):
            if old.shape != new.shape:
                report.resized.append((key, list(old.shape), list(new.shape)))
        sd = {**sd, "pos_embed_spatial": new_s.contiguous(), "pos_embed_temporal": new_t.contiguous()}
    for key, value in sd.items():
        if key not in shapes:
            report.unexpected.append(key)
            continue
        if tuple(value.shape) != shapes[key]:
            raise CheckpointError(f"'{key}': checkpoint shape {tuple(value.shape)} does not fit the model's "
                                  f"{shapes[key]} (different Hiera size?)")
        out[key] = value
    report.missing.extend(k for k in shapes if k not in out)
    report.converted = len(out)
    out.report = report
    return out


def from_hiera(sd: Mapping[str, Tensor], target: nn.Module | None = None) -> ConvertedStateDict:
    """Official Hiera state dict (``model_state`` of a ``.pth``) -> bmvit keys; fitted to ``target`` if given.

    The classifier head and MAE decoder weights are dropped (``report.dropped``); keys with no place
    are listed in ``report.unexpected``.
    """
    if "model_state" in sd and isinstance(sd["model_state"], Mapping):
        sd = sd["model_state"]
    out, report = ConvertedStateDict(), ConversionReport("hiera", "bmvit")
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.startswith(DROPPED_PREFIXES):
            report.dropped.append(key)
            continue
        new = map_key(key)
        if new is None:
            report.unexpected.append(key)
            continue
        out[new] = value
    if target is not None:
        return fit_to(out, target, report)
    report.converted = len(out)
    out.report = report
    return out


def to_hiera(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """bmvit Hiera state dict -> official keys (no classifier head)."""
    out = {}
    for key, value in sd.items():
        new = map_key(key, to_bmvit=False)
        if new is None:
            raise CheckpointError(f"'{key}': not a bmvit Hiera key")
        out[new] = value
    return out


def load_hiera_checkpoint(model: nn.Module, path: str | Path, fmt: str = "auto") -> ConversionReport:
    """Initialize ``model`` (a :class:`~bmvit.models.hiera.Hiera`) from a checkpoint file (``fmt``:
    ``auto``, ``hiera`` or ``bmvit``); see the module docstring.

    Position embeddings are resized to this model's input size. Raises :class:`CheckpointError`
    naming the file when the layout is not a video Hiera's, a shape does not fit, the file holds
    weights the model does not have (the first is named), or weights other than the final norm
    are missing.
    """
    if fmt not in ("auto", "hiera", "bmvit"):
        raise CheckpointError(f"{path}: format {fmt!r} is an MViT layout; a Hiera backbone reads 'hiera' "
                              "(official checkpoints), 'bmvit' or 'auto'")
    sd = read_state_dict(path)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # saved from DistributedDataParallel
    layout = detect_layout(sd)
    if layout is None or (fmt != "auto" and layout != fmt):
        found = "an unknown layout" if layout is None else f"the {layout} layout"
        raise CheckpointError(f"{path}: not a video Hiera checkpoint in the {fmt if fmt != 'auto' else 'hiera or bmvit'} "
                              f"layout (found {found}; keys: {', '.join(list(sd)[:4])}, ...)")
    try:
        fitted = from_hiera(sd, target=model) if layout == "hiera" else fit_to(sd, model)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    refuse_foreign_keys(path, fitted.report, "Hiera", layout)
    missing = [k for k in fitted.report.missing if not k.startswith("norm.")]
    if missing:
        raise CheckpointError(f"{path}: checkpoint ({layout} layout) lacks {len(missing)} weights of the model, "
                              f"e.g. {', '.join(missing[:4])}")
    if fitted.report.missing:  # MAE-only checkpoints have no final norm: start it as the identity
        with torch.no_grad():
            fitted["norm.weight"], fitted["norm.bias"] = torch.ones_like(model.norm.weight), torch.zeros_like(model.norm.bias)
    model.load_state_dict(fitted, strict=True)
    return fitted.report
