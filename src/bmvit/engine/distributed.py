"""Process-group set-up for ``torchrun`` and the few collectives training needs.

Launch with torchrun (one process per GPU, or per CPU share with the gloo backend)::

    torchrun --nproc_per_node=8 -m bmvit train --config CFG
    torchrun --nnodes=2 --node_rank=R --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
             --nproc_per_node=8 -m bmvit train --config CFG

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything here is a
no-op for a single process. The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bmvit.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected a whole number (torchrun sets it)") from None


def torchrun_env() -> DistInfo:
    """Rank, local rank and world size from the variables torchrun sets (one process without them).

    A ``WORLD_SIZE`` > 1 without ``RANK``, ``MASTER_ADDR`` or ``MASTER_PORT`` (left over in a shell, a
    SLURM or Kubernetes job) is one :class:`ConfigError` line, not torch's traceback."""
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ConfigError(f"environment variable WORLD_SIZE={world}: expected 1 or more processes")
    if world == 1:
        return DistInfo(0, _env_int("LOCAL_RANK", 0), 1)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"environment variable WORLD_SIZE={world} is set but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not: launch with torchrun, or unset WORLD_SIZE")
    rank = _env_int("RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"environment variable RANK={rank}: expected 0..{world - 1} (WORLD_SIZE={world})")
    return DistInfo(rank, _env_int("LOCAL_RANK", 0), world)


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device.

    ``device_name`` is ``train.device`` (auto | cpu | cuda)."""
    env = torchrun_env()
    world, rank, local = env.world_size, env.rank, env.local_rank
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("'train.device': cuda requested but no CUDA device is available")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, local, world), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum of ``value`` over all processes (``value`` itself without a process group)."""
    return all_reduce_sums([value], device)[0]


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all processes, in one collective (``values`` without a group)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (e.g. 'stop: the loss is not finite')."""
    return all_reduce_sum(1.0 if flag else 0.0, device) > 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
