"""Training loop: data -> model -> Hungarian matching -> loss -> AdamW + cosine schedule.

One function, :func:`train`, owns a run folder ``train.out_dir``::

    config.yaml          the fully resolved config
    metrics.jsonl        one JSON object per log step / evaluation
    checkpoints/         resumable checkpoints (see :mod:`bmvit.engine.state`), newest K kept
    best.safetensors     weights of the best periodic evaluation (when there is one)
    model.safetensors    final weights (+ config in metadata); the EMA weights when EMA is on

Determinism and resumption: every random choice of the data pipeline is a function of
``(train.seed, epoch, position)`` (:mod:`bmvit.engine.sampler`) and the global generators are
saved in each checkpoint, so a run killed at any point and resumed with ``resume="auto"`` ends
with the same weights, bit for bit on CPU, as one that never stopped.

Distributed: under ``torchrun`` each process takes a slice of every global batch (per-process
``train.batch_size``) and the loss is normalized by the number of actors in the global batch,
so N processes follow the same trajectory as one process with N times the batch.
Gradient accumulation (``train.accum_steps``) does the same within a process: the micro-batches
of one optimizer step share one normalizer.

Device feeding: the loader yields uint8 clips (pinned on CUDA, persistent workers prefetching
four batches each); they are copied with ``non_blocking`` and normalized (and
colour-jittered) on the device by :func:`bmvit.data.transforms.normalize_clips`. On CUDA the
optimizer is fused AdamW and ``train.amp`` (bf16 in the paper configs) runs the forward under
autocast; on the CPU ``train.amp`` is ignored (fp32). The step's one remaining host
synchronization is the Hungarian matcher's (its cost matrices go to scipy on the CPU).

Non-finite losses (``train.nan_policy``): with the fused optimizer (CUDA; without EMA and fp16)
a step whose gradients are not finite is skipped *on the device* (the fused AdamW kernel's
``found_inf``: parameters, moments and step count untouched) and the host learns of it at the
next log step, checkpoint or evaluation (one read of the pending flags): ``stop`` then raises
naming the step, ``skip`` logs each skipped step. Elsewhere the loss is checked after each
micro-batch, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.config import Config, save_config
from bmvit.data.clips import AvaClips
from bmvit.data.collate import collate_fn, valid_tokens
from bmvit.data.transforms import ClipTransform, batch_colour, normalize_clips
from bmvit.engine import distributed as dist
from bmvit.engine.checkpoint import save_weights
from bmvit.engine.ema import ModelEMA
from bmvit.engine.evaluate import evaluate_split
from bmvit.engine.optim import lr_factor, make_optimizer, set_lr
from bmvit.engine.sampler import ResumableBatchSampler
from bmvit.engine.state import CKPT_DIR, list_checkpoints, load_latest, load_path, rng_state, save_checkpoint, set_rng_state
from bmvit.errors import ConfigError, TrainingError
from bmvit.losses.criterion import SetCriterion
from bmvit.models.build import build_detector


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'train.device': cuda requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    """``n`` torch threads; 0 = the free cores shared among this machine's training processes."""
    if n <= 0:
        n = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)


def checked_mean_std(d) -> dict:
    """``mean``/``std`` keyword arguments of :class:`ClipTransform` from ``data.mean``/``data.std``,
    after checking them (3 per-channel values, std > 0; :class:`ConfigError` otherwise)."""
    for key in ("mean", "std"):
        v = getattr(d, key)
        if len(v) != 3 or (key == "std" and min(v) <= 0):
            raise ConfigError(f"'data.{key}': expected 3 per-channel (RGB) values{' > 0' if key == 'std' else ''}, "
                              f"got {v}")
    return {"mean": tuple(d.mean), "std": tuple(d.std)}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of ``train.amp`` on ``device``: bf16/fp16 on CUDA, ``None`` (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def make_loader(ds, sampler, collate, num_workers: int, device: torch.device, seed: int, prefetch: int = 4) -> DataLoader:
    """The training DataLoader: pinned batches on CUDA, persistent workers prefetching ``prefetch`` batches each."""
    workers = num_workers > 0
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers,
                      prefetch_factor=prefetch if workers else None,
                      generator=torch.Generator().manual_seed(seed))  # leaves the global RNG alone


def to_device(clips: torch.Tensor, targets: list[dict], device: torch.device, mean, std) -> tuple[torch.Tensor, list[dict]]:
    """A loader batch on ``device``: uint8 clips copied without blocking, then normalized (and
    colour-jittered) there: ``(B, 3, T, H, W)`` float32; targets' boxes/labels moved."""
    colour = batch_colour(targets)  # (B, 3) or None, from the CPU targets
    x = normalize_clips(clips.to(device, non_blocking=True), mean, std, targets, colour)
    targets = [{**t, "boxes": t["boxes"].to(device, non_blocking=True), "labels": t["labels"].to(device, non_blocking=True)}
               for t in targets]
    return x, targets


