"""Detection over many videos in one command: which inputs, whose share, what is already done.

Inputs: :mod:`bmvit.inference.batch_inputs` (which files, folders, lists and URLs; video ids; what
identifies an input across runs).

Outputs of a batch in ``out``:

* ``out/<id>/``: the per-video files of ``bmvit detect`` (written by the caller's ``process``),
  then ``out/<id>/status.json``, written last and atomically: the input's :class:`Entry` plus the
  ``fingerprint`` of the settings that shaped the detections. A video is *complete* when that file
  says ``ok`` and every required output exists; a re-run skips it (``status: skipped`` in the
  index) unless ``overwrite`` or its input changed since (size, modification time: ``input_stamp``).
  Inputs are compared by :func:`~bmvit.inference.batch_inputs.input_key`. A complete video made with a different fingerprint stops the run
  with a :class:`~bmvit.errors.ConfigError` before anything is detected (never a silent mix).
* ``out/index.jsonl``: one :class:`Entry` per input, in input order.
* ``out/detections.csv``: the AVA rows of every ``ok``/``skipped`` video, in input order.

Sharding: under ``torchrun`` (``WORLD_SIZE > 1``) rank ``r`` processes inputs ``r, r + N, ...``;
the entries are gathered with ``all_gather_object`` (gloo on CPU, NCCL on CUDA) and rank 0 writes
the index and the merged CSV, which are therefore those of a single process.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bmvit.atomic import make_folder, output_error, write_text
from bmvit.errors import BmvitError, ConfigError, OutputError
from bmvit.inference.batch_inputs import VideoInput, expand_inputs, input_key, input_stamp, is_collection

__all__ = ["BatchRun", "Entry", "VideoInput", "clear_outputs", "expand_inputs", "gather_entries", "is_collection",
           "join_torchrun", "leave_torchrun", "shard", "write_merged"]  # expand_inputs, is_collection: batch_inputs'

STATUS_FILE = "status.json"
INDEX_FILE = "index.jsonl"
MERGED_CSV = "detections.csv"
OUTPUTS = ("detections.json", "detections.csv", "annotated.mp4", "cvat_annotations.xml", "explain")  # per video


def clear_outputs(folder: Path) -> None:
    """Remove the per-video outputs bmvit detect writes (:data:`OUTPUTS`) from ``folder``: a re-run
    with other options (no video, no --explain, fewer key frames) leaves none of the old ones behind."""
    for name in OUTPUTS:
        p = folder / name
        try:
            if p.is_dir() and not p.is_symlink():  # explain/: only its frame_*.png, then the folder if empty
                for png in p.glob("frame_*.png"):
                    png.unlink()
                with contextlib.suppress(OSError):
                    p.rmdir()
            else:
                p.unlink(missing_ok=True)
        except OSError as e:
            raise output_error(p, e) from None


@dataclass
class Entry:
    """One line of ``index.jsonl``."""

    id: str
    path: str
    status: str  # ok | failed | skipped
    error: str | None = None
    keyframes: int | None = None
    actors: int | None = None
    seconds: float | None = None  # wall time of this input (skipped: that of the run that made it)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["seconds"] is not None:
            d["seconds"] = round(d["seconds"], 3)
        return d


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s share of ``items``: every ``world``-th item from ``rank`` on."""
    return list(items[rank::world])


def read_status(folder: Path) -> dict | None:
    """The ``status.json`` of a video folder, or None if absent or unreadable (a half-written run)."""
    try:
        doc = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def join_torchrun(device: str) -> Dist:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); no-op without torchrun.

    The collective timeout is a week: ranks wait for the slowest share before the merge."""
    from bmvit.engine.distributed import torchrun_env

    env = torchrun_env()  # one clear line for a WORLD_SIZE without the rest of torchrun's variables
    world = env.world_size
    info = Dist(env.rank, world, env.local_rank)
    if world > 1:
        import torch.distributed as dist

        if device.startswith("cuda"):
            import torch

            torch.cuda.set_device(info.local_rank)  # NCCL's object collectives use the current device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(days=7))
    return info


def leave_torchrun() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_entries(entries: list[Entry], d: Dist) -> list[Entry]:
    """Every rank's entries (all ranks get all of them)."""
    if d.world == 1:
        return entries
    import torch.distributed as dist

    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, [e.to_dict() for e in entries])
    return [Entry(**e) for part in parts for e in part]


def write_merged(out: Path, inputs: Sequence[VideoInput], entries: Sequence[Entry]) -> tuple[Path, Path]:
    """``index.jsonl`` and the merged ``detections.csv`` (input order), each written atomically."""
    for name in (INDEX_FILE, MERGED_CSV):  # temporaries of a run killed while writing these
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    by_id = {e.id: e for e in entries}
    ordered = [by_id[i.id] for i in inputs if i.id in by_id]
    write_text(out / INDEX_FILE, "".join(json.dumps(e.to_dict()) + "\n" for e in ordered))
    rows = []
    for e in ordered:
        if e.status in ("ok", "skipped"):
            rows.append((out / e.id / MERGED_CSV).read_text(encoding="utf-8"))
    write_text(out / MERGED_CSV, "".join(rows))
    return out / INDEX_FILE, out / MERGED_CSV


ProcessFn = Callable[[VideoInput, Path, Callable[[int, int | None], None]], tuple[int, int]]


