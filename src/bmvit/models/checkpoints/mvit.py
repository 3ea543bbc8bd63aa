"""MViT checkpoints: import/export between bmvit's MViT and the reference MViTv2 layouts.

Two reference layouts are known: PySlowFast's ``MViT`` (``.pyth`` files, weights under
``model_state``) and torchvision's ``mvit_v2_s``. The key correspondence is one table,
:data:`KEY_TABLE`, read in both directions:

* :func:`from_slowfast` / :func:`from_torchvision` rename a reference state dict into bmvit keys,
  drop the classification head and, given a ``target`` (a model or its state dict), fit it: the
  relative-position tables are resized by the same linear interpolation the reference applies at
  run time (so a model built for another input size or with the last pool removed computes what
  the reference computes), keys the target lacks are dropped. The result loads with
  ``strict=True`` whenever the report lists no missing keys.
* :func:`to_slowfast` / :func:`to_torchvision` rename bmvit keys back.

* :func:`load_mvit_checkpoint` initializes an MViT from a file in any of the three layouts
  (``MViT.load_checkpoint``); weights the file leaves unset, or holds for another backbone, are refused.

Every conversion returns a :class:`ConvertedStateDict` (a plain ``dict``) whose ``report`` lists
dropped, unexpected, missing and resized keys. Files are read with ``torch.load(weights_only=True)``
or safetensors only (:mod:`bmvit.models.checkpoints.files`): an arbitrary pickled object is refused
with a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from bmvit.errors import CheckpointError
from bmvit.models.checkpoints.files import (
    ConversionReport,
    ConvertedStateDict,
    read_state_dict,
    refuse_foreign_keys,
    unwrap,
)
from bmvit.models.position import interpolate_rel_pos

FORMATS = ("bmvit", "slowfast", "torchvision")

# One row per parameter kind: (bmvit key, PySlowFast key, torchvision key).
# Placeholders: {i} block index, {p} weight|bias, {x} q|k|v, {a} t|h|w.
KEY_TABLE: tuple[tuple[str, str, str], ...] = (
    ("patch_embed.{p}", "patch_embed.proj.{p}", "conv_proj.{p}"),
    ("cls_token", "cls_token", "pos_encoding.class_token"),
    ("blocks.{i}.norm1.{p}", "blocks.{i}.norm1.{p}", "blocks.{i}.norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.project.0.{p}"),
    ("blocks.{i}.attn.pool_{x}.pool.weight", "blocks.{i}.attn.pool_{x}.weight", "blocks.{i}.attn.pool_{x}.pool.weight"),
    ("blocks.{i}.attn.pool_{x}.norm.{p}", "blocks.{i}.attn.norm_{x}.{p}", "blocks.{i}.attn.pool_{x}.norm_act.0.{p}"),
    ("blocks.{i}.attn.rel_pos_{a}", "blocks.{i}.attn.rel_pos_{a}", "blocks.{i}.attn.rel_pos_{a}"),
    ("blocks.{i}.norm2.{p}", "blocks.{i}.norm2.{p}", "blocks.{i}.norm2.{p}"),
    ("blocks.{i}.mlp.0.{p}", "blocks.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.0.{p}"),
    ("blocks.{i}.mlp.2.{p}", "blocks.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.3.{p}"),
    ("blocks.{i}.proj.{p}", "blocks.{i}.proj.{p}", "blocks.{i}.project.{p}"),
    ("norm.{p}", "norm.{p}", "norm.{p}"),
)
# Reference keys dropped on purpose: the Kinetics classification head.
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {"slowfast": ("head.",), "torchvision": ("head.",), "bmvit": ()}
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "x": r"(?P<x>[qkv])", "a": r"(?P<a>[thw])"}
_COLUMN = {"bmvit": 0, "slowfast": 1, "torchvision": 2}
_REL_POS = re.compile(r"(^|\.)rel_pos_[thw]$")


def _compile(pattern: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w)\}", pattern):
        out += re.escape(pattern[pos : m.start()]) + _GROUPS[m.group(1)]
        pos = m.end()
    return re.compile(out + re.escape(pattern[pos:]) + "$")


_RULES = [tuple(_compile(p) for p in row) for row in KEY_TABLE]


def map_key(key: str, src: str, dst: str) -> str | None:
    """Translate one parameter name between layouts (``bmvit``/``slowfast``/``torchvision``); None if unknown."""
    si, di = _COLUMN[src], _COLUMN[dst]
    for rules, row in zip(_RULES, KEY_TABLE):
        m = rules[si].match(key)
        if m:
            return row[di].format(**m.groupdict())
    return None


def _cls_shape(t: Tensor, dst: str) -> Tensor:
    """torchvision stores the class token as ``(C,)``; bmvit and PySlowFast as ``(1, 1, C)``."""
    return t.reshape(-1) if dst == "torchvision" else t.reshape(1, 1, -1)


def _convert(sd: Mapping[str, Tensor], src: str, dst: str) -> ConvertedStateDict:
    out, report = ConvertedStateDict(), ConversionReport(src, dst)
    for key, value in sd.items():
        if src != "bmvit" and key.startswith("module."):  # saved from DistributedDataParallel
            key = key[len("module."):]
        if key.startswith(HEAD_PREFIXES[src]):
            report.dropped.append(key)
            continue
        new = map_key(key, src, dst)
        if new is None:
            report.unexpected.append(key)
            continue
        out[new] = _cls_shape(value, dst) if new in ("cls_token", "pos_encoding.class_token") else value
    report.converted = len(out)
    out.report = report
    return out


def fit_to(sd: ConvertedStateDict | Mapping[str, Tensor], target: nn.Module | Mapping[str, Tensor]) -> ConvertedStateDict:
    """Fit a bmvit-layout state dict to ``target`` (a model or its state dict).

    Relative-position tables of another length are interpolated; keys the target lacks are
    dropped (reported as unexpected), keys it needs but ``sd`` lacks are reported as missing. Any
    other shape mismatch raises :class:`CheckpointError` naming the key.
    """
    shapes = {k: tuple(v.shape) for k, v in (target.state_dict() if isinstance(target, nn.Module) else target).items()}
    report = getattr(sd, "report", None) or ConversionReport("bmvit", "bmvit")
    out = ConvertedStateDict()
    for key, value in sd.items():
        if key not in shapes:
            report.unexpected.append(key)
            continue
        want = shapes[key]
        if tuple(value.shape) != want:
            if _REL_POS.search(key) and value.ndim == 2 and value.shape[1] == want[1]:
                report.resized.append((key, list(value.shape), list(want)))
                value = interpolate_rel_pos(value.float(), want[0]).to(value.dtype).contiguous()
            else:
                raise CheckpointError(f"'{key}': checkpoint shape {tuple(value.shape)} does not fit the model's {want} "
                                      "(different architecture?)")
        out[key] = value
    report.missing.extend(k for k in shapes if k not in out)
    report.converted = len(out)
    out.report = report
    return out


def from_slowfast(sd: Mapping[str, Tensor], target: nn.Module | Mapping[str, Tensor] | None = None) -> ConvertedStateDict:
    """PySlowFast MViTv2 state dict (``model_state`` of a ``.pyth``) -> bmvit keys; fitted to ``target`` if given."""
    out = _convert(unwrap(sd), "slowfast", "bmvit")
    return fit_to(out, target) if target is not None else out


def from_torchvision(sd: Mapping[str, Tensor], target: nn.Module | Mapping[str, Tensor] | None = None) -> ConvertedStateDict:
    """torchvision ``mvit_v2_s`` state dict -> bmvit keys; fitted to ``target`` if given."""
    out = _convert(unwrap(sd), "torchvision", "bmvit")
    return fit_to(out, target) if target is not None else out


def to_slowfast(sd: Mapping[str, Tensor]) -> ConvertedStateDict:
    """bmvit backbone state dict -> PySlowFast keys (no classification head)."""
    return _convert(sd, "bmvit", "slowfast")


def to_torchvision(sd: Mapping[str, Tensor]) -> ConvertedStateDict:
    """bmvit backbone state dict -> torchvision ``mvit_v2_s`` keys (no classification head)."""
    return _convert(sd, "bmvit", "torchvision")


def convert(sd: Mapping[str, Tensor], fmt: str, target: nn.Module | Mapping[str, Tensor] | None = None) -> ConvertedStateDict:
    """Dispatch on ``fmt`` (``bmvit``, ``slowfast``, ``torchvision``)."""
    if fmt == "slowfast":
        return from_slowfast(sd, target)
    if fmt == "torchvision":
        return from_torchvision(sd, target)
    out = ConvertedStateDict(unwrap(sd))
    out.report = ConversionReport("bmvit", "bmvit", converted=len(out))
    return fit_to(out, target) if target is not None else out


def detect_format(sd: Mapping[str, Tensor]) -> str | None:
    """Guess the layout of a state dict from its keys."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd]
    if any(k.startswith("conv_proj.") or k.startswith("pos_encoding.") for k in keys):
        return "torchvision"
    if any(k.startswith("patch_embed.proj.") for k in keys):
        return "slowfast"
    if any(k.startswith("patch_embed.") for k in keys):
        return "bmvit"
    return None


