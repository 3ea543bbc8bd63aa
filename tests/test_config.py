import re

import pytest

from bmvit.config import load_config, save_config
from bmvit.errors import ConfigError


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  size: 64\ntrain:\n  lr: 3.0e-4\n")
    cfg = load_config(p, ["train.lr=1e-3", "model.kv_stride=[1,4,4]", "eval.nms_iou=none"])
    assert cfg.data.size == 64 and cfg.train.lr == 1e-3 and cfg.model.kv_stride == [1, 4, 4]
    assert cfg.eval.nms_iou is None
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg  # the saved resolved config round-trips


def test_unknown_key_in_file_names_file_and_alternatives(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'train.learning_rate'; valid keys here: .*train.lr"):
        load_config(p)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'"),
        ("train.batch_size=1.5", "'train.batch_size': expected int"),
        ("model.token_selection=foo", "not one of singleton, tubelet, c\\+t, maxpool, 2\\(c\\+t\\)"),
        ("train", "expected section.key=value"),
        ("data=3", "'data' is a section"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def _same(written, loaded):
    """A YAML value as written vs. the loaded config value (YAML 1.1 reads ``3e-4`` as a string)."""
    if isinstance(loaded, list):
        return isinstance(written, list) and len(written) == len(loaded) and all(map(_same, written, loaded))
    if isinstance(loaded, float) and not isinstance(written, bool):
        return float(written) == loaded
    return written == loaded and type(written) is type(loaded)


def test_shipped_configs_load(tmp_path):
    """Every shipped config loads, every key it states (over its base) arrives in the Config, and the
    resolved config round-trips through the config.yaml a run folder keeps."""
    from pathlib import Path

    import yaml

    paths = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))
    assert len(paths) >= 20 and any(p.name == "tiny.yaml" for p in paths)
    checked = 0
    for i, p in enumerate(paths):
        cfg = load_config(p)
        written = yaml.safe_load(p.read_text())
        written.pop("base", None)
        for section, items in written.items():
            for key, value in items.items():
                got = getattr(getattr(cfg, section), key)
                assert _same(value, got), f"{p}: {section}.{key} written {value!r}, loaded {got!r}"
                checked += 1
        save_config(cfg, tmp_path / f"{i}.yaml")
        assert load_config(tmp_path / f"{i}.yaml") == cfg, p
    assert checked > 100


def test_base_chain_and_normalization_keys(tmp_path):
    from bmvit.data.build import checked_mean_std
    from bmvit.inference.detector import eval_transform

    (tmp_path / "a.yaml").write_text("data:\n  size: 64\n  mean: [0.485, 0.456, 0.406]\nmodel:\n  head_hidden: 8\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ndata:\n  size: 32\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.data.size == 32 and cfg.model.head_hidden == 8  # the file wins over its base
    assert eval_transform(cfg).mean == (0.485, 0.456, 0.406) and eval_transform(cfg).std == (0.225,) * 3
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="'base' chain loops"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found \(the 'base' of .*d\.yaml\)"):
        load_config(tmp_path / "d.yaml")
    with pytest.raises(ConfigError, match=r"'data.std': expected 3 per-channel \(RGB\) values > 0"):
        checked_mean_std(load_config(None, ["data.std=[0.2, 0.0, 0.2]"]).data)


def test_option_lists_come_from_the_implementing_modules():
    """CHOICES reads backbones, token selections, action heads and extra positives from their modules' tables."""
    from bmvit.config import CHOICES
    from bmvit.losses.matcher import EXTRA_POSITIVES
    from bmvit.models.build import BACKBONES
    from bmvit.models.heads import ACTION_HEADS
    from bmvit.models.token_selection import SELECTIONS

    assert CHOICES["model.backbone"] == tuple(BACKBONES)
    assert CHOICES["model.token_selection"] == tuple(SELECTIONS)
    assert CHOICES["model.action_head"] == tuple(ACTION_HEADS)
    assert CHOICES["loss.extra_positives"] == tuple(EXTRA_POSITIVES)
    assert "model.backbone" in CHOICES and "model.head_hidden" not in CHOICES and len(CHOICES) == len(list(CHOICES))
    for key, bad in (("model.backbone", "resnet"), ("model.token_selection", "3(c+t)"), ("loss.extra_positives", "all")):
        with pytest.raises(ConfigError, match=re.escape(f"'{key}': '{bad}' is not one of {', '.join(CHOICES[key])}")):
            load_config(None, [f"{key}={bad}"])


def test_a_config_without_implemented_option_keys_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "c.yaml").write_text("train:\n  lr: 0.001\ndata:\n  resize: square\n")
    code = (f"import sys\nfrom bmvit.config import load_config\nload_config({str(tmp_path / 'c.yaml')!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
