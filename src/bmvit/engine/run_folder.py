"""The run folder ``train.out_dir`` of :func:`bmvit.engine.train.train`: what a start or a resume
does to it, and the metrics log (``metrics.jsonl``, optionally TensorBoard scalars) written into it.
The layout is described in :mod:`bmvit.engine.train`."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

from bmvit.atomic import output_error, write_text
from bmvit.engine.state import CKPT_DIR, Resumed, list_checkpoints, load_latest, load_path
from bmvit.errors import ConfigError


def prepare_run_folder(out: Path, resume: str | None, overwrite: bool, is_main: bool) -> Resumed | None:
    """Find the checkpoint to resume from, or make sure no earlier run is silently overwritten."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: continue the run in "
                          f"{out} (--resume) or discard it (--overwrite), not both")
    if is_main:
        remove_stale_temporaries(out)
    if resume:
        with warnings.catch_warnings(record=True) as skipped:  # each damaged checkpoint: one line, not a warning's two
            warnings.simplefilter("always")
            found = load_latest(out) if resume == "auto" else load_path(resume)
        for w in skipped if is_main else ():
            print(f"warning: {w.message}", file=sys.stderr)
        if found is None and is_main:
            print(f"resume: no intact checkpoint in {out / CKPT_DIR}; starting from scratch", file=sys.stderr)
        # Newer checkpoints of this run folder than the one resumed are set aside: with 'auto' they are
        # damaged; with a given older checkpoint of this run they belong to the abandoned continuation
        # (a later --resume auto would take them, and train.keep_checkpoints would keep them).
        same_run = found is not None and found.path.resolve().parent == (out / CKPT_DIR).resolve()
        if is_main and (resume == "auto" or same_run):
            for p in list_checkpoints(out):
                if found is None or int(p.name.split("_")[-1]) > int(found.path.name.split("_")[-1]):
                    set_aside(p, "damaged" if resume == "auto" else "abandoned")
        if found is None and is_main:  # a fresh start: the records of the run that left no checkpoint go
            truncate_metrics(out / "metrics.jsonl", 0)
        return found
    if list_checkpoints(out) and not overwrite:
        raise ConfigError(f"{out}: holds checkpoints of an earlier run; continue it with --resume auto, "
                          f"or start over with --overwrite (or choose another train.out_dir)")
    if overwrite and is_main:
        for sub in (CKPT_DIR, "eval"):  # eval/: the earlier run's final evaluation, not this run's
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("best.safetensors", "model.safetensors"):
            (out / name).unlink(missing_ok=True)
    if is_main:  # a fresh start (--overwrite, or a run killed before its first checkpoint): a fresh log
        truncate_metrics(out / "metrics.jsonl", 0)
    return None


def set_aside(ckpt: Path, why: str = "damaged") -> Path:
    """Rename a checkpoint folder the resumed run must not see to ``<why>_<name>[_N]`` beside it
    (``damaged``, or ``abandoned``: newer than an older checkpoint resumed by name). Never deleted:
    it may be a newer bmvit's format, or hold what a user wants to inspect; out of the way of the
    resumed run, which writes the same step names again, and of ``train.keep_checkpoints``."""
    dest, n = ckpt.with_name(f"{why}_{ckpt.name}"), 1
    while dest.exists():
        dest, n = ckpt.with_name(f"{why}_{ckpt.name}_{n}"), n + 1
    try:
        os.replace(ckpt, dest)
    except OSError as e:
        raise output_error(dest, e) from None
    print(f"resume: moved the {why} checkpoint {ckpt.name} to {dest} (delete it when no longer needed)",
          file=sys.stderr)
    return dest


def remove_stale_temporaries(out: Path) -> None:
    """Delete what a killed run left half-written: ``.<name>.<pid>.<random>.tmp`` files of
    :mod:`bmvit.atomic` in the run folder (and ``eval/``) and ``checkpoints/.tmp_step_*`` folders
    (each as large as the model; never read, since only complete names are)."""
    for folder in (out, out / "eval"):
        for p in folder.glob(".*.tmp") if folder.is_dir() else ():
            if p.is_file():
                p.unlink(missing_ok=True)
    if (out / CKPT_DIR).is_dir():
        for p in (out / CKPT_DIR).glob(".tmp_*"):
            shutil.rmtree(p, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records that a run resumed at ``step`` logs again: those of later steps, the final
    evaluation's, and a line torn by a kill mid-write (not a JSON object)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step", 0), int) and rec.get("step", 0) <= step \
                and not rec.get("final"):
            keep.append(line)
    write_text(path, "".join(line + "\n" for line in keep))


class MetricsLog:
    """Appends one JSON object per record to ``<out>/metrics.jsonl`` and, with ``tensorboard``, its
    numbers as scalars to ``<out>/tensorboard``; on processes other than the main one, nothing."""

    def __init__(self, out: Path, is_main: bool, tensorboard: bool) -> None:
        self.writer = _tensorboard(out) if tensorboard and is_main else None
        try:
            self.file = open(out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None
        except OSError as e:  # a folder of that name, no permission
            raise output_error(out / "metrics.jsonl", e) from None

    def __call__(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(_finite_or_null(record), allow_nan=False) + "\n")  # strict JSON
            self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def _finite_or_null(value):
    """``value`` with every NaN/inf float (a diverged step's loss terms) as ``None``: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("'train.tensorboard': needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(out / "tensorboard"))
