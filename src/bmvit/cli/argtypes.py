"""Numeric command-line option types that check their range.

Contract: each factory returns an ``argparse`` ``type=`` callable that converts the text and
raises :class:`argparse.ArgumentTypeError` (which the CLI prints as one ``error:`` line, exit
status 2) when the value is not a number, not finite, or outside its range; the message states
the valid range, e.g. ``--threshold: -1 is outside [0, 1] (a probability)``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "number", "probability"]


def count(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An integer ``>= minimum`` (and ``<= maximum`` when given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            valid = f"[{minimum}, {maximum}]" if maximum is not None else f"≥ {minimum}"
            raise argparse.ArgumentTypeError(f"{value} is outside the valid range {valid}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, open_min: bool = False,
           what: str = "") -> Callable[[str], float]:
    """A finite float in ``[minimum, maximum]`` (``(minimum, ...`` when ``open_min``); None: unbounded."""
    lo = "(" if open_min else "["
    valid = f"{lo}{'-inf' if minimum is None else f'{minimum:g}'}, {'inf' if maximum is None else f'{maximum:g}'}]"
    if maximum is None:
        valid = valid[:-1] + ")"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if open_min else value >= minimum
        if ok and maximum is not None:
            ok = value <= maximum
        if not ok:
            raise argparse.ArgumentTypeError(f"{text} is outside the valid range {valid}{what}")
        return value

    parse.__name__ = "number"
    return parse


def probability(text: str) -> float:
    """A probability threshold in [0, 1]."""
    return number(0.0, 1.0, what=" (a probability)")(text)


probability.__name__ = "probability"
