"""inference.prefetch: order, errors surfacing in the consumer, early stop joining the producer."""

from __future__ import annotations

import threading
import time

import pytest

from bmvit.errors import DataError
from bmvit.inference.prefetch import prefetch


def test_items_in_order_and_produced_ahead():
    produced = []

    def gen():
        for i in range(6):
            produced.append(i)
            yield i

    it = prefetch(gen(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)  # the producer runs ahead while the consumer is busy: up to depth waiting + one being built
    assert 3 <= len(produced) <= 4
    assert list(it) == [1, 2, 3, 4, 5]


def test_producer_error_is_raised_in_the_consumer_after_the_good_items():
    def gen():
        yield 1
        raise DataError("clip.mp4: decoding failed after 1 frames")

    got = []
    with pytest.raises(DataError, match="clip.mp4"):
        for x in prefetch(gen()):
            got.append(x)
    assert got == [1]


def test_early_stop_closes_the_producer():
    closed = threading.Event()

    def gen():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = prefetch(gen(), depth=1)
    assert next(it) == 0
    it.close()
    assert closed.wait(2)
    assert not any(t.name == "bmvit-prefetch" for t in threading.enumerate())
