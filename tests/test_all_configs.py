"""Every shipped config loads (no unknown keys, valid values) and builds its detector."""

from pathlib import Path

import pytest
import torch

from bmvit.config import load_config
from bmvit.models.build import build_detector

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert any(p.parent.name == "synthetic" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_config_loads_and_builds(path):
    # pretrained checkpoints are not available here; the architecture is what is checked
    cfg = load_config(path, ["model.pretrained=null"])
    with torch.device("meta"):  # no memory, no init cost: shapes only
        model = build_detector(cfg.model, cfg.data, num_classes=80)
    assert sum(p.numel() for p in model.parameters()) > 0
