"""Checkpoint converters of the backbones, side by side (docs/backbone.md).

* :mod:`~bmvit.models.checkpoints.files` — safe reading, the conversion report, and the rule every
  loader applies: a weight with no place in the chosen backbone is refused by name;
* :mod:`~bmvit.models.checkpoints.mvit` — MViTv2: bmvit ⇄ PySlowFast ⇄ torchvision;
* :mod:`~bmvit.models.checkpoints.videomae` — ViT: VideoMAE / VideoMAE V2 → bmvit;
* :mod:`~bmvit.models.checkpoints.hiera` — Hiera: official ⇄ bmvit.

Each backbone's ``load_checkpoint`` calls its converter's ``load_*_checkpoint``.
"""
