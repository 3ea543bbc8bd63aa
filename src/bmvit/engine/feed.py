"""Feeding the device during training: the loader, the host-to-device copy, the autocast dtype.

The loader yields uint8 clips (pinned on CUDA, persistent workers prefetching four batches each);
they are copied with ``non_blocking`` and normalized (and colour-jittered) on the device by
:func:`bmvit.data.transforms.normalize_clips`. ``train.amp`` (bf16 in the paper configs) runs the
forward under autocast on CUDA; on the CPU it is ignored (fp32). Loader workers ignore SIGINT and
outlive a SIGTERM by a minute: the main process decides how a run stops (:mod:`bmvit.engine.stop`).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from bmvit.data.transforms import batch_colour, normalize_clips
from bmvit.engine.stop import defer_stop_signals

__all__ = ["amp_dtype", "make_loader", "to_device"]


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
                      prefetch_factor=prefetch if workers else None, worker_init_fn=defer_stop_signals,
                      generator=torch.Generator().manual_seed(seed))  # leaves the global RNG alone


def to_device(clips: torch.Tensor, targets: list[dict], device: torch.device, mean, std) -> tuple[torch.Tensor, list[dict]]:
    """A loader batch on ``device``: uint8 clips copied without blocking, then normalized (and
    colour-jittered) there: ``(B, 3, T, H, W)`` float32; targets' boxes/labels moved."""
    colour = batch_colour(targets)  # (B, 3) or None, from the CPU targets
    x = normalize_clips(clips.to(device, non_blocking=True), mean, std, targets, colour)
    targets = [{**t, "boxes": t["boxes"].to(device, non_blocking=True), "labels": t["labels"].to(device, non_blocking=True)}
               for t in targets]
    return x, targets
