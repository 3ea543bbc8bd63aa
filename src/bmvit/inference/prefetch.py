"""Run a producer iterator on a background thread, ``depth`` items ahead of its consumer.

:func:`prefetch` is how :meth:`~bmvit.inference.detector.Detector.iter_keyframes` keeps the model
busy: decoding (PyAV), resizing (Pillow) and normalization of the next batches of clips run while
the model computes the current one. All of them release the GIL for their heavy parts, so the two
overlap on a multi-core CPU.

Contract: items come out in order; an exception raised by the producer is raised in the consumer
at the point where the item would have come; when the consumer stops early (``close()`` of the
generator, an exception, ``break``), the producer is told to stop and joined, and the source is
closed by the producer's own ``finally``. Memory: at most ``depth`` items waiting plus the one the
producer is building.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2, name: str = "bmvit-prefetch") -> Iterator[T]:
    """Yield the items of ``items``, produced on a background thread up to ``depth`` ahead."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put(_Failed(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
