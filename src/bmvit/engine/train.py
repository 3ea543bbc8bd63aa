"""Training loop: data -> model -> Hungarian matching -> loss -> AdamW + cosine schedule.

One function, :func:`train`, owns a run folder ``train.out_dir``::

    config.yaml        the fully resolved config
    metrics.jsonl      one JSON object per log step / evaluation
    model.safetensors  final weights (+ config in metadata)

Optimizer: AdamW (paper: lr 1e-4, weight decay 1e-4; 1-D parameters — norms, biases, relative
position tables — get no weight decay, as in the MViTv2 reference), linear warm-up then cosine
decay per step.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.config import Config, save_config
from bmvit.data.ava import AvaClips, collate
from bmvit.data.transforms import ClipTransform
from bmvit.engine.checkpoint import save_weights
from bmvit.engine.evaluate import evaluate_split
from bmvit.errors import ConfigError
from bmvit.losses.criterion import SetCriterion
from bmvit.losses.matcher import HungarianMatcher, centre_cell_positives
from bmvit.models.build import build_detector


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'train.device': cuda requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int) -> None:
    torch.set_num_threads(n if n > 0 else max(1, len(os.sched_getaffinity(0))))


def make_dataset(cfg: Config, split: str, augment: bool = False, generator: torch.Generator | None = None) -> AvaClips:
    """The ``train`` or ``val`` split of ``cfg.data``; ``augment`` switches on training augmentation."""
    d = cfg.data
    transform = ClipTransform(size=d.size, train=augment, hflip_prob=d.hflip_prob, color_jitter=d.color_jitter,
                              generator=generator)
    ds = AvaClips(d.path(d.frames_dir), d.path(d.train_csv if split == "train" else d.val_csv), d.path(d.label_map),
                  d.num_frames, d.stride, transform, d.fps, d.first_second, d.cache_frames)
    index = ds.class_index
    for pair in d.hflip_swap:
        if len(pair) != 2 or any(a not in index for a in pair):
            raise ConfigError(f"'data.hflip_swap': {pair} must be two action ids of the label map ({sorted(index)})")
    transform.hflip_swap = [(index[a], index[b]) for a, b in d.hflip_swap]
    return ds


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or "rel_pos" in name or "cls_token" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(cfg: Config, progress: bool = True) -> dict:
    """Train per ``cfg``; returns the final metrics (including the validation mAP)."""
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    set_threads(cfg.train.threads)
    gen = seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)

    train_ds = make_dataset(cfg, "train", augment=True, generator=gen)
    val_ds = make_dataset(cfg, "val")
    model = build_detector(cfg.model, cfg.data, len(train_ds.labels)).to(device)
    loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate, generator=gen, num_workers=cfg.data.num_workers)
    if len(loader) == 0:
        raise ConfigError(f"'train.batch_size' ({cfg.train.batch_size}) exceeds the {len(train_ds)} training key frames")
    total = cfg.train.max_steps or max(1, int(round(cfg.train.epochs * len(loader))))
    opt = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, cfg.train.warmup_steps, cfg.train.min_lr_ratio))
    matcher = HungarianMatcher(cfg.loss.cost_l1, cfg.loss.cost_giou, cfg.loss.cost_actor, cfg.loss.cost_action)
    criterion = SetCriterion(cfg.loss.actor, cfg.loss.action, cfg.loss.l1, cfg.loss.giou)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")

    metrics_path = out / "metrics.jsonl"
    metrics_file = open(metrics_path, "a")

    def log(record: dict) -> None:
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    eval_minutes = sorted(cfg.train.eval_at_minutes)
    val_gt = cfg.data.path(cfg.data.val_csv)
    start = time.perf_counter()
    eval_time = 0.0  # time spent in intermediate evaluations, excluded from the training clock
    step, epoch = 0, 0
    bar = tqdm(total=total, desc="train", disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)  # few lines in logs
    model.train()
    while step < total:
        for clips, targets in loader:
            if step >= total:
                break
            clips = clips.to(device, non_blocking=True)
            targets = [{**t, "boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs = model(clips)
            matches = matcher(outputs, targets)
            if cfg.loss.extra_positives == "centre_cell":
                matches = centre_cell_positives(matches, outputs["cells"], targets)
            num_actors = sum(len(t["boxes"]) for t in targets)
            losses = criterion(outputs, targets, matches, num_actors)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                raise FloatingPointError(f"non-finite loss at step {step} (terms: {', '.join(bad)})")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total:
                rec = {"step": step, "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                       "time_s": round(time.perf_counter() - start - eval_time, 2),
                       **{k: round(v.item(), 5) for k, v in losses.items()}}
                log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", actor=f"{rec['actor']:.3f}", action=f"{rec['action']:.3f}",
                                l1=f"{rec['l1']:.3f}", lr=f"{rec['lr']:.1e}")
            elapsed_min = (time.perf_counter() - start - eval_time) / 60
            if eval_minutes and elapsed_min >= eval_minutes[0]:
                eval_minutes.pop(0)
                t0 = time.perf_counter()
                res, _ = evaluate_split(model, val_ds, val_gt, cfg, device, progress=False)
                eval_time += time.perf_counter() - t0
                log({"step": step, "train_minutes": round(elapsed_min, 2), "val_frame_map": res.mean_ap})
                bar.write(f"step {step} ({elapsed_min:.1f} train-min): val frame-mAP@0.5 {res.mean_ap:.4f}")
            if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0:
                save_weights(out / "model.safetensors", model, cfg, {"step": step})
        epoch += 1
    bar.close()
    train_s = time.perf_counter() - start - eval_time
    save_weights(out / "model.safetensors", model, cfg, {"step": step})
    res, _ = evaluate_split(model, val_ds, val_gt, cfg, device, progress=progress)
    final = {"step": step, "train_minutes": round(train_s / 60, 2), "val_frame_map": res.mean_ap, "final": True}
    log(final)
    metrics_file.close()
    return final
