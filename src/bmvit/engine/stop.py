"""Stopping a training run on request: SIGTERM or Ctrl-C checkpoint the run instead of losing it.

Clusters end jobs with SIGTERM (SLURM before a time limit or a pre-emption, Kubernetes on
eviction, ``kill``); a user presses Ctrl-C (SIGINT). Without this, the work since the last periodic
checkpoint is lost. With it, the first such signal *requests* a stop: the step under way
finishes, a checkpoint of that step is written (:mod:`bmvit.engine.state`, exact as any other,
so ``--resume auto`` ends with the same weights as a run that never stopped) and training
raises :class:`~bmvit.errors.Interrupted`; the CLI prints where it stopped and how to go on and
exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), as a process killed by the
signal would. A second signal while the stop is under way raises ``KeyboardInterrupt`` at once —
if it comes at least :attr:`StopRequest.ESCALATE_AFTER_S` (1 s) after the first: copies of one
request arrive together (Ctrl-C reaches torchrun and its workers, and torchrun then forwards it
to them again; SLURM signals every process of a step), and must not cut the checkpoint short.

Under ``torchrun`` the signal may reach some ranks only (or each at a different step): every rank
adds its request to the sum that each step already all-reduces (its number of actors), so all
ranks see the request in the same step and stop after it, together.

Signals are caught only in the main thread (Python allows handlers nowhere else) and the
previous handlers are put back when the run ends. DataLoader worker processes (training's and
evaluation's: :func:`defer_stop_signals` is their ``worker_init_fn``) ignore SIGINT and outlive a
SIGTERM by :data:`WORKER_GRACE_S` seconds: a SIGTERM sent to the whole job, workers included, must
not kill them under the step being finished (the main process would fail with "DataLoader worker
exited unexpectedly"), yet a worker left behind ends on its own — Python's exit stops daemonic
children with SIGTERM and waits for them. The training loop also shuts its workers down itself
when it ends by an error.
"""

from __future__ import annotations

import signal
import threading
import time

__all__ = ["StopRequest", "defer_stop_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Catches SIGTERM/SIGINT while installed; :attr:`signum` is the first caught (0: none)."""

    ESCALATE_AFTER_S = 1.0  # a later signal than this after the first: stop at once

    def __init__(self) -> None:
        self.signum, self._first = 0, 0.0
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first = signum, now
        elif now - self._first >= self.ESCALATE_AFTER_S:  # asked again: no more waiting
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name if signum else "a stop request on another rank"


WORKER_GRACE_S = 60  # how long a DataLoader worker outlives a SIGTERM


def _term_later(signum: int, frame) -> None:
    if hasattr(signal, "alarm"):  # POSIX: SIGALRM's default action ends the worker then
        signal.alarm(WORKER_GRACE_S)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a repeat does not postpone it


def defer_stop_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT and ends :data:`WORKER_GRACE_S`
    seconds after a SIGTERM (module docstring): the main process decides how a run stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _term_later)
