"""Checkpoints: model weights in safetensors (with the resolved config in the metadata), written
atomically (temp file + rename). Nothing is ever unpickled from a model file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from bmvit.config import Config, _apply, to_dict
from bmvit.errors import CheckpointError


def save_weights(path: str | Path, model: torch.nn.Module, cfg: Config, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(to_dict(cfg)), **{k: json.dumps(v) for k, v in (meta or {}).items()}}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict]:
    """Read a checkpoint written by :func:`save_weights`: ``(state_dict, config, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if "config" not in metadata:
        raise CheckpointError(f"{path}: checkpoint has no embedded bmvit config (metadata key 'config')")
    cfg = Config()
    _apply(cfg, json.loads(metadata["config"]), "", f"{path} (embedded config): ")
    meta = {k: json.loads(v) for k, v in metadata.items() if k != "config"}
    return state, cfg, meta