def nonfinite_grads(params, device: torch.device) -> torch.Tensor:
    """0-dim float32 on ``device``: 1 when any gradient holds inf/NaN, else 0 (no host synchronization)."""
    found = torch.zeros((), dtype=torch.float32, device=device)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=device))
    return found


def make_dataset(cfg: Config, split: str, augment: bool = False, generator: torch.Generator | None = None) -> AvaClips:
    """The ``train`` or ``val`` split of ``cfg.data``; ``augment`` switches on training augmentation.

    ``data.format`` / ``data.source`` pick the reader (:mod:`bmvit.data.build`): AVA layout
    (default) or ACT pkl (UCF101-24 / JHMDB51-21), from frame files or video files."""
    from bmvit.data.build import build_dataset

    d = cfg.data
    transform = ClipTransform(size=d.size, train=augment, hflip_prob=d.hflip_prob, color_jitter=d.color_jitter,
                              generator=generator, box_jitter=d.box_jitter, resize=d.resize,
                              short_side=(d.short_side[0], d.short_side[1]) if len(d.short_side) == 2 else (0, 0),
                              **checked_mean_std(d))
    ds = build_dataset(d, split, transform)
    index = ds.class_index
    for pair in d.hflip_swap:
        if len(pair) != 2 or any(a not in index for a in pair):
            raise ConfigError(f"'data.hflip_swap': {pair} must be two action ids of the label map ({sorted(index)})")
    transform.hflip_swap = [(index[a], index[b]) for a, b in d.hflip_swap]
    return ds


def _prepare_run_folder(out: Path, resume: str | None, overwrite: bool, is_main: bool):
    """Find the checkpoint to resume from, or make sure no earlier run is silently overwritten."""
    if resume:
        found = load_latest(out) if resume == "auto" else load_path(resume)
        if found is None and is_main:
            print(f"resume: no intact checkpoint in {out / CKPT_DIR}; starting from scratch", file=sys.stderr)
        if resume == "auto" and is_main:  # everything newer than the one found is damaged: clear it away
            for p in list_checkpoints(out):
                if found is None or int(p.name.split("_")[-1]) > found.state["step"]:
                    shutil.rmtree(p, ignore_errors=True)
        return found
    if list_checkpoints(out) and not overwrite:
        raise ConfigError(f"{out}: holds checkpoints of an earlier run; continue it with --resume auto, "
                          f"or start over with --overwrite (or choose another train.out_dir)")
    if overwrite and is_main:
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
        for name in ("metrics.jsonl", "best.safetensors", "model.safetensors"):
            (out / name).unlink(missing_ok=True)
    return None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (they are redone after a resume)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


class _MicroBatches:
    """Endless stream of ``(clips, targets)`` over epochs, tracking the position ``(epoch, batch)``
    of the *next* micro-batch so a checkpoint can resume exactly there."""

    def __init__(self, loader: DataLoader, sampler: ResumableBatchSampler, epoch: int, batch: int) -> None:
        self.loader, self.sampler = loader, sampler
        self.epoch, self.batch = epoch, batch
        self._it = None

    def next(self):
        if self._it is None:
            self.sampler.set_epoch(self.epoch, self.batch)
            self._it = iter(self.loader)
        item = next(self._it, None)
        if item is None:  # epoch exhausted
            self.epoch, self.batch, self._it = self.epoch + 1, 0, None
            return self.next()
        self.batch += 1
        if self.batch == self.sampler.batches_per_epoch:
            self.epoch, self.batch, self._it = self.epoch + 1, 0, None
        return item


