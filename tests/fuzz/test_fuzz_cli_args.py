"""Fuzz: every numeric option of every verb (tests/fuzz/invariant.py).

The options' ranges are written down here, independently of the CLI code (probabilities in
[0, 1], counts >= 1 or >= 0 as meant, finite numbers). A value inside its range is accepted; any
other text is refused with exit status 2 and one ``error:`` line naming the option and its valid
range. The verbs' work is stubbed out: only the argument handling is under test. A second test
checks that no verb has a numeric option left without a range (a bare ``type=int`` / ``float``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil

import pytest
from hypothesis import strategies as st

import bmvit.cli
from tests.fuzz.invariant import SPECIAL_VALUES, run_cli

INF = math.inf
# verb argv prefix (with the required arguments) -> {option: (integer?, minimum, maximum, minimum excluded?)}
OPTIONS: dict[tuple[str, ...], dict[str, tuple[bool, float, float, bool]]] = {
    ("synth", "--out", "X"): {"--videos": (True, 1, INF, False), "--val-videos": (True, 0, INF, False),
                              "--seconds": (True, 2, INF, False), "--seed": (True, 0, 2**32 - 1, False),
                              "--width": (True, 32, 4096, False), "--height": (True, 32, 4096, False),
                              "--workers": (True, 0, INF, False)},
    ("eval",): {"--render": (True, 0, INF, False)},
    ("eval-ava", "--gt", "g", "--pred", "p", "--labelmap", "l"): {"--max-dets-per-frame": (True, 0, INF, False),
                                                                 "--iou": (False, 0, 1, True)},
    ("eval-frame", "--classes", "c", "--gt", "g", "--pred", "p"): {"--iou": (False, 0, 1, True)},
    ("eval-video", "--classes", "c", "--gt", "g", "--pred", "p"): {"--link-iou": (False, 0, 1, False), "--frame-nms": (False, -INF, 1, False),
                                                    "--top-k": (True, 1, INF, False), "--min-tube-length": (True, 1, INF, False),
                                                    "--min-tube-score": (False, -INF, INF, False),
                                                    "--tube-nms": (False, -INF, 1, False)},
    ("flops",): {"--num-classes": (True, 1, INF, False)},
    ("benchmark",): {"--batch": (True, 1, INF, False), "--num-classes": (True, 1, INF, False),
                     "--warmup": (True, 0, INF, False), "--runs": (True, 1, INF, False), "--threads": (True, 0, INF, False)},
    ("detect", "in.mp4", "--checkpoint", "c"): {"--threshold": (False, 0, 1, False), "--fps-keyframes": (False, 0, INF, True),
                                                "--topk": (True, 1, INF, False), "--batch": (True, 1, INF, False),
                                                "--threads": (True, 0, INF, False), "--fps": (False, 0, INF, True),
                                                "--first-second": (False, -INF, INF, False), "--every": (True, 1, INF, False),
                                                "--max-frames": (True, 1, INF, False)},
    ("export", "--checkpoint", "c"): {"--batch": (True, 1, INF, False), "--tolerance": (False, 0, INF, False),
                                      "--threads": (True, 0, INF, False)},
    ("show",): {"--num": (True, 1, INF, False), "--threshold": (False, 0, 1, False)},
    ("prepare", "frames", "--videos", "v", "--out", "o"): {"--fps": (True, 1, INF, False), "--start": (False, 0, INF, False),
                                                           "--end": (False, 0, INF, True), "--quality": (True, 1, 95, False),
                                                           "--short-side": (True, 1, INF, False)},
    ("prepare", "act-gt", "--pkl", "p", "--out", "o"): {"--split": (True, 1, INF, False)},
    ("prepare", "import-cvat", "a.xml", "--video", "v", "--root", "r"): {"--keyframes-per-second": (False, 0, 1, True),
                                                                         "--fps": (True, 1, INF, False)},
}
CASES = [(prefix, opt, spec) for prefix, opts in OPTIONS.items() for opt, spec in opts.items()]


def _expected_ok(text: str, integer: bool, lo: float, hi: float, lo_open: bool) -> bool:
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        return False
    if not integer and not math.isfinite(v):
        return False
    return (v > lo if lo_open else v >= lo) and v <= hi


def _cli_modules():
    """Every module of bmvit.cli that defines (sub-)verbs."""
    for m in pkgutil.iter_modules(bmvit.cli.__path__):
        if m.name not in ("main", "argtypes", "__init__"):
            mod = importlib.import_module(f"bmvit.cli.{m.name}")
            if hasattr(mod, "add_parser") or hasattr(mod, "add_verb"):
                yield mod


@pytest.fixture
def stubbed_verbs(monkeypatch):
    """Every verb's run function replaced by one that does nothing (argument handling only)."""
    for mod in _cli_modules():
        for name in dir(mod):
            if name.startswith("run") and callable(getattr(mod, name)):
                monkeypatch.setattr(mod, name, lambda args: 0)


def test_fuzz_numeric_options(fuzz, stubbed_verbs):
    def check(args):
        (prefix, opt, (integer, lo, hi, lo_open)), text = args
        rc, _, err = run_cli([*prefix, f"{opt}={text}"], [opt])
        assert rc == (0 if _expected_ok(text, integer, lo, hi, lo_open) else 2), (opt, text, err)
        if rc == 2 and ("outside the valid range" in err):
            assert any(s in err for s in ("≥", "[", "(")), err

    value = (st.sampled_from(SPECIAL_VALUES + ["0.0", "1.0", "1.0000001", "-0.0000001", "95", "96", "2", "31", "32",
                                               "4294967295", "4294967296", "1e5", "-1e5", "0.5"])
             | st.integers(-10**20, 10**20).map(str) | st.floats(allow_nan=True).map(repr) | st.text(max_size=6))
    fuzz.run(st.tuples(st.sampled_from(CASES), value), check, "numeric CLI options (every verb)", 250)


def test_every_numeric_option_has_a_range():
    """No verb takes a bare int/float option (which would accept -3, nan, inf without comment)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for mod in _cli_modules():
        if hasattr(mod, "add_parser"):  # sub-verb modules (add_verb) come in through their verb's add_parser
            try:
                mod.add_parser(sub)
            except argparse.ArgumentError:  # a module that registers under another verb's sub-parsers
                pass
    bare = []

    def walk(p, where):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    walk(child, f"{where} {name}")
            elif a.type in (int, float):
                bare.append(f"{where} {'/'.join(a.option_strings) or a.dest}")

    walk(parser, "bmvit")
    assert not bare, f"numeric options without a range check (use bmvit.cli.argtypes): {bare}"
