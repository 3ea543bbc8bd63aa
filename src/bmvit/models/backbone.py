"""The backbone contract: what the detector, the trainer and the tools expect of a video backbone.

Three backbones fulfil it: :class:`~bmvit.models.mvit.MViT`, :class:`~bmvit.models.vit.ViT` and
:class:`~bmvit.models.hiera.Hiera` (``models/build.py:BACKBONES`` names them). A new one is one
module next to them (its layers may use :mod:`bmvit.models.layers` and
:mod:`bmvit.models.position`), its checkpoint converter in :mod:`bmvit.models.checkpoints`, and
one line in ``BACKBONES``; ``tests/test_backbone.py`` checks every entry against this contract.

=====================  ==========================================================================
``forward_features``   clip ``(B, 3, T, H, W)`` float, normalized with the input mean/std below ->
                       tokens ``(B, C, t, h, w)`` in row-major ``(t, h, w)`` order, after the
                       backbone's final norm, no class token. The key frame ``T/2`` maps to slice
                       ``t/2`` (docs/architecture.md, "Time").
``out_dim``            ``C``, the width the heads are built for.
``grid(T, H, W)``      ``(t, h, w)`` of ``forward_features`` for that clip size, without tensors
                       (config checks, FLOP counting, ONNX export).
``load_checkpoint``    ``(path, fmt="auto") -> ConversionReport``: initialize from a file in one of
                       the backbone's layouts (``model.pretrained_format``). A weight of the file
                       with no place in this backbone, a shape that does not fit, or a weight the
                       file leaves unset raises :class:`~bmvit.errors.CheckpointError` naming the
                       file and the key.
``blocks``             the transformer blocks as an ``nn.ModuleList`` named ``blocks``: parameter
                       names ``blocks.{i}.…`` are the layer ids of layer-wise lr decay
                       (:func:`layer_id`); parameters named after :data:`STEM` come before block 0.
``input_mean/std``     the per-channel (RGB, 0..1 scale) normalization the backbone's checkpoints
                       were trained with; a config initializing the backbone from such a checkpoint
                       sets ``data.mean``/``data.std`` to them (checked for the shipped configs).
=====================  ==========================================================================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from bmvit.models.checkpoints.files import ConversionReport

__all__ = ["BLOCK", "STEM", "Backbone", "layer_id"]

Shape3 = tuple[int, int, int]
RGB = tuple[float, float, float]

BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")  # a parameter of transformer block i
STEM = ("patch_embed", "cls_token", "pos_embed")  # parameters before the first block (layer 0)


@runtime_checkable
class Backbone(Protocol):
    """A video backbone (module docstring)."""

    out_dim: int
    blocks: nn.ModuleList
    input_mean: RGB
    input_std: RGB

    def forward_features(self, x: Tensor) -> Tensor: ...

    def grid(self, T: int, H: int, W: int) -> Shape3: ...

    def load_checkpoint(self, path: str | Path, fmt: str = "auto") -> ConversionReport: ...


def layer_id(name: str, depth: int) -> int:
    """Layer of a detector parameter ``name`` for layer-wise lr decay: 0 = the backbone's stem,
    ``i + 1`` = backbone block ``i`` (of ``depth``), ``depth + 1`` = everything after the blocks
    (final norm, heads)."""
    if not name.startswith("backbone."):
        return depth + 1
    m = BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    return 0 if any(s in name for s in STEM) else depth + 1