def read_checkpoint(path: str | Path, fmt: str = "auto") -> tuple[dict[str, Tensor], str]:
    """Read weights from ``path`` safely (:func:`~bmvit.models.checkpoints.files.read_state_dict`);
    returns ``(state_dict, format)``.

    A bmvit detector checkpoint contributes its ``backbone.*`` weights. ``fmt="auto"`` guesses the
    layout from the keys.
    """
    path = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    tensors = read_state_dict(path)
    found = detect_format(tensors)
    if fmt == "auto":
        if found is None:
            raise CheckpointError(f"{path}: cannot tell the checkpoint layout from its keys; pass the format "
                                  f"({', '.join(FORMATS)}) explicitly")
        fmt = found
    return tensors, fmt


def load_mvit_checkpoint(model: nn.Module, path: str | Path, fmt: str = "auto") -> ConversionReport:
    """Initialize ``model`` (a bmvit MViT) from a checkpoint file in any known layout.

    Raises :class:`CheckpointError` when the checkpoint holds weights the model does not have
    (naming the first), or leaves parameters of the model unset.
    """
    sd, fmt = read_checkpoint(path, fmt)
    try:
        fitted = convert(sd, fmt, target=model)
    except CheckpointError as e:  # a shape that does not fit: the message names the key, add the file
        raise CheckpointError(f"{path}: {e}") from None
    refuse_foreign_keys(path, fitted.report, "MViT", fmt)
    if fitted.report.missing:
        raise CheckpointError(f"{path}: checkpoint ({fmt} layout) lacks {len(fitted.report.missing)} weights of the "
                              f"model, e.g. {', '.join(fitted.report.missing[:4])}")
    model.load_state_dict(fitted, strict=True)
    return fitted.report


def report_json(report: ConversionReport) -> str:
    return json.dumps(report.to_dict())
