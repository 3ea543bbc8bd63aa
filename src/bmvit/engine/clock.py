"""The training clock and the time budget (``train.max_minutes``).

The clock counts training seconds: those of earlier processes of the run (saved in every
checkpoint as ``RunState.train_seconds``) plus this process's, with periodic evaluations taken
out. ``train.eval_at_minutes`` and ``train.max_minutes`` read it.

A time budget (``train.max_minutes > 0``; not in the paper) ends training after that many training
minutes or ``max_steps``, whichever comes first, and the lr cosine follows whichever of the two is
further along, so it ends annealed either way (:func:`bmvit.engine.optim.lr_factor`). The budget's
fraction is counted from the end of the warm-up (``RunState.warmup_seconds``), so the cosine starts
where it would without a budget. Under ``torchrun`` rank 0's clock decides for every rank. A run
with a budget that binds depends on the speed of the machine: it is not reproducible bit for bit
across machines or across a kill and resume; a budget that never binds changes nothing.
"""

from __future__ import annotations

import time


class TrainClock:
    """Training seconds of the run so far (``before``: those of earlier processes)."""

    def __init__(self, before: float) -> None:
        self.before, self.start, self.paused = before, time.perf_counter(), 0.0

    def seconds(self) -> float:
        return self.before + (time.perf_counter() - self.start - self.paused)

    def pause(self, seconds: float) -> None:
        """Take ``seconds`` (an evaluation's) out of the training time."""
        self.paused += seconds


def budget_progress(seconds: float, budget_seconds: float, warmup_seconds: float | None) -> float:
    """The fraction of a time budget used since the warm-up ended: 0 without a budget (``budget_seconds``
    0) and before the warm-up's end (``warmup_seconds`` None), 1 or more once it is spent."""
    if budget_seconds <= 0 or warmup_seconds is None:
        return 0.0
    return max(0.0, seconds - warmup_seconds) / max(budget_seconds - warmup_seconds, 1e-9)
