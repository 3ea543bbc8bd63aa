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


def test_shipped_configs_load():
    from pathlib import Path

    for p in sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml")):
        load_config(p)
