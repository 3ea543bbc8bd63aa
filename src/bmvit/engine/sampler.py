"""A resumable, rank-aware batch sampler with per-sample augmentation seeds.

Training must resume mid-epoch without repeating or skipping a batch, and give bit-identical
results whether or not it was interrupted, and whatever the number of data-loader workers.
Both follow from making every random choice of the data pipeline a pure function of
``(seed, epoch, position)``:

* epoch ``e`` visits the dataset in the order ``randperm(n)`` drawn from a generator seeded with
  ``seed`` and ``e`` — no hidden generator state to save;
* the order is cut into *global* batches of ``batch_size * world_size`` samples (the last,
  incomplete one is dropped); rank ``r`` takes slice ``[r*B, (r+1)*B)`` of each, so N processes
  with per-rank batch B see exactly the samples of one process with batch N*B;
* every sample is yielded as ``(index, aug_seed)``; the dataset seeds its augmentation with
  ``aug_seed`` (see :class:`bmvit.data.clips.AvaClips`).

The position to resume from is ``(epoch, batch)``: :meth:`set_epoch` takes both;
:class:`MicroBatches` streams a loader over epochs and tracks that position for checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

_MIX = 0x9E3779B1  # odd constant: spreads (seed, epoch) over the generator's seed space


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * _MIX + epoch * 1_000_003 + 12345) % (2**63)


class ResumableBatchSampler:
    """Yields per-rank lists of ``(index, aug_seed)``; pass it as ``DataLoader(batch_sampler=...)``."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields batches ``start_batch, start_batch+1, ...`` of ``epoch``."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def order(self, epoch: int) -> torch.Tensor:
        """The global visiting order of ``epoch``: (n,) int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch).tolist()
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch=~self.epoch))
        aug = torch.randint(0, 2**62, (len(order),), generator=g).tolist()  # one seed per position
        gb = self.batch_size * self.world_size
        for k in range(self.start_batch, self.batches_per_epoch):
            lo = k * gb + self.rank * self.batch_size
            yield [(order[i], aug[i]) for i in range(lo, lo + self.batch_size)]


class MicroBatches:
    """Endless stream of ``(clips, targets)`` over epochs, tracking the position ``(epoch, batch)``
    of the *next* micro-batch so a checkpoint can resume exactly there."""

    def __init__(self, loader: Iterable, sampler: ResumableBatchSampler, epoch: int, batch: int) -> None:
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

    def close(self) -> None:
        """Stop the loader's worker processes now (a run that ends by an error: persistent workers
        would otherwise be left to Python's exit)."""
        shutdown = getattr(self._it, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()
        self._it = None
