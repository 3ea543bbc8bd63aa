"""The backbone contract (models/backbone.py): every entry of BACKBONES fulfils it, layer ids follow
the blocks.{i} naming, a checkpoint weight the chosen backbone does not have is refused by name,
and the shipped configs normalize inputs as their pretrained backbone expects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bmvit.config import ModelConfig, load_config
from bmvit.errors import CheckpointError
from bmvit.models.backbone import Backbone, layer_id
from bmvit.models.build import BACKBONES
from bmvit.models.checkpoints.hiera import to_hiera
from bmvit.models.hiera import HIERA_SPECS, Hiera
from bmvit.models.mvit import MVIT_SPECS, MViT
from bmvit.models.vit import VIT_SPECS, ViT

ROOT = Path(__file__).resolve().parents[1]
TINY = {"mvit_tiny": (8, 32, 32), "vit_tiny": (8, 64, 64), "hiera_tiny": (8, 64, 64)}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_fulfils_the_contract(name):
    size = TINY.get(name, (16, 224, 224))
    with torch.device("meta"):  # large ones: no allocation
        b = BACKBONES[name](ModelConfig(backbone=name), size)
    assert isinstance(b, Backbone), name
    assert isinstance(b.out_dim, int) and b.out_dim > 0
    assert len(b.input_mean) == 3 and len(b.input_std) == 3 and min(b.input_std) > 0
    names = [n for n, _ in b.named_parameters()]
    depth = len(b.blocks)
    ids = {n: layer_id(f"backbone.{n}", depth) for n in names}
    assert {ids[n] for n in names if n.startswith("blocks.")} == set(range(1, depth + 1))  # one id per block
    assert all(ids[n] == 0 for n in names if n.startswith("patch_embed"))
    assert layer_id("heads.box.0.weight", depth) == depth + 1


@pytest.mark.parametrize("name", list(TINY))
def test_grid_is_the_shape_of_forward_features(name):
    torch.manual_seed(0)
    T, H, W = TINY[name]
    b = BACKBONES[name](ModelConfig(backbone=name, remove_last_pool=False), TINY[name]).eval()
    with torch.no_grad():
        out = b.forward_features(torch.randn(1, 3, T, H, W))
    assert out.shape == (1, b.out_dim, *b.grid(T, H, W))


def _refused(model, path, fmt, key, backbone):
    with pytest.raises(CheckpointError, match=rf"^{path}: '{key}'.*the {backbone} backbone does not have"):
        model.load_checkpoint(path, fmt)


def test_weights_of_another_backbone_are_refused_by_name(tmp_path):
    # a deeper model's checkpoint into a shallower one: its extra block is named, nothing is loaded
    mvit = MViT(MVIT_SPECS["mvit_tiny"], (8, 32, 32))
    sd = {k: v.clone() for k, v in mvit.state_dict().items()}
    sd["blocks.9.norm1.weight"] = torch.ones(8)
    torch.save(sd, tmp_path / "mvit.pth")
    before = mvit.blocks[0].attn.qkv.weight.detach().clone()
    _refused(mvit, tmp_path / "mvit.pth", "bmvit", r"blocks\.9\.norm1\.weight", "MViT")
    assert torch.equal(mvit.blocks[0].attn.qkv.weight, before)

    vit = ViT(VIT_SPECS["vit_tiny"], (8, 64, 64))
    torch.save({**vit.state_dict(), "cls_token": torch.zeros(1, 1, 64)}, tmp_path / "vit.pth")
    _refused(vit, tmp_path / "vit.pth", "bmvit", "cls_token", "ViT")

    hiera = Hiera(HIERA_SPECS["hiera_tiny"], (8, 64, 64))
    official = to_hiera(hiera.state_dict())
    official["blocks.0.attn.rel_pos_t"] = torch.zeros(3, 8)  # an MViT-style table: no place in Hiera
    torch.save({"model_state": official}, tmp_path / "hiera.pth")
    _refused(hiera, tmp_path / "hiera.pth", "hiera", r"blocks\.0\.attn\.rel_pos_t", "Hiera")


def test_configs_normalize_as_their_pretrained_backbone_expects():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    checked = 0
    for path in configs:
        cfg = load_config(path, [])
        if not cfg.model.pretrained:
            continue
        cls = {"mvit": MViT, "vit_": ViT, "hier": Hiera}[cfg.model.backbone[:4]]
        assert tuple(cfg.data.mean) == cls.input_mean and tuple(cfg.data.std) == cls.input_std, path
        checked += 1
    assert checked >= 10  # the paper configs initialize from Kinetics checkpoints