class BatchRun:
    """Process this rank's share of ``inputs`` into ``out``, skipping complete videos (module docstring).

    ``process(inp, folder, on_frame) -> (key frames, actors)`` writes the outputs of one input into
    ``folder`` and reports decoding progress through ``on_frame(frames_done, total_or_None)``;
    ``required`` are the files ``folder`` must hold for a video to count as complete;
    ``fingerprint`` the settings that shaped the detections (JSON-able)."""

    def __init__(self, out: Path, inputs: Sequence[VideoInput], fingerprint: dict, required: Sequence[str],
                 overwrite: bool = False, on_error: str = "skip", dist: Dist | None = None) -> None:
        if on_error not in ("skip", "error"):
            raise ConfigError(f"--on-error: {on_error!r} is not one of skip, error")
        self.out, self.inputs, self.fingerprint = Path(out), list(inputs), fingerprint
        self.required, self.overwrite, self.on_error = list(required), overwrite, on_error
        self.dist = dist or Dist()
        self.share = shard(self.inputs, self.dist.rank, self.dist.world)
        self.error: BmvitError | None = None  # the input error that stopped this rank (on_error='error')

    def previous(self, inp: VideoInput) -> dict | None:
        """The status of a complete earlier run of ``inp`` (None: to be done). Raises ConfigError when
        that run used other settings."""
        folder = self.out / inp.id
        doc = read_status(folder)
        if self.overwrite or doc is None or doc.get("status") != "ok":
            return None
        written = set(doc.get("outputs") or ())  # what that run wrote; older files in the folder may be stale
        if not set(self.required) <= written or not all((folder / r).exists() for r in self.required):
            return None
        if doc.get("input_stamp") != input_stamp(inp.path):  # the input was replaced since: redo it
            return None
        if doc.get("key", input_key(doc.get("path") or "")) != input_key(inp.path):
            raise ConfigError(f"{folder / STATUS_FILE}: made from {doc.get('path')}, not {inp.path}; "
                              f"pass --overwrite to redo it or use another --out")
        if doc.get("fingerprint") != self.fingerprint:
            old = doc.get("fingerprint") or {}
            diff = [k for k in sorted(set(old) | set(self.fingerprint)) if old.get(k) != self.fingerprint.get(k)]
            what = ", ".join(f"{k} {old.get(k)!r} -> {self.fingerprint.get(k)!r}" for k in diff[:3])
            raise ConfigError(f"{folder / STATUS_FILE}: made with other settings ({what}); "
                              f"pass --overwrite to redo it or use another --out")
        return doc

    def run(self, process: ProcessFn, progress: bool = True) -> list[Entry]:
        """This rank's entries, in input order. Under ``on_error='error'`` the first bad input stops
        this rank's share: one process raises its error; under torchrun it is kept in :attr:`error`
        (raised after the ranks have met, so that no rank waits on one that left)."""
        done = {inp.id: self.previous(inp) for inp in self.share}  # settings checked before any work
        bar = None
        if progress:
            from tqdm import tqdm

            desc = "detect" if self.dist.world == 1 else f"detect rank {self.dist.rank}/{self.dist.world}"
            bar = tqdm(total=len(self.share), unit="video", desc=desc, file=sys.stderr, dynamic_ncols=True)
        entries = []
        try:
            for inp in self.share:
                prev = done[inp.id]
                if prev is not None:
                    entries.append(Entry(inp.id, inp.path, "skipped", None, prev.get("keyframes"),
                                         prev.get("actors"), prev.get("seconds")))
                else:
                    entries.append(self._one(inp, process, bar))
                if bar is not None:
                    bar.update(1)
                if self.error is not None:
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.error is not None and self.dist.world == 1:
            raise self.error
        return entries

    def _one(self, inp: VideoInput, process: ProcessFn, bar) -> Entry:
        folder = self.out / inp.id
        make_folder(folder)  # OutputError: a file in the way stops the run in one line
        (folder / STATUS_FILE).unlink(missing_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)

        def on_frame(n: int, total: int | None) -> None:
            if bar is not None and (n % 10 == 0 or n == total):
                bar.set_postfix_str(f"{inp.id}: frame {n}/{total or '?'}", refresh=True)

        t0 = time.perf_counter()
        try:
            keyframes, actors = process(inp, folder, on_frame)
            entry = Entry(inp.id, inp.path, "ok", None, keyframes, actors, time.perf_counter() - t0)
        except OutputError as e:  # the output folder, not the input: nothing later can be written either
            if self.dist.world == 1:
                raise
            self.error = e  # under torchrun: raised once the ranks have met (as on_error='error')
            return Entry(inp.id, inp.path, "failed", " ".join(str(e).split()), None, None, time.perf_counter() - t0)
        except BmvitError as e:
            entry = Entry(inp.id, inp.path, "failed", " ".join(str(e).split()), None, None, time.perf_counter() - t0)
            write_text(folder / STATUS_FILE, json.dumps({**entry.to_dict(), "fingerprint": self.fingerprint}, indent=1) + "\n")
            if self.on_error == "error":
                self.error = e
                return entry
            (bar.write if bar is not None else lambda m: print(m, file=sys.stderr))(f"failed [{inp.id}]: {entry.error}")
            return entry
        write_text(folder / STATUS_FILE, json.dumps({**entry.to_dict(), "fingerprint": self.fingerprint,
                                                     "outputs": self.required, "key": input_key(inp.path),
                                                     "input_stamp": input_stamp(inp.path)}, indent=1) + "\n")
        return entry
