"""Fuzz-suite plumbing: seeded, derandomized hypothesis runs in two sizes, and an example count.

Every fuzz test takes the ``fuzz`` fixture, parametrized over two profiles: ``default`` (runs in
``make test``; the whole suite stays well under 60 s on 2 cores) and ``slow`` (20x the examples,
``@pytest.mark.slow``: ``pytest -m slow tests/fuzz``). ``fuzz.run(strategy, check, target)``
runs ``check`` on ``fuzz.examples(base)`` generated examples with a fixed seed (derandomize: the
same examples on every run, no example database). The number of examples each target ran is
printed at the end of the session.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

SLOW_FACTOR = 20
_COUNTS: Counter[tuple[str, str]] = Counter()


class Fuzz:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.factor = SLOW_FACTOR if profile == "slow" else 1

    def run(self, strategy, check, target: str, examples: int) -> None:
        """Run ``check(example)`` on ``examples`` (x20 in the slow profile) examples of ``strategy``."""

        @settings(max_examples=examples * self.factor, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), print_blob=True)
        @given(strategy)
        def inner(example):
            _COUNTS[(target, self.profile)] += 1
            check(example)

        inner()


@pytest.fixture(params=["default", pytest.param("slow", marks=pytest.mark.slow)])
def fuzz(request) -> Fuzz:
    return Fuzz(request.param)


def pytest_terminal_summary(terminalreporter):
    if _COUNTS:
        terminalreporter.write_sep("-", "fuzz examples run (target, profile)")
        for (target, profile), n in sorted(_COUNTS.items()):
            terminalreporter.write_line(f"{target:40s} {profile:8s} {n:6d}")
