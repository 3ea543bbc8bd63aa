"""Training loop: data -> model -> Hungarian matching -> loss -> AdamW + cosine schedule.

:func:`train` is a short loop over a :class:`TrainingRun` — ``train_step()`` (matching, loss and
update through :class:`~bmvit.losses.criterion.SetCriterion`), ``maybe_log()``, ``maybe_evaluate()``,
``maybe_checkpoint()`` — whose position is a :class:`~bmvit.engine.state.RunState` (step, data
position, training clock, best mAP, evaluation marks left) saved in and restored from checkpoints.
It owns a run folder ``train.out_dir`` (:mod:`bmvit.engine.run_folder`)::

    config.yaml          the fully resolved config
    metrics.jsonl        one JSON object per log step / evaluation
    checkpoints/         resumable checkpoints (see :mod:`bmvit.engine.state`), newest K kept
    best.safetensors     weights of the best periodic evaluation (when there is one)
    model.safetensors    final weights (+ config in metadata); the EMA weights when EMA is on

Determinism and resumption: every random choice of the data pipeline is a function of
``(train.seed, epoch, position)`` (:mod:`bmvit.engine.sampler`) and the global generators are
saved in each checkpoint, so a run killed at any point and resumed with ``resume="auto"`` ends
with the same weights, bit for bit on CPU, as one that never stopped (unless a time budget,
``train.max_minutes``, binds: :mod:`bmvit.engine.clock`).

Distributed: under ``torchrun`` each process takes a slice of every global batch (per-process
``train.batch_size``) and the loss is normalized by the number of actors in the global batch,
so N processes follow the same trajectory as one process with N times the batch.
Gradient accumulation (``train.accum_steps``) does the same within a process: the micro-batches
of one optimizer step share one normalizer.

Device feeding (loader, non-blocking copies, on-device normalization, autocast):
:mod:`bmvit.engine.feed`. On CUDA and on the CPU the optimizer is fused AdamW. The step's one
remaining host synchronization is the Hungarian matcher's (its cost matrices go to scipy on the CPU).

Stopping: SIGTERM or Ctrl-C finishes the step under way, checkpoints it and raises
:class:`~bmvit.errors.Interrupted` (:mod:`bmvit.engine.stop`); every rank stops after the same step.

Non-finite losses (``train.nan_policy``): with the fused optimizer (CUDA and CPU; without EMA and fp16)
a step whose gradients are not finite is skipped *on the device* (the fused AdamW kernel's
``found_inf``: parameters, moments and step count untouched) and the host learns of it at the
next log step, checkpoint or evaluation (one read of the pending flags): ``stop`` then raises
naming the step, ``skip`` logs each skipped step. Elsewhere the loss is checked after each
micro-batch, as before.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bmvit.atomic import make_folder
from bmvit.config import Config, save_config
from bmvit.data.build import checked_mean_std, make_dataset
from bmvit.data.collate import collate_fn, valid_tokens
from bmvit.engine import distributed as dist
from bmvit.engine.checkpoint import load_weights_and_optimizer, save_weights
from bmvit.engine.device import set_threads
from bmvit.engine.ema import ModelEMA
from bmvit.engine.evaluate import evaluate_split, write_split_outputs
from bmvit.engine.feed import amp_dtype, make_loader, to_device
from bmvit.engine.clock import TrainClock, budget_progress
from bmvit.engine.optim import lr_factor, make_optimizer, set_lr
from bmvit.engine.sampler import MicroBatches, ResumableBatchSampler
from bmvit.engine.run_folder import MetricsLog, prepare_run_folder, truncate_metrics
from bmvit.engine.state import Resumed, RunState, rng_state, save_checkpoint, set_rng_state
from bmvit.engine.stop import StopRequest
from bmvit.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from bmvit.evaluation.evaluators import build_evaluator
from bmvit.losses.criterion import SetCriterion
from bmvit.models.build import build_detector


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def nonfinite_grads(params, device: torch.device) -> torch.Tensor:
    """0-dim float32 on ``device``: 1 when any gradient holds inf/NaN, else 0 (no host synchronization)."""
    found = torch.zeros((), dtype=torch.float32, device=device)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=device))
    return found


class TrainingRun:
    """One training run: what :func:`train` builds once (data, model, optimizer, criterion, run
    folder) and the steps it repeats. The state a checkpoint saves is :attr:`state` (a
    :class:`~bmvit.engine.state.RunState`) plus the optimizer, grad-scaler, EMA and RNG states."""

    def __init__(self, cfg: Config, progress: bool = True, resume: str | None = None, overwrite: bool = False) -> None:
        self.cfg, self.tc, self.progress = cfg, cfg.train, progress
        self.info, self.device = dist.init_distributed(self.tc.device)
        self.out = Path(self.tc.out_dir)
        resumed = prepare_run_folder(self.out, resume, overwrite, self.info.is_main)
        dist.barrier()
        if self.info.is_main:
            make_folder(self.out)  # a file there, a read-only parent: one line naming the folder
            save_config(cfg, self.out / "config.yaml")
        set_threads(self.tc.threads)
        seed_everything(self.tc.seed)
        if self.tc.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self._build(load_pretrained=resumed is None)
        self.state = RunState(eval_minutes_left=sorted(self.tc.eval_at_minutes))
        if resumed is not None:
            self._restore(resumed)
        self.net = self.model
        if self.info.enabled:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.tc.compile:
            self.net = torch.compile(self.net)
        self.log = MetricsLog(self.out, self.info.is_main, self.tc.tensorboard)
        self.stream = MicroBatches(self.loader, self.sampler, self.state.epoch, self.state.batch)
        self.clock = TrainClock(self.state.train_seconds)
        self.budget = 60.0 * self.tc.max_minutes  # seconds; 0: no time budget
        self.shared_seconds, self.out_of_time, self.lr_now = self.state.train_seconds, False, 0.0
        self.stop, self.stopping = StopRequest(), False  # SIGTERM / Ctrl-C: checkpoint and stop (engine/stop.py)
        self._tick()
        self.bar = tqdm(total=self.total, initial=self.state.step, desc="train", dynamic_ncols=True,
                        disable=not (progress and self.info.is_main),
                        mininterval=0.1 if sys.stderr.isatty() else 30.0)  # few lines in logs
        self.model.train()

    def _tick(self) -> None:
        """After each step (and at the start): under a time budget, rank 0's training clock for every
        rank, the warm-up's end on it, and whether the budget is spent (:mod:`bmvit.engine.clock`)."""
        if not self.budget:
            return
        self.shared_seconds = dist.broadcast_float(self.clock.seconds(), self.device)
        if self.state.warmup_seconds is None and self.state.step >= self.tc.warmup_steps:
            self.state.warmup_seconds = self.shared_seconds
        self.out_of_time = self.shared_seconds >= self.budget

    @property
    def done(self) -> bool:
        """All ``total`` steps taken, the time budget spent, or a stop requested by a signal."""
        return self.state.step >= self.total or self.out_of_time or self.stopping

    def _build(self, load_pretrained: bool) -> None:
        """Datasets, loader, model, optimizer, grad scaler, EMA and criterion (in this order: RNG draws)."""
        cfg, tc, info, device = self.cfg, self.tc, self.info, self.device
        self.train_ds = make_dataset(cfg, "train", augment=True)
        self.val_ds = make_dataset(cfg, "val")
        # eval.label_map, data.exclusions checked now, not by the first evaluation (maybe after training)
        build_evaluator(self.val_ds, cfg.data, cfg.eval, cfg.data.path(cfg.data.val_csv))
        self.model = build_detector(cfg.model, cfg.data, len(self.train_ds.labels), load_pretrained=load_pretrained).to(device)
        self.sampler = ResumableBatchSampler(len(self.train_ds), tc.batch_size, tc.seed, info.rank, info.world_size)
        if self.sampler.batches_per_epoch < tc.accum_steps:
            raise ConfigError(f"'train.batch_size' ({tc.batch_size}) x {info.world_size} process(es) x 'train.accum_steps' "
                              f"({tc.accum_steps}) exceeds the {len(self.train_ds)} training key frames")
        self.loader = make_loader(self.train_ds, self.sampler, collate_fn(cfg.data.resize), cfg.data.num_workers, device,
                                  tc.seed)
        self.mean, self.std = checked_mean_std(cfg.data).values()
        steps_per_epoch = self.sampler.batches_per_epoch / tc.accum_steps
        self.total = tc.max_steps or max(1, int(round(tc.epochs * steps_per_epoch)))
        self.opt = make_optimizer(self.model, tc.lr, tc.weight_decay, tc.layer_decay, device)
        self.autocast = amp_dtype(tc.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast == torch.float16)
        self.ema = ModelEMA(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        # skip non-finite steps on the device (fused AdamW's found_inf) instead of syncing per micro-batch
        self.sync_free = bool(self.opt.defaults.get("fused")) and self.ema is None and not self.scaler.is_enabled()
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, non-finite flag on the device) not yet read
        self.criterion = SetCriterion.from_config(cfg.loss)

    def _restore(self, resumed: Resumed) -> None:
        """Continue from a checkpoint: weights, optimizer, scaler, EMA, RNG and :class:`RunState`."""
        st = resumed.state
        missing = [k for k in ("optimizer", "scaler", "rng") if k not in st]
        if missing:
            raise CheckpointError(f"{resumed.path / 'state.pt'}: no {', '.join(missing)} in the training state; "
                                  f"resume another checkpoint or start over with --overwrite")
        self.state = RunState.from_state(st, resumed.path)
        # train.eval_at_minutes as configured now: its marks still ahead of the checkpoint's clock, and those
        # the run had reached but not yet evaluated (the same list when the config is unchanged)
        passed, left = self.state.train_seconds / 60, self.state.eval_minutes_left
        self.state.eval_minutes_left = [m for m in sorted(self.tc.eval_at_minutes) if m > passed or m in left]
        load_weights_and_optimizer(resumed, self.cfg, self.model, self.opt, self.info.is_main)
        self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and resumed.ema is not None:
            self.ema.module.load_state_dict(resumed.ema)
            self.ema.updates.fill_(st.get("ema_updates", 0))
        set_rng_state(st["rng"])
        if self.info.is_main:
            truncate_metrics(self.out / "metrics.jsonl", self.state.step)
            past = (f"; it is past the {self.total} steps configured: no step is taken, its weights are evaluated"
                    if self.state.step > self.total else "")
            print(f"resumed from {resumed.path} (step {self.state.step}/{self.total}, epoch {self.state.epoch}, "
                  f"batch {self.state.batch}){past}", file=sys.stderr)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step over ``train.accum_steps`` micro-batches (they share one normalizer);
        returns the detached loss terms summed over them (no host sync)."""
        tc, step = self.tc, self.state.step
        micro = [self.stream.next() for _ in range(tc.accum_steps)]
        n_local = sum(len(t["boxes"]) for _, targets in micro for t in targets)
        # the global actor count, and whether any rank was asked to stop (one collective)
        n_all, stops = dist.all_reduce_sums([n_local, float(self.stop.requested)], self.device)
        self.stopping = stops > 0  # every rank stops after this step
        norm = max(n_all, 1.0) / self.info.world_size  # DDP averages gradients
        used = budget_progress(self.shared_seconds, self.budget, self.state.warmup_seconds)  # 0 without a budget
        self.lr_now = tc.lr * lr_factor(step, self.total, tc.warmup_steps, tc.min_lr_ratio, used)
        set_lr(self.opt, self.lr_now, 1.0)
        self.opt.zero_grad(set_to_none=True)
        sums, bad = self._forward_backward(micro, norm)
        if self.sync_free:  # opt.step() below skips the update when a gradient is not finite
            self.opt.found_inf = nonfinite_grads(self.model.parameters(), self.device)
            self.pending.append((step + 1, self.opt.found_inf))
        if not self.sync_free and dist.broadcast_flag(bool(bad), self.device):  # sync-free: flags read later
            self._skip_step(bad)
        else:
            self._apply_update()
        self.state.step += 1
        self.bar.update(1)
        self._tick()
        return sums

    def _forward_backward(self, micro: list, norm: float) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Gradients of every micro-batch; returns the summed loss terms and the non-finite term names."""
        sums: dict[str, torch.Tensor] = {}  # detached loss terms summed over micro-batches
        bad: list[str] = []
        for k, (clips, targets) in enumerate(micro):
            clips, targets = to_device(clips, targets, self.device, self.mean, self.std)  # (B, 3, T, H, W) float32 normalized
            sync = contextlib.nullcontext() if (k == len(micro) - 1 or not self.info.enabled) else self.net.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
                    outputs = self.net(clips)
                valid = valid_tokens(outputs["cells"], targets)  # (B, L) padded batches (keep_aspect), else None
                losses = self.criterion(outputs, targets, norm, valid)
                if not self.sync_free and not torch.isfinite(losses["loss"]):  # a host sync; terms only on failure
                    bad += [name for name, v in losses.items() if name != "loss" and not torch.isfinite(v)] or ["loss"]
                self.scaler.scale(losses["loss"]).backward()
            for name, v in losses.items():
                sums[name] = sums.get(name, 0.0) + v.detach()
        return sums, bad

    def _skip_step(self, bad: list[str]) -> None:
        what = f"non-finite loss at step {self.state.step + 1} (terms: {', '.join(sorted(set(bad))) or 'on another rank'})"
        if self.tc.nan_policy == "stop":
            raise TrainingError(f"{what}; lower train.lr, set train.grad_clip, or train.nan_policy=skip")
        self.opt.zero_grad(set_to_none=True)
        if self.info.is_main:
            self.bar.write(f"warning: {what}; step skipped")
        self.log({"step": self.state.step + 1, "skipped": what})

    def _apply_update(self) -> None:
        if self.tc.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)

    def check_pending(self) -> None:
        """Read the device flags of the steps since the last read (one host sync; sync_free only)."""
        if not self.pending:
            return
        flags = torch.stack([f for _, f in self.pending]).tolist()
        bad_steps = [s for (s, _), f in zip(self.pending, flags) if f]
        self.pending.clear()
        for s in bad_steps:
            what = f"non-finite loss at step {s} (gradients not finite; the step was not applied)"
            if self.tc.nan_policy == "stop":
                raise TrainingError(f"{what}; lower train.lr, set train.grad_clip, or train.nan_policy=skip")
            if self.info.is_main:
                self.bar.write(f"warning: {what}; step skipped")
            self.log({"step": s, "skipped": what})

    def maybe_log(self, sums: dict[str, torch.Tensor]) -> None:
        """Every ``train.log_every`` steps and at the end: the loss terms of the step, lr and clock."""
        tc, step = self.tc, self.state.step
        if not (step % tc.log_every == 0 or self.done):
            return
        self.check_pending()
        terms = {k: v.item() for k, v in sums.items()}
        if self.info.enabled:  # the loss of the global batch: mean over processes of their (scaled) terms
            terms = {k: dist.all_reduce_sum(v, self.device) / self.info.world_size for k, v in terms.items()}
        rec = {"step": step, "epoch": self.stream.epoch,
               "lr": self.lr_now,
               "time_s": round(self.clock.seconds(), 2), **{k: round(v, 5) for k, v in terms.items()}}
        self.log(rec)
        self.bar.set_postfix(loss=f"{rec['loss']:.3f}", actor=f"{rec['actor']:.3f}", action=f"{rec['action']:.3f}",
                             l1=f"{rec['l1']:.3f}", lr=f"{rec['lr']:.1e}")

    def report_skipped_samples(self, epoch_before: int) -> None:
        """At an epoch end: how many unreadable samples ``data.on_error=skip`` replaced (all processes)."""
        if self.stream.epoch == epoch_before or not hasattr(self.train_ds, "take_count"):
            return
        skipped = int(dist.all_reduce_sum(self.train_ds.take_count(), self.device))
        if skipped and self.info.is_main:
            self.bar.write(f"epoch {epoch_before}: data.on_error=skip replaced {skipped} unreadable training "
                           f"sample(s) by the next ones (each one logged as a warning)")
            self.log({"step": self.state.step, "epoch": epoch_before, "skipped_samples": skipped})

    def maybe_evaluate(self) -> None:
        """Evaluate on val when a ``train.eval_at_minutes`` mark has passed or every ``train.eval_every`` steps."""
        tc, step, marks = self.tc, self.state.step, self.state.eval_minutes_left
        if self.stopping:  # a stop was requested: checkpoint now, evaluate after the resume (marks stay;
            self.state.eval_due = bool(tc.eval_every and step % tc.eval_every == 0 and step < self.total)  # owed)
            return
        minutes = self.clock.seconds() / 60
        due = False
        if marks:  # the same list on every rank: rank 0's clock decides (and pops the marks) for all,
            minutes = dist.broadcast_float(minutes, self.device)  # or one rank would wait in a collective alone
            due = minutes >= marks[0]
        if not (due or (tc.eval_every and step % tc.eval_every == 0 and step < self.total)):
            return
        while marks and minutes >= marks[0]:
            marks.pop(0)
        self._evaluate_now(minutes)

    def evaluate_owed(self) -> None:
        """After a resume: the ``train.eval_every`` evaluation that a stop put off (at this step)."""
        if self.state.eval_due:
            self.state.eval_due = False
            self._evaluate_now(self.clock.seconds() / 60)

    def _evaluate_now(self, minutes: float) -> None:
        step = self.state.step
        t0 = time.perf_counter()
        m = self.evaluate({"step": step, "train_minutes": round(minutes, 2)})
        self.clock.pause(time.perf_counter() - t0)
        self.bar.write(f"step {step} ({minutes:.1f} train-min): val frame-mAP@0.5 {m.mean_ap:.4f}; " + "; ".join(m.lines()))

    def evaluate(self, tag: dict):
        """A periodic evaluation, logged with ``tag``; a new best is saved as ``best.safetensors``."""
        self.check_pending()
        eval_model = self.ema.module if self.ema is not None else self.model
        res, _ = evaluate_split(eval_model, self.val_ds, self.cfg.data.path(self.cfg.data.val_csv), self.cfg, self.device,
                                progress=False)
        self.model.train()
        if self.info.is_main:  # every protocol's mAP and the actor metrics; the headline selects best.safetensors
            self.log({**tag, **res.metrics()})
            if res.mean_ap > self.state.best_map:
                self.state.best_map = res.mean_ap
                save_weights(self.out / "best.safetensors", eval_model, self.cfg,
                             {"step": self.state.step, "val_frame_map": self.state.best_map})
        return res

    def maybe_checkpoint(self, epoch_before: int) -> None:
        """Checkpoint every ``train.ckpt_every`` steps, at epoch ends (``train.ckpt_each_epoch``) and at the end."""
        tc, step = self.tc, self.state.step
        if (tc.ckpt_every and step % tc.ckpt_every == 0) or (tc.ckpt_each_epoch and self.stream.epoch != epoch_before) \
                or self.done:
            self.checkpoint()

    def checkpoint(self) -> None:
        self.check_pending()
        run = replace(self.state, epoch=self.stream.epoch, batch=self.stream.batch, train_seconds=self.clock.seconds())
        state = {**run.to_state(), "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": rng_state(), "world_size": self.info.world_size,
                 "ema_updates": int(self.ema.updates) if self.ema is not None else 0}
        if self.info.is_main:
            save_checkpoint(self.out, self.state.step, self.model, self.cfg, state,
                            self.ema.module if self.ema is not None else None, self.tc.keep_checkpoints)
        dist.barrier()

    def interrupt(self) -> None:
        """After the checkpoint of the step a signal stopped: :class:`Interrupted` with the way on."""
        self.check_pending()
        self.stream.close()  # the loader's workers end now, not at the interpreter's exit
        self.bar.close()
        self.log.close()
        signum = self.stop.signum or signal.SIGTERM  # another rank's request: reported as a SIGTERM
        ckpt = self.out / "checkpoints" / f"step_{self.state.step:08d}"
        dist.shutdown()
        raise Interrupted(f"stopped by {StopRequest.name(self.stop.signum)} after step {self.state.step} of "
                          f"{self.total}; checkpoint {ckpt}: run the same command with --resume auto to go on",
                          128 + int(signum))

    def finish(self) -> dict:
        """Final weights (the EMA's when on) and the final evaluation; closes the run.

        The evaluation's files go to ``out_dir/eval/`` as ``bmvit eval --run`` writes them
        (``detections_val.csv``, ``metrics_val.json``). Returns the final metrics (as logged), plus
        on the main process ``report`` (what ``bmvit eval`` prints) and ``detections`` (the rows,
        :class:`~bmvit.data.formats.ava.AvaRows`), neither of which is logged."""
        self.check_pending()
        self.bar.close()
        seconds = self.clock.seconds()
        if self.state.step < self.total and self.info.is_main:  # train.max_minutes ended it
            how = ("the lr schedule ended with it" if self.state.warmup_seconds is not None else
                   f"still in the warm-up ({self.tc.warmup_steps} steps): the lr never reached its cosine; "
                   f"give more minutes or fewer train.warmup_steps")
            print(f"time budget of {self.tc.max_minutes:g} training minutes spent after step {self.state.step} of "
                  f"{self.total} (train.max_minutes); {how}", file=sys.stderr)
        final_model = self.ema.module if self.ema is not None else self.model
        weights = self.out / "model.safetensors"
        if self.info.is_main:
            save_weights(weights, final_model, self.cfg, {"step": self.state.step})
        res, dets = evaluate_split(final_model, self.val_ds, self.cfg.data.path(self.cfg.data.val_csv), self.cfg,
                                   self.device, progress=self.progress and self.info.is_main)
        final = {"step": self.state.step, "train_minutes": round(seconds / 60, 2), **res.metrics(),
                 **({"stopped_by": "train.max_minutes"} if self.state.step < self.total else {}),
                 "val_frame_map": res.mean_ap, "final": True}  # returned raw (callers format it); logged NaN-safe
        self.log(final)
        self.log.close()
        dist.shutdown()
        if self.info.is_main:
            final = {**final, "report": write_split_outputs(self.out / "eval", weights, "val", res, dets),
                     "detections": dets}
        return final


def train(cfg: Config, progress: bool = True, resume: str | None = None, overwrite: bool = False) -> dict:
    """Train per ``cfg``; returns the final metrics (including the validation mAP).

    ``resume``: ``"auto"`` (newest intact checkpoint of ``train.out_dir``, or a fresh start if
    there is none) or a checkpoint folder. ``overwrite`` discards an earlier run's checkpoints;
    without it, a run folder that already holds checkpoints is refused.
    """
    run = TrainingRun(cfg, progress, resume, overwrite)
    run.stop.install()
    try:
        run.evaluate_owed()
        while not run.done:
            epoch_before = run.stream.epoch
            sums = run.train_step()
            run.maybe_log(sums)
            run.report_skipped_samples(epoch_before)
            run.maybe_evaluate()
            run.maybe_checkpoint(epoch_before)
    except BaseException:
        run.stream.close()  # persistent loader workers must not outlive an error (engine/stop.py)
        raise
    finally:
        run.stop.restore()
    if run.stopping:
        run.interrupt()
    return run.finish()
