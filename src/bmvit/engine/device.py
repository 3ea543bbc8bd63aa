"""Where a training or evaluation process runs: its device (``train.device``) and its CPU threads
(``train.threads``). Shared by ``bmvit train`` and ``bmvit eval``."""

from __future__ import annotations

import os

import torch

from bmvit.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``train.device``: auto (CUDA when available, else CPU) | cpu | cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'train.device': cuda requested but no CUDA device is available")
    return torch.device(name)


def set_threads(n: int) -> None:
    """``n`` torch threads; 0 = the free cores shared among this machine's training processes."""
    if n <= 0:
        n = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
