"""Checkpoints: model weights in safetensors (with the resolved config in the metadata), written
atomically (temp file + rename). Nothing is ever unpickled from a model file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from bmvit.atomic import atomic_output, output_error
from bmvit.config import Config, _apply, to_dict
from bmvit.errors import CheckpointError


def save_weights(path: str | Path, model: torch.nn.Module, cfg: Config, meta: dict | None = None) -> Path:
    """Write ``model``'s weights and ``cfg`` to ``path`` atomically (:mod:`bmvit.atomic`)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(to_dict(cfg)), **{k: json.dumps(v) for k, v in (meta or {}).items()}}
    with atomic_output(path) as tmp:
        try:
            save_file(state, str(tmp), metadata=metadata)
        except SafetensorError as e:  # safetensors reports I/O failures as its own error
            raise output_error(path, OSError(str(e))) from None
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
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e}){_foreign_hint(path)}") from None
    if "config" not in metadata:
        hint = (": it is a backbone written by `bmvit convert`; train a detector from it (model.pretrained)"
                if metadata.get("format") == "bmvit-mvit-backbone" else "; expected a model.safetensors of `bmvit train`")
        raise CheckpointError(f"{path}: checkpoint has no embedded bmvit config (metadata key 'config'){hint}")
    try:
        stored = json.loads(metadata["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: embedded config (metadata key 'config') is not valid JSON ({e})") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: embedded config (metadata key 'config') is not a mapping of sections")
    cfg = Config()
    _apply(cfg, stored, "", f"{path} (embedded config): ")
    meta = {k: _json_or_text(v) for k, v in metadata.items() if k != "config"}
    return state, cfg, meta


def _foreign_hint(path: Path) -> str:
    """Why a file that is not safetensors was given, when its first bytes tell (a torch.save file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return ""
    if head == b"PK" or head[:1] == b"\x80":  # torch.save's zip archive / a raw pickle
        return ("; it is a PyTorch (.pth / .pyth) or pickle file: a detector is the model.safetensors of `bmvit train`, "
                "a PySlowFast / torchvision backbone goes through `bmvit convert` and model.pretrained")
    return ""


def _json_or_text(value: str):
    """A metadata value as written by :func:`save_weights` (JSON), or the text itself (other writers)."""
    try:
        return json.loads(value)
    except ValueError:
        return value
