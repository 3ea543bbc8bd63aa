"""The ``data.on_error`` policy: a bad input is an error, or a logged and counted skip.

Contract. ``error`` (default): the first bad input raises :class:`~bmvit.errors.DataError`
naming the file and line / key. ``skip``: each bad input is logged (logger ``bmvit.data``,
level WARNING) and counted, and the totals are printed — nothing is dropped silently.

Two places apply it:

* :class:`SkipLog` while annotations are read (a malformed CSV row, a bad tube, a video absent
  on disk): the offending rows/videos are left out and the count is printed once the split is
  read;
* :class:`SkipBadSamples` around a dataset, for what only shows when a clip is read (a missing
  or corrupt frame, a truncated video). In training (``substitute=True``) the next sample takes
  the place of a bad one, so batches keep their size; in evaluation the sample is returned
  with an all-zero clip and ``target["skipped"] = True``, so its ground truth still counts
  (as missed). :meth:`SkipBadSamples.take_count` returns the skips since the last call, over
  all data-loader workers, for the end-of-epoch line.

:class:`SkipBadSamples` offers exactly the members of :class:`~bmvit.data.clip_dataset.ClipDataset`
(those of the dataset it wraps); :func:`reader_of` gives the wrapped reader itself, for the code
that needs what only one reader has (the ACT pickle's tubes, a frames folder).
"""

from __future__ import annotations

import logging
import sys

import torch
from torch.utils.data import Dataset, get_worker_info

from bmvit.boxes import xyxy_to_cxcywh
from bmvit.data.clip_dataset import ClipDataset
from bmvit.errors import ConfigError, DataError

__all__ = ["POLICIES", "SkipBadSamples", "SkipLog", "reader_of"]

POLICIES = ("error", "skip")
_SLOTS = 257  # main process + up to 256 loader workers per process
log = logging.getLogger("bmvit.data")


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"'data.on_error': {policy!r} is not one of {', '.join(POLICIES)}")


class SkipLog:
    """Collects skipped inputs of one file under ``policy`` (``error`` raises at once)."""

    def __init__(self, policy: str, what: str,
                 hint: str = "set data.on_error=skip to leave such inputs out, counted",
                 option: str = "data.on_error=skip") -> None:
        _check_policy(policy)
        self.policy, self.what, self.hint = policy, what, hint  # hint: how to skip, in the caller's terms
        self.option = option  # the setting that skips, as the caller's user wrote it (summary line)
        self.messages: list[str] = []

    def handle(self, message: str) -> None:
        if self.policy == "error":
            raise DataError(f"{message} ({self.hint})")
        self.messages.append(message)
        log.warning("skipped: %s", message)

    def summary(self) -> str | None:
        if not self.messages:
            return None
        return f"{self.option}: {len(self.messages)} bad input(s) of {self.what} left out (first: {self.messages[0]})"

    def print_summary(self) -> None:
        line = self.summary()
        if line:
            print(line, file=sys.stderr)


class SkipBadSamples(Dataset):
    """Wraps a dataset whose ``__getitem__`` may raise DataError (module docstring)."""

    def __init__(self, dataset: ClipDataset, substitute: bool, max_tries: int = 16) -> None:
        self.dataset = dataset
        self.substitute = substitute
        self.max_tries = max_tries
        # One counter per loader worker (slot 0: the main process) in shared memory: survives
        # fork and spawn (torch shares tensor storage), and no two processes write one slot.
        self._counts = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()

    # The ClipDataset members are the wrapped dataset's.
    labels = property(lambda self: self.dataset.labels)
    class_ids = property(lambda self: self.dataset.class_ids)
    class_index = property(lambda self: self.dataset.class_index)
    num_frames = property(lambda self: self.dataset.num_frames)
    transform = property(lambda self: self.dataset.transform)
    sizes = property(lambda self: self.dataset.sizes)
    keyframes = property(lambda self: self.dataset.keyframes)

    def __len__(self) -> int:
        return len(self.dataset)

    def _skipped(self, i: int, e: DataError) -> None:
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_SLOTS - 1)
        self._counts[slot] += 1
        log.warning("skipped sample %d (%d so far): %s", i, int(self._counts.sum()), e)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        n = len(self.dataset)
        if not self.substitute:
            try:
                return self.dataset[item]
            except DataError as e:
                self._skipped(i, e)
                return self._blank(i)
        last: DataError | None = None
        for k in range(min(self.max_tries, n)):
            j = (i + k) % n
            try:
                return self.dataset[(j, seed) if seed is not None else j]
            except DataError as e:
                self._skipped(j, e)
                last = e
        raise DataError(f"{self.max_tries} consecutive samples from {i} could not be read; last: {last}")

    def _blank(self, i: int):
        """Mean-colour clip with the identifiers and ground truth of sample ``i`` (evaluation)."""
        kf = self.dataset.keyframes[i]
        clip = self.dataset.transform.blank(self.dataset.num_frames)  # (3, T, S, S) uint8: ~0 after normalization
        size = self.dataset.sizes.get(kf.video_id, (0, 0))
        return clip, {"boxes": xyxy_to_cxcywh(torch.from_numpy(kf.boxes.copy())),
                      "labels": torch.from_numpy(kf.labels.copy()), "video_id": kf.video_id,
                      "timestamp": kf.timestamp, "orig_size": tuple(size), "skipped": True}

    def take_count(self) -> int:
        """Skips since the last call (all workers), then reset to 0."""
        n = int(self._counts.sum())
        self._counts.zero_()
        return n


def reader_of(dataset: ClipDataset) -> ClipDataset:
    """The clip reader itself: the dataset a :class:`SkipBadSamples` wraps, else ``dataset``."""
    return dataset.dataset if isinstance(dataset, SkipBadSamples) else dataset
