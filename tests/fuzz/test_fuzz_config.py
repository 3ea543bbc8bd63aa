"""Fuzz: YAML configs and ``section.key=value`` overrides (tests/fuzz/invariant.py).

A config that loads must be inside every key's valid range (bmvit.config.RANGES / LENGTHS / CHOICES);
otherwise the error names the file or the key. Also through ``bmvit train --print-config``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml
from hypothesis import strategies as st

from bmvit.config import CHOICES, LENGTHS, RANGES, Config, load_config, to_dict
from tests.fuzz.invariant import SPECIAL_VALUES, expect_ok_or_named_error, mutated_bytes, run_cli

TINY = (Path(__file__).parents[2] / "configs" / "synthetic" / "tiny.yaml").read_bytes()
KEYS = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(s.type if not isinstance(s.type, str) else getattr(Config(), s.name))]
VALUES = SPECIAL_VALUES + ["[1, 2]", "[1, 2, 3]", "[[1, 2]]", "[]", "{}", "true", "null", "2.0e-3", "-4", "0.5", "[0.5, nan, 1]",
                           "'x'", "!!python/object:os.system ls", "[" * 50, "{a: 1}", "2026-01-01", "1e400", "-1e400"]


def _check_valid(cfg: Config) -> None:
    """Every value of a loaded config is inside its key's range."""
    for section, values in to_dict(cfg).items():
        for k, v in values.items():
            key = f"{section}.{k}"
            if key in CHOICES:
                assert v in CHOICES[key], (key, v)
            flat = v if isinstance(v, list) else [v]
            flat = [x for item in flat for x in (item if isinstance(item, list) else [item])]
            for x in flat:
                if isinstance(x, float):
                    assert math.isfinite(x), (key, v)
                if key in RANGES and x is not None:
                    lo, hi, lo_open = RANGES[key]
                    assert lo is None or (x > lo if lo_open else x >= lo), (key, v)
                    assert hi is None or x <= hi, (key, v)
            if key in LENGTHS and v is not None:
                assert len(v) == LENGTHS[key][0], (key, v)


def test_fuzz_yaml_config_file(fuzz, tmp_path):
    path = tmp_path / "cfg.yaml"

    def check(data):
        path.write_bytes(data)
        cfg, _ = expect_ok_or_named_error(lambda: load_config(path), [path])
        if cfg is not None:
            _check_valid(cfg)

    fuzz.run(mutated_bytes(TINY), check, "YAML config file", 60)


def test_fuzz_overrides(fuzz):
    def check(args):
        key, value = args
        item = f"{key}={value}"
        cfg, _ = expect_ok_or_named_error(lambda: load_config(None, [item]), [key.strip(), repr(item)[1:-1][:30]])
        if cfg is not None:
            _check_valid(cfg)

    key = st.sampled_from(KEYS) | st.sampled_from(["data", "data.", ".x", "model.nope", "train.lr.x", ""]) | st.text(max_size=10)
    value = st.sampled_from(VALUES) | st.text(max_size=12) | st.integers().map(str) | st.floats().map(repr)
    fuzz.run(st.tuples(key, value), check, "key=value overrides", 150)


def test_fuzz_train_print_config_cli(fuzz, tmp_path):
    path = tmp_path / "cfg.yaml"

    def check(args):
        data, key, value = args
        path.write_bytes(data)
        rc, out, _ = run_cli(["train", "--config", path, "--print-config", f"{key}={value}"], [path, key])
        if rc == 0:
            assert isinstance(yaml.safe_load(out), dict)

    fuzz.run(st.tuples(st.just(TINY) | mutated_bytes(TINY), st.sampled_from(KEYS), st.sampled_from(VALUES)),
             check, "bmvit train --print-config (CLI)", 30)


def test_every_numeric_key_has_a_range():
    """A numeric key without a range would take -4, a negative learning rate, ... without comment."""
    import typing

    unranged = []
    for section in dataclasses.fields(Config):
        sec = getattr(Config(), section.name)
        hints = typing.get_type_hints(type(sec))
        for f in dataclasses.fields(sec):
            text = str(hints[f.name])
            key = f"{section.name}.{f.name}"
            if ("int" in text or "float" in text) and hints[f.name] is not bool and key not in RANGES:
                unranged.append(key)
    # data.mean: any finite value per channel (its length is checked); data.std is checked > 0 with it
    assert sorted(unranged) == ["data.mean", "data.std"], unranged