def train(cfg: Config, progress: bool = True, resume: str | None = None, overwrite: bool = False) -> dict:
    """Train per ``cfg``; returns the final metrics (including the validation mAP).

    ``resume``: ``"auto"`` (newest intact checkpoint of ``train.out_dir``, or a fresh start if
    there is none) or a checkpoint folder. ``overwrite`` discards an earlier run's checkpoints;
    without it, a run folder that already holds checkpoints is refused.
    """
    tc = cfg.train
    info, device = dist.init_distributed(tc.device)
    out = Path(tc.out_dir)
    resumed = _prepare_run_folder(out, resume, overwrite, info.is_main)
    dist.barrier()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_threads(tc.threads)
    seed_everything(tc.seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    train_ds = make_dataset(cfg, "train", augment=True)
    val_ds = make_dataset(cfg, "val")
    model = build_detector(cfg.model, cfg.data, len(train_ds.labels), load_pretrained=resumed is None).to(device)
    sampler = ResumableBatchSampler(len(train_ds), tc.batch_size, tc.seed, info.rank, info.world_size)
    if sampler.batches_per_epoch < tc.accum_steps:
        raise ConfigError(f"'train.batch_size' ({tc.batch_size}) x {info.world_size} process(es) x 'train.accum_steps' "
                          f"({tc.accum_steps}) exceeds the {len(train_ds)} training key frames")
    loader = make_loader(train_ds, sampler, collate_fn(cfg.data.resize), cfg.data.num_workers, device, tc.seed)
    mean, std = checked_mean_std(cfg.data).values()
    steps_per_epoch = sampler.batches_per_epoch / tc.accum_steps
    total = tc.max_steps or max(1, int(round(tc.epochs * steps_per_epoch)))
    opt = make_optimizer(model, tc.lr, tc.weight_decay, tc.layer_decay, device)
    autocast = amp_dtype(tc.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    ema = ModelEMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    # skip non-finite steps on the device (fused AdamW's found_inf) instead of syncing per micro-batch
    sync_free = bool(opt.defaults.get("fused")) and ema is None and not scaler.is_enabled()
    pending: list[tuple[int, torch.Tensor]] = []  # (step, non-finite flag on the device) not yet read
    criterion = SetCriterion.from_config(cfg.loss)

    step, epoch, batch, train_s, best = 0, 0, 0, 0.0, -1.0
    eval_minutes = sorted(tc.eval_at_minutes)
    if resumed is not None:
        st = resumed.state
        model.load_state_dict(resumed.model)
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        if ema is not None and resumed.ema is not None:
            ema.module.load_state_dict(resumed.ema)
            ema.updates.fill_(st.get("ema_updates", 0))
        set_rng_state(st["rng"])
        step, epoch, batch = st["step"], st["epoch"], st["batch"]
        train_s, best, eval_minutes = st["train_seconds"], st["best_map"], list(st["eval_minutes_left"])
        if info.is_main:
            _truncate_metrics(out / "metrics.jsonl", step)
            print(f"resumed from {resumed.path} (step {step}/{total}, epoch {epoch}, batch {batch})", file=sys.stderr)

    net = model
    if info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        net = torch.compile(net)
    writer = _tensorboard(out) if tc.tensorboard and info.is_main else None
    metrics_file = open(out / "metrics.jsonl", "a") if info.is_main else None

    def log(record: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(k, v, record["step"])

    def check_pending() -> None:
        """Read the device flags of the steps since the last read (one host sync; sync_free only)."""
        if not pending:
            return
        flags = torch.stack([f for _, f in pending]).tolist()
        bad_steps = [s for (s, _), f in zip(pending, flags) if f]
        pending.clear()
        for s in bad_steps:
            what = f"non-finite loss at step {s} (gradients not finite; the step was not applied)"
            if tc.nan_policy == "stop":
                raise TrainingError(f"{what}; lower train.lr, set train.grad_clip, or train.nan_policy=skip")
            if info.is_main:
                bar.write(f"warning: {what}; step skipped")
            log({"step": s, "skipped": what})

    def checkpoint() -> None:
        check_pending()
        state = {"step": step, "epoch": stream.epoch, "batch": stream.batch, "optimizer": opt.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng_state(), "train_seconds": train_s + clock(),
                 "best_map": best, "eval_minutes_left": list(eval_minutes), "world_size": info.world_size,
                 "ema_updates": int(ema.updates) if ema is not None else 0}
        if info.is_main:
            save_checkpoint(out, step, model, cfg, state, ema.module if ema is not None else None, tc.keep_checkpoints)
        dist.barrier()

    def evaluate(tag: dict):
        nonlocal best
        check_pending()
        eval_model = ema.module if ema is not None else model
        res, _ = evaluate_split(eval_model, val_ds, cfg.data.path(cfg.data.val_csv), cfg, device, progress=False)
        model.train()
        if info.is_main:  # every protocol's mAP and the actor metrics; the headline selects best.safetensors
            log({**tag, **res.metrics(), "val_frame_map": res.mean_ap})
            if res.mean_ap > best:
                best = res.mean_ap
                save_weights(out / "best.safetensors", eval_model, cfg, {"step": step, "val_frame_map": best})
        return res

    stream = _MicroBatches(loader, sampler, epoch, batch)
    start = time.perf_counter()
    eval_time = 0.0  # time spent in periodic evaluations, excluded from the training clock

    def clock() -> float:
        return time.perf_counter() - start - eval_time

    bar = tqdm(total=total, initial=step, desc="train", disable=not (progress and info.is_main), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)  # few lines in logs
    model.train()
    while step < total:
        epoch_before = stream.epoch
        micro = [stream.next() for _ in range(tc.accum_steps)]
        n_local = sum(len(t["boxes"]) for _, targets in micro for t in targets)
        norm = max(dist.all_reduce_sum(n_local, device), 1.0) / info.world_size  # DDP averages gradients
        set_lr(opt, tc.lr, lr_factor(step, total, tc.warmup_steps, tc.min_lr_ratio))
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}  # detached loss terms summed over micro-batches (no host sync)
        bad: list[str] = []
        for k, (clips, targets) in enumerate(micro):
            clips, targets = to_device(clips, targets, device, mean, std)  # (B, 3, T, H, W) float32 normalized
            sync = contextlib.nullcontext() if (k == len(micro) - 1 or not info.enabled) else net.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    outputs = net(clips)
                valid = valid_tokens(outputs["cells"], targets)  # (B, L) padded batches (keep_aspect), else None
                losses = criterion(outputs, targets, norm, valid)
                if not sync_free and not torch.isfinite(losses["loss"]):  # a host sync; terms only on failure
                    bad += [name for name, v in losses.items() if name != "loss" and not torch.isfinite(v)] or ["loss"]
                scaler.scale(losses["loss"]).backward()
            for name, v in losses.items():
                sums[name] = sums.get(name, 0.0) + v.detach()
        if sync_free:  # opt.step() below skips the update when a gradient is not finite
            opt.found_inf = nonfinite_grads(model.parameters(), device)
            pending.append((step + 1, opt.found_inf))
        if dist.broadcast_flag(bool(bad), device):
            what = f"non-finite loss at step {step + 1} (terms: {', '.join(sorted(set(bad))) or 'on another rank'})"
            if tc.nan_policy == "stop":
                raise TrainingError(f"{what}; lower train.lr, set train.grad_clip, or train.nan_policy=skip")
            opt.zero_grad(set_to_none=True)
            if info.is_main:
                bar.write(f"warning: {what}; step skipped")
            log({"step": step + 1, "skipped": what})
        else:
            if tc.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model)
        step += 1
        bar.update(1)
        if step % tc.log_every == 0 or step == total:
            check_pending()
            terms = {k: v.item() for k, v in sums.items()}
            if info.enabled:  # the loss of the global batch: mean over processes of their (scaled) terms
                terms = {k: dist.all_reduce_sum(v, device) / info.world_size for k, v in terms.items()}
            rec = {"step": step, "epoch": stream.epoch, "lr": tc.lr * lr_factor(step - 1, total, tc.warmup_steps, tc.min_lr_ratio),
                   "time_s": round(train_s + clock(), 2), **{k: round(v, 5) for k, v in terms.items()}}
            log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", actor=f"{rec['actor']:.3f}", action=f"{rec['action']:.3f}",
                            l1=f"{rec['l1']:.3f}", lr=f"{rec['lr']:.1e}")
        if stream.epoch != epoch_before and hasattr(train_ds, "take_count"):  # data.on_error=skip totals
            skipped = int(dist.all_reduce_sum(train_ds.take_count(), device))
            if skipped and info.is_main:
                bar.write(f"epoch {epoch_before}: data.on_error=skip replaced {skipped} unreadable training "
                          f"sample(s) by the next ones (each one logged as a warning)")
                log({"step": step, "epoch": epoch_before, "skipped_samples": skipped})
        minutes = (train_s + clock()) / 60
        due = bool(eval_minutes) and dist.broadcast_flag(minutes >= eval_minutes[0], device)
        if due or (tc.eval_every and step % tc.eval_every == 0 and step < total):
            while eval_minutes and minutes >= eval_minutes[0]:
                eval_minutes.pop(0)
            t0 = time.perf_counter()
            m = evaluate({"step": step, "train_minutes": round(minutes, 2)})
            eval_time += time.perf_counter() - t0
            bar.write(f"step {step} ({minutes:.1f} train-min): val frame-mAP@0.5 {m.mean_ap:.4f}; " + "; ".join(m.lines()))
        if (tc.ckpt_every and step % tc.ckpt_every == 0) or (tc.ckpt_each_epoch and stream.epoch != epoch_before) \
                or step == total:
            checkpoint()
    check_pending()
    bar.close()
    train_s += clock()
    final_model = ema.module if ema is not None else model
    if info.is_main:
        save_weights(out / "model.safetensors", final_model, cfg, {"step": step})
    res, _ = evaluate_split(final_model, val_ds, cfg.data.path(cfg.data.val_csv), cfg, device,
                            progress=progress and info.is_main)
    final = {"step": step, "train_minutes": round(train_s / 60, 2), **res.metrics(), "val_frame_map": res.mean_ap,
             "final": True}
    log(final)
    if metrics_file is not None:
        metrics_file.close()
    if writer is not None:
        writer.close()
    dist.shutdown()
    return final


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("'train.tensorboard': needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(out / "tensorboard"))
