"""Checkpoints: model weights in safetensors (with the resolved config in the metadata), written
atomically (temp file + rename), read back, and loaded into a resumed run (settings that changed
since are named). Nothing is ever unpickled from a model file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from bmvit.atomic import atomic_output, output_error
from bmvit.config import Config, _apply, to_dict
from bmvit.errors import CheckpointError

if TYPE_CHECKING:
    from bmvit.engine.state import Resumed


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
    if path.is_dir():  # a run folder or a checkpoint folder: name the file it holds
        inside = [p for p in (path / "model.safetensors", path / "best.safetensors") if p.is_file()]
        hint = f"; did you mean {inside[0]}?" if inside else "; expected a model.safetensors file"
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        metadata = _metadata(path)
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


def _metadata(path: Path) -> dict[str, str]:
    """The safetensors header's metadata (no tensor is read)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_weights_and_optimizer(resumed: Resumed, cfg: Config, model, opt, is_main: bool) -> None:
    """Load a checkpoint's weights and optimizer state; settings that differ from the checkpoint's are
    named in one line: a warning, or the :class:`CheckpointError` when the states do not fit."""
    changes = "; ".join(config_changes(resumed.path, cfg))
    try:
        model.load_state_dict(resumed.model)
        opt.load_state_dict(resumed.state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        why = changes or str(e).strip().splitlines()[0]
        raise CheckpointError(f"{resumed.path}: does not fit the configured model/optimizer ({why}); resume with "
                              f"the checkpoint's config or start over with --overwrite") from None
    if changes and is_main:
        print(f"resume: config differs from the checkpoint's ({changes}); continuing with the new values", file=sys.stderr)


def config_changes(checkpoint: Path, cfg: Config) -> list[str]:
    """``key: stored -> now`` for each setting of ``cfg`` that differs from the config stored in the
    checkpoint folder's ``model.safetensors`` (``train.out_dir`` aside: resuming into another folder is fine)."""
    try:
        stored = json.loads(_metadata(checkpoint / "model.safetensors").get("config", "{}"))
    except (OSError, ValueError, SafetensorError):
        return []
    now = json.loads(json.dumps(to_dict(cfg)))  # tuples as lists, as stored
    changes = []
    for section, values in now.items():
        old = stored.get(section, {}) if isinstance(stored, dict) else {}
        for key, value in values.items():
            if f"{section}.{key}" != "train.out_dir" and isinstance(old, dict) and key in old and old[key] != value:
                changes.append(f"{section}.{key}: {json.dumps(old[key])} -> {json.dumps(value)}")
    return changes


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
