"""ViT checkpoints: VideoMAE / VideoMAE V2 weights into bmvit's :class:`~bmvit.models.vit.ViT`.

Checkpoint import (:meth:`ViT.load_checkpoint`, ``model.pretrained_format: videomae``) reads
VideoMAE / VideoMAE V2 fine-tuned checkpoints (``vit_b_k400_ft.pth``-style files) and VideoMAE
pre-training checkpoints (``encoder.*`` keys). Weights are found under a ``module`` / ``model`` /
``state_dict`` / ``model_state`` wrapper or at the top level; the prefixes ``module.``,
``_orig_mod.``, ``backbone.`` and ``encoder.`` are stripped (VideoMAE's own loader strips the last
two). Key mapping (``{i}`` block, ``{p}`` weight|bias):

=====================================  ==========================  ==========================================
VideoMAE / VideoMAE V2                 bmvit ``ViT``               note
=====================================  ==========================  ==========================================
``patch_embed.proj.{p}``               ``patch_embed.{p}``         Conv3d 2×16×16
``blocks.{i}.norm1.{p}``               ``blocks.{i}.norm1.{p}``
``blocks.{i}.attn.qkv.weight``         ``blocks.{i}.attn.qkv.weight``  ``(3C, C)``, rows q | k | v, no bias
``blocks.{i}.attn.q_bias``             ``blocks.{i}.attn.q_bias``  the key bias is a fixed zero in both
``blocks.{i}.attn.v_bias``             ``blocks.{i}.attn.v_bias``
``blocks.{i}.attn.proj.{p}``           ``blocks.{i}.attn.proj.{p}``
``blocks.{i}.norm2.{p}``               ``blocks.{i}.norm2.{p}``
``blocks.{i}.mlp.fc1.{p}``             ``blocks.{i}.mlp.0.{p}``
``blocks.{i}.mlp.fc2.{p}``             ``blocks.{i}.mlp.2.{p}``
``blocks.{i}.gamma_1`` / ``gamma_2``   ``blocks.{i}.ls1`` / ``ls2``  layer scale (only when ``init_values > 0``)
``norm.{p}``                           ``norm.{p}``                present in pre-training encoders and
                                                                   ``use_mean_pooling=False`` models
``fc_norm.{p}``                        — dropped                   fine-tuned models normalize the *mean-
                                                                   pooled* feature with it (``norm`` is
                                                                   Identity there); as EVAD, our per-token
                                                                   ``norm`` then starts fresh (ones/zeros)
                                                                   and the report lists it as missing
``head.{p}``                           — dropped                   Kinetics classifier
``pos_embed``                          — dropped                   fixed sin-cos, recomputed; a *learned*
                                                                   table is refused
``decoder.*``, ``encoder_to_decoder.*``,  — dropped                pre-training decoder
``mask_token``
=====================================  ==========================  ==========================================

Files are read only with ``torch.load(weights_only=True)`` or safetensors; anything else raises
:class:`~bmvit.errors.CheckpointError` naming the file. ``fmt="bmvit"`` reads this module's own
keys (e.g. the ``backbone.*`` weights of a bmvit detector checkpoint); ``fmt="auto"`` tells the
two layouts apart by their keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bmvit.errors import CheckpointError
from bmvit.models.checkpoints.files import ConversionReport, read_weights, refuse_foreign_keys
from bmvit.models.position import sincos_table

VIT_FORMATS = ("auto", "videomae", "bmvit")
# (VideoMAE regex, bmvit template); see the table in the module docstring.
_VIDEOMAE_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^patch_embed\.proj\.(weight|bias)$", r"patch_embed.\1"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"blocks.\1.mlp.0.\2"),
    (r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"blocks.\1.mlp.2.\2"),
    (r"^blocks\.(\d+)\.gamma_1$", r"blocks.\1.ls1"),
    (r"^blocks\.(\d+)\.gamma_2$", r"blocks.\1.ls2"),
    (r"^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$", r"blocks.\1.\2.\3"),
    (r"^blocks\.(\d+)\.attn\.(qkv\.weight|q_bias|v_bias)$", r"blocks.\1.attn.\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^norm\.(weight|bias)$", r"norm.\1"),
))
# Dropped on purpose (classifier, pooled-feature norm, pre-training decoder, fixed table).
_VIDEOMAE_DROP = re.compile(r"^(head\.|fc_norm\.|decoder\.|encoder_to_decoder\.|mask_token$|pos_embed$)")
_WRAPPERS = ("module", "model", "state_dict", "model_state")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")
# Weights that may start fresh: a fine-tuned VideoMAE has no per-token final norm (see docstring).
_MAY_START_FRESH = ("norm.weight", "norm.bias")


def map_videomae_key(key: str) -> str | None:
    """VideoMAE parameter name -> bmvit ``ViT`` name; None when it has no place in the backbone."""
    for rule, template in _VIDEOMAE_RULES:
        if rule.match(key):
            return rule.sub(template, key)
    return None


def _unwrap(sd: Mapping) -> dict[str, Tensor]:
    for key in _WRAPPERS:
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd) and any(k.startswith("heads.") for k in sd):
        sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}  # a bmvit detector checkpoint
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _detect(sd: Mapping[str, Tensor]) -> str | None:
    keys = list(sd)
    if any(k.startswith("patch_embed.proj.") or ".mlp.fc1." in k for k in keys):
        return "videomae"
    if any(k == "patch_embed.weight" for k in keys):
        return "bmvit"
    return None


def convert_videomae(sd: Mapping[str, Tensor], model: nn.Module | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename a VideoMAE state dict (already unwrapped) into ``ViT`` keys; report what was dropped.

    With ``model``, a ``pos_embed`` in the file is checked to be the fixed sin-cos table (a learned
    table has no place in this backbone and raises :class:`CheckpointError`).
    """
    out, report = {}, ConversionReport("videomae", "bmvit")
    for key, value in sd.items():
        if _VIDEOMAE_DROP.match(key):
            if key == "pos_embed" and model is not None:
                table = value.reshape(-1, value.shape[-1]).float()
                if not torch.allclose(table, sincos_table(*table.shape), atol=1e-4):
                    raise CheckpointError("'pos_embed': the checkpoint has a learned position embedding; this ViT "
                                          "uses VideoMAE's fixed sine-cosine table")
            report.dropped.append(key)
            continue
        new = map_videomae_key(key)
        if new is None:
            report.unexpected.append(key)
            continue
        out[new] = value
    return out, report


