"""Resumable training checkpoints: ``<out_dir>/checkpoints/step_XXXXXXXX/``.

Each checkpoint is a folder holding

    model.safetensors   the trained weights (+ config in the metadata), as :mod:`checkpoint` writes
    ema.safetensors     the EMA weights, when EMA is on
    state.pt            optimizer, scheduler, grad-scaler, RNG states, data position, clocks
    manifest.json       SHA-256 of every file above; written last

It is written into a temporary folder and renamed into place, so a crash leaves either a
complete checkpoint or a ``.tmp`` folder that is ignored. On resume, the newest checkpoint whose
manifest matches its files and whose files load is used; a damaged one is reported with a
warning and skipped in favour of the previous. ``state.pt`` holds tensors and plain Python
values only and is read with ``torch.load(weights_only=True)``: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from bmvit.atomic import output_error
from bmvit.config import Config
from bmvit.engine.checkpoint import save_weights
from bmvit.errors import CheckpointError

CKPT_DIR = "checkpoints"
PREFIX = "step_"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """Every global generator training draws from (drop path, dropout, ...), as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunState:
    """Where a training run stands: saved in every checkpoint's ``state.pt`` (next to the optimizer,
    grad-scaler, EMA and RNG states, under the same keys as before this class existed, so older
    checkpoints resume) and restored from it."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # data position of the next micro-batch: epoch ...
    batch: int = 0  # ... and batch within it
    train_seconds: float = 0.0  # the training clock (periodic evaluations excluded)
    best_map: float = -1.0  # best periodic val frame-mAP so far (kept as best.safetensors)
    eval_minutes_left: list[float] = field(default_factory=list)  # train.eval_at_minutes still to come
    warmup_seconds: float | None = None  # the training clock when the warm-up ended (train.max_minutes' schedule)
    eval_due: bool = False  # a train.eval_every evaluation of this step, put off by a stop (engine/stop.py)

    def to_state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "train_seconds": self.train_seconds,
                "best_map": self.best_map, "eval_minutes_left": list(self.eval_minutes_left),
                "warmup_seconds": self.warmup_seconds, "eval_due": self.eval_due}

    @classmethod
    def from_state(cls, state: dict[str, Any], where: Path) -> RunState:
        """The run state of a checkpoint's ``state.pt`` (:class:`CheckpointError` naming what is missing)."""
        keys = ("step", "epoch", "batch", "train_seconds", "best_map", "eval_minutes_left")
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{where / 'state.pt'}: no {', '.join(missing)} in the training state (not a "
                                  f"checkpoint of this bmvit version); resume another checkpoint or start over "
                                  f"with --overwrite")
        warm = state.get("warmup_seconds")  # absent in checkpoints written before train.max_minutes
        return cls(int(state["step"]), int(state["epoch"]), int(state["batch"]), float(state["train_seconds"]),
                   float(state["best_map"]), [float(m) for m in state["eval_minutes_left"]],
                   None if warm is None else float(warm), bool(state.get("eval_due", False)))


@dataclass
class Resumed:
    """What :func:`load_latest` found: the folder, the weights and the training state dict."""

    path: Path
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, cfg: Config, state: dict[str, Any],
                    ema: torch.nn.Module | None = None, keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep`` (0: keep all).
    A folder that cannot be written (a file in the way, no permission, a full disk) is one
    :class:`~bmvit.errors.OutputError` line."""
    try:
        return _save_checkpoint(out_dir, step, model, cfg, state, ema, keep)
    except OSError as e:
        raise output_error(Path(out_dir) / CKPT_DIR / f"{PREFIX}{step:08d}", e) from None


def _save_checkpoint(out_dir, step, model, cfg, state, ema, keep) -> Path:
    root = Path(out_dir) / CKPT_DIR
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp_{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", model, cfg, {"step": step})
    if ema is not None:
        save_weights(tmp / "ema.safetensors", ema, cfg, {"step": step, "ema": True})
    torch.save(state, tmp / "state.pt")
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in files}}
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first (temporary folders excluded)."""
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify(folder: Path) -> Resumed:
    """Check one checkpoint folder against its manifest and load it; :class:`CheckpointError` if damaged."""
    man_path = folder / "manifest.json"
    try:
        manifest = json.loads(man_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{man_path}: missing or unreadable manifest ({e})") from None
    if not isinstance(files, dict) or not {"model.safetensors", "state.pt"} <= set(files):
        raise CheckpointError(f"{man_path}: 'files' must map model.safetensors, state.pt (and ema.safetensors) "
                              f"to their SHA-256")
    for name, digest in files.items():
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"{p}: listed in the manifest but missing")
        if _sha256(p) != digest:
            raise CheckpointError(f"{p}: checksum mismatch (file truncated or corrupted)")
    try:
        model = load_file(str(folder / "model.safetensors"))
        ema = load_file(str(folder / "ema.safetensors")) if "ema.safetensors" in files else None
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means 'damaged'
        raise CheckpointError(f"{folder}: cannot be loaded ({type(e).__name__}: {e})") from None
    return Resumed(folder, model, ema, state)


def load_latest(out_dir: str | Path) -> Resumed | None:
    """The newest intact checkpoint of a run folder, warning about each damaged one skipped."""
    for folder in reversed(list_checkpoints(out_dir)):
        try:
            return verify(folder)
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def load_path(path: str | Path) -> Resumed:
    """A specific checkpoint folder (``--resume PATH``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (expected {CKPT_DIR}/{PREFIX}XXXXXXXX)")
    if not (folder / "manifest.json").exists() and list_checkpoints(folder):  # a run folder, not one of its checkpoints
        raise CheckpointError(f"{folder}: a run folder, not a checkpoint folder; pass {list_checkpoints(folder)[-1]} "
                              f"or --resume auto with train.out_dir={folder}")
    return verify(folder)