def load_vit_checkpoint(model: nn.Module, path: str | Path, fmt: str = "auto") -> ConversionReport:
    """Load ``path`` into ``model``; returns the :class:`ConversionReport`.

    Raises :class:`CheckpointError` (naming the file) for unreadable/unsafe files, unknown layouts,
    shape mismatches, and weights of the model the file leaves unset (other than the final
    ``norm``, which fine-tuned VideoMAE checkpoints do not have).
    """
    path = Path(path)
    if fmt not in VIT_FORMATS:
        raise CheckpointError(f"{path}: the ViT backbone reads the {', '.join(VIT_FORMATS[1:])} layouts "
                              f"(model.pretrained_format: {', '.join(VIT_FORMATS)}), not {fmt!r}")
    sd = _unwrap(read_weights(path))
    if not sd:
        raise CheckpointError(f"{path}: no tensors found")
    if fmt == "auto":
        fmt = _detect(sd) or ""
        if not fmt:
            raise CheckpointError(f"{path}: cannot tell the checkpoint layout from its keys (e.g. "
                                  f"{', '.join(list(sd)[:3])}); set model.pretrained_format")
    try:
        if fmt == "videomae":
            mapped, report = convert_videomae(sd, model)
        else:
            mapped, report = dict(sd), ConversionReport("bmvit", "bmvit")
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    want = model.state_dict()
    fitted = {}
    for key, value in mapped.items():
        if key not in want:
            report.unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(want[key].shape):
            raise CheckpointError(f"{path}: '{key}': checkpoint shape {tuple(value.shape)} does not fit the model's "
                                  f"{tuple(want[key].shape)} (a different ViT size?)")
        fitted[key] = value
    refuse_foreign_keys(path, report, "ViT", fmt)
    report.missing = [k for k in want if k not in fitted]
    report.converted = len(fitted)
    lacking = [k for k in report.missing if k not in _MAY_START_FRESH]
    if lacking:
        raise CheckpointError(f"{path}: checkpoint ({fmt} layout) lacks {len(lacking)} weights of the model, e.g. "
                              f"{', '.join(lacking[:4])}")
    model.load_state_dict(fitted, strict=False)
    return report
