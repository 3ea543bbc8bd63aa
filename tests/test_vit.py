"""ViT (VideoMAE layout) backbone, its checkpoint import, the `central` token selection and the
cross-attention action head of BMViT §6.1 — and what they cost (Table 2 bottom: 350 GFLOPs)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bmvit.config import DataConfig, ModelConfig, load_config
from bmvit.engine.optim import param_groups
from bmvit.errors import CheckpointError, ConfigError
from bmvit.models.build import BACKBONES, build_detector
from bmvit.models.flops import count_macs, detector_cost
from bmvit.models.heads import BMViTHeads, CrossAttentionActionHead
from bmvit.models.token_selection import STRATEGIES, select_tokens
from bmvit.models.vit import (
    VIT_SPECS,
    ViT,
    build_vit,
    interpolate_pos_embed,
    pos_embed_table,
)
from bmvit.models.position import sincos_table

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
VIT_CONFIGS = sorted((ROOT / "configs" / "paper").rglob("vitb_*.yaml"))
AVA_VIT = ROOT / "configs" / "paper" / "ava" / "vitb_16x288_central_xattn.yaml"


# --- checkpoint import -----------------------------------------------------------------------------

def videomae_state_dict(spec, g: torch.Generator, finetuned: bool = True) -> dict[str, torch.Tensor]:
    """Random weights in the original VideoMAE layout (``VisionTransformer`` of modeling_finetune.py),
    written from the reference's module structure, not from bmvit's mapping."""
    C, H = spec.embed_dim, int(spec.embed_dim * spec.mlp_ratio)
    r = lambda *shape: torch.randn(*shape, generator=g)
    sd = {"patch_embed.proj.weight": r(C, 3, *spec.patch), "patch_embed.proj.bias": r(C)}
    for i in range(spec.depth):
        b = f"blocks.{i}."
        sd.update({
            b + "norm1.weight": r(C), b + "norm1.bias": r(C),
            b + "attn.q_bias": r(C), b + "attn.v_bias": r(C), b + "attn.qkv.weight": r(3 * C, C),
            b + "attn.proj.weight": r(C, C), b + "attn.proj.bias": r(C),
            b + "norm2.weight": r(C), b + "norm2.bias": r(C),
            b + "mlp.fc1.weight": r(H, C), b + "mlp.fc1.bias": r(H),
            b + "mlp.fc2.weight": r(C, H), b + "mlp.fc2.bias": r(C),
        })
        if spec.init_values > 0:
            sd[b + "gamma_1"], sd[b + "gamma_2"] = r(C), r(C)
    if finetuned:  # use_mean_pooling=True: norm is Identity, fc_norm + head on the pooled feature
        sd.update({"fc_norm.weight": r(C), "fc_norm.bias": r(C), "head.weight": r(400, C), "head.bias": r(400)})
    else:
        sd.update({"norm.weight": r(C), "norm.bias": r(C)})
    return sd


# bmvit name of each VideoMAE key (the table of the vit.py docstring, spelled out independently)
def expected_name(key: str) -> str:
    key = key.replace("patch_embed.proj.", "patch_embed.").replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.2.")
    return key.replace("gamma_1", "ls1").replace("gamma_2", "ls2")


def test_videomae_finetuned_checkpoint_round_trip(tmp_path):
    spec = replace(VIT_SPECS["vit_tiny"], init_values=0.1)  # layer scale on: gamma_1/2 are mapped too
    src = videomae_state_dict(spec, torch.Generator().manual_seed(0))
    n = math.prod(d // p for d, p in zip(spec.pretrain_input, spec.patch))
    src["pos_embed"] = sincos_table(n, spec.embed_dim)[None]  # some files carry the fixed table
    path = tmp_path / "videomae_ft.pth"
    torch.save({"module": {f"module.{k}": v for k, v in src.items()}, "epoch": 3}, path)  # wrapped + DDP prefix

    model = ViT(spec, (8, 64, 64))
    fresh_norm = model.norm.weight.detach().clone()
    report = model.load_checkpoint(path, "auto")  # auto-detects the videomae layout
    sd = model.state_dict()
    loaded = [k for k in src if not k.startswith(("head.", "fc_norm.", "pos_embed"))]
    for key in loaded:
        assert torch.equal(sd[expected_name(key)], src[key]), key
    assert report.converted == len(loaded) == len(sd) - 2
    assert sorted(report.dropped) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight", "pos_embed"]
    assert report.missing == ["norm.weight", "norm.bias"] and not report.unexpected  # fine-tuned: no per-token norm
    assert torch.equal(model.norm.weight, fresh_norm)  # ...so it keeps its fresh init (EVAD)
    assert "dropped (5)" in str(report)


def test_videomae_pretraining_checkpoint_and_build_hook(tmp_path):
    """Pre-training layout (encoder.* + decoder), loaded through model.pretrained of a config."""
    spec = VIT_SPECS["vit_tiny"]
    src = videomae_state_dict(spec, torch.Generator().manual_seed(1), finetuned=False)
    sd = {f"encoder.{k}": v for k, v in src.items()}
    sd.update({"decoder.blocks.0.norm1.weight": torch.ones(8), "encoder_to_decoder.weight": torch.ones(8, 64),
               "mask_token": torch.zeros(1, 1, 8)})
    path = tmp_path / "videomae_pt.pth"
    torch.save({"model": sd}, path)
    cfg = ModelConfig(backbone="vit_tiny", token_selection="central", action_head="cross_attention",
                      head_hidden=16, pretrained=str(path), pretrained_format="videomae")
    det = build_detector(cfg, DataConfig(num_frames=8, size=64), num_classes=3)
    got = det.backbone.state_dict()
    for key, value in src.items():
        assert torch.equal(got[expected_name(key)], value), key
    report = det.backbone.load_checkpoint(path, "videomae")
    assert not report.missing and not report.unexpected
    assert sorted(report.dropped) == ["decoder.blocks.0.norm1.weight", "encoder_to_decoder.weight", "mask_token"]


def test_checkpoint_errors_name_the_file(tmp_path):
    model = build_vit("vit_tiny")
    with pytest.raises(CheckpointError, match="nope.pth: checkpoint not found"):
        model.load_checkpoint(tmp_path / "nope.pth", "videomae")
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": Path("x")}, evil)  # a pickled non-tensor object
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        model.load_checkpoint(evil, "videomae")
    other = tmp_path / "vit_b.pth"
    torch.save(videomae_state_dict(replace(VIT_SPECS["vit_tiny"], embed_dim=32, num_heads=2),
                                   torch.Generator().manual_seed(0)), other)
    with pytest.raises(CheckpointError, match="vit_b.pth: 'patch_embed.weight': checkpoint shape"):
        model.load_checkpoint(other, "videomae")
    with pytest.raises(CheckpointError, match="reads the videomae, bmvit layouts"):
        model.load_checkpoint(other, "slowfast")
    learned = tmp_path / "learned.pth"
    sd = videomae_state_dict(VIT_SPECS["vit_tiny"], torch.Generator().manual_seed(0))
    sd["pos_embed"] = torch.randn(1, 64, 64)
    torch.save(sd, learned)
    with pytest.raises(CheckpointError, match="learned.pth: 'pos_embed': .*learned position embedding"):
        model.load_checkpoint(learned, "videomae")


def test_bmvit_layout_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a, b = build_vit("vit_tiny"), build_vit("vit_tiny")
    weights = {f"backbone.{k}": v.contiguous() for k, v in a.state_dict().items()}
    save_file({**weights, "heads.norm.weight": torch.ones(3)}, tmp_path / "det.safetensors")  # a detector file
    report = b.load_checkpoint(tmp_path / "det.safetensors", "auto")
    assert not report.missing and not report.unexpected and all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


# --- position embedding ----------------------------------------------------------------------------

def test_sincos_table_hand_values():
    t = sincos_table(5, 8)
    assert torch.equal(t[0], torch.tensor([0.0, 1.0] * 4))
    p = 3.0
    want = [math.sin(p), math.cos(p), math.sin(p / 10000 ** (2 / 8)), math.cos(p / 10000 ** (2 / 8)),
            math.sin(p / 10000 ** (4 / 8)), math.cos(p / 10000 ** (4 / 8)),
            math.sin(p / 10000 ** (6 / 8)), math.cos(p / 10000 ** (6 / 8))]
    assert torch.allclose(t[3], torch.tensor(want), atol=1e-6)


def test_pos_embed_interpolation():
    spec = VIT_SPECS["vit_b"]
    base = sincos_table(8 * 14 * 14, 768)
    # at the pre-training grid both rules give VideoMAE's table unchanged
    assert torch.equal(pos_embed_table(spec, (8, 14, 14), "interpolate"), base)
    assert torch.equal(pos_embed_table(spec, (8, 14, 14), "regenerate"), base)
    table = torch.randn(2 * 3 * 3, 5)
    assert interpolate_pos_embed(table, (2, 3, 3), (2, 3, 3)) is table
    # 288²: 8×18×18 rows; each temporal slice is the bicubic resize of that slice alone
    big = pos_embed_table(spec, (8, 18, 18), "interpolate")
    assert big.shape == (8 * 18 * 18, 768)
    one = interpolate_pos_embed(base[3 * 196 : 4 * 196], (1, 14, 14), (1, 18, 18))
    assert torch.equal(big[3 * 324 : 4 * 324], one)
    assert torch.equal(pos_embed_table(spec, (8, 18, 18), "regenerate"), sincos_table(2592, 768))
    # hand case: bicubic (a = -0.75, align_corners=False) from 2×2 to 1×1 samples the centre, whose
    # weights (-0.09375, 0.59375, 0.59375, -0.09375) fold onto the two clamped neighbours: the mean.
    x = torch.randn(2 * 2 * 2, 3)
    grid = x.reshape(2, 2, 2, 3)
    assert torch.allclose(interpolate_pos_embed(x, (2, 2, 2), (2, 1, 1)), grid.mean((1, 2)), atol=1e-6)
    # time (our extension): linear 2 -> 1 is the mean of the two slices
    assert torch.allclose(interpolate_pos_embed(x, (2, 2, 2), (1, 2, 2)), grid.mean(0).reshape(4, 3), atol=1e-6)


# --- shapes, grids, the detector -------------------------------------------------------------------

def test_vit_configs_shapes_and_grids():
    assert len(VIT_CONFIGS) == 9  # AVA + UCF24 (VideoMAE, V2) + JHMDB 3 splits × (VideoMAE, V2)
    for path in VIT_CONFIGS:
        cfg = load_config(path)
        assert cfg.model.backbone == "vit_b" and cfg.data.size == 288 and cfg.model.pretrained_format == "videomae"
        assert cfg.model.token_selection == "central" and cfg.model.action_head == "cross_attention"
        with torch.device("meta"):
            det = build_detector(cfg.model, cfg.data, 21, load_pretrained=False)
            out = det(torch.empty(2, 3, 16, 288, 288))
        assert det.backbone.grid(16, 288, 288) == out["grid"] == (8, 18, 18)
        assert out["boxes"].shape == (2, 324, 4) and out["actor_logits"].shape == (2, 324)
        assert out["action_logits"].shape == (2, 324, 21) and out["cells"].shape == (324, 4)
    with torch.device("meta"):
        m = build_vit("vit_b", (16, 224, 320))
        assert m.forward_features(torch.empty(1, 3, 16, 224, 320)).shape == (1, 768, 8, 14, 20)  # non-square
        with pytest.raises(ConfigError, match="multiple of the tubelet"):
            m.forward_features(torch.empty(1, 3, 16, 224, 300))
    assert {"vit_b", "vit_tiny"} <= set(BACKBONES)


def test_central_token_selection():
    f = torch.randn(2, 5, 4, 3, 2)
    tok = select_tokens(f, "central")
    assert "central" in STRATEGIES and tok.det.shape == (2, 6, 5) and tok.cells.shape == (6, 4)
    assert torch.equal(tok.det, f[:, :, 2].flatten(2).transpose(1, 2)) and torch.equal(tok.action, tok.det)


def test_detector_cross_attention_forward_backward_cpu():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny", token_selection="central", action_head="cross_attention",
                      head_hidden=16, grad_checkpointing=True, drop_path=0.1)
    det = build_detector(cfg, DataConfig(num_frames=8, size=64), num_classes=3).train()
    clip = torch.randn(2, 3, 8, 64, 96)  # non-square: grid 4×4×6
    out = det(clip)
    assert out["grid"] == (4, 4, 6) and out["action_logits"].shape == (2, 24, 3) and out["boxes"].shape == (2, 24, 4)
    (out["action_logits"].sum() + out["actor_logits"].sum() + out["boxes"].sum()).backward()
    xattn = det.heads.action
    for p in (xattn.k.weight, xattn.v.weight, xattn.q.weight, det.backbone.blocks[0].attn.qkv.weight,
              det.backbone.blocks[0].attn.q_bias, det.backbone.patch_embed.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the action logits of one query depend on tokens of other time slices (the point of the layer)
    det.eval()
    feats = det.backbone.forward_features(clip[:1])
    tok = select_tokens(feats, "central")
    ctx = feats.flatten(2).transpose(1, 2)
    ctx2 = ctx.clone()
    ctx2[:, :24] += torch.randn(1, 24, ctx.shape[-1])  # change slice 0 only (the queries come from slice 2)
    with torch.no_grad():
        assert not torch.allclose(xattn(tok.action, ctx), xattn(tok.action, ctx2))
    # every strategy works with the cross-attention head (maxpool: all t·h·w queries, logits max-pooled)
    for s in STRATEGIES:
        det.token_selection = s
        with torch.no_grad():
            o = det(clip[:1])
        assert o["action_logits"].shape[:2] == o["boxes"].shape[:2] == o["actor_logits"].shape, s


def test_default_mlp_head_unchanged():
    heads = BMViTHeads(32, 5)
    assert not heads.needs_context
    assert sorted(heads.state_dict()) == sorted(
        f"{m}.{i}.{p}" for m, idx in (("box", (0, 2, 4)), ("actor", (0, 2)), ("action", (0, 2))) for i in idx
        for p in ("weight", "bias")) + ["norm.bias", "norm.weight"]
    with pytest.raises(ConfigError, match="does not divide"):
        BMViTHeads(30, 5, action_head="cross_attention", cross_attn_heads=8)


def test_layer_decay_finds_vit_blocks():
    det = build_detector(ModelConfig(backbone="vit_tiny", token_selection="central"), DataConfig(num_frames=8, size=64), 3)
    groups = param_groups(det, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    depth = len(det.backbone.blocks)
    assert scale[id(det.backbone.patch_embed.weight)] == 0.5 ** (depth + 1)
    for i, blk in enumerate(det.backbone.blocks):
        assert scale[id(blk.attn.qkv.weight)] == 0.5 ** (depth - i)
    assert scale[id(det.backbone.norm.weight)] == scale[id(det.heads.box[0].weight)] == 1.0


# --- cost -------------------------------------------------------------------------------------------

def test_cross_attention_layer_is_4_7_gmacs():
    """§6.1: the layer with 324 queries and 2592 keys/values "amounts to only 4.7 GFLOPs" (MACs)."""
    L, N, C = 18 * 18, 8 * 18 * 18, 768
    with torch.device("meta"):
        head = CrossAttentionActionHead(C, 80, 256, 2, num_heads=12)
        q, ctx = torch.empty(1, L, C), torch.empty(1, N, C)
    macs = count_macs(head.attend, q, ctx)
    assert macs == 2 * L * C * C + 2 * N * C * C + 2 * L * N * C  # q, out; k, v; QKᵀ, AV
    assert abs(macs / 4.7e9 - 1) < 0.01, macs


def test_vitb_288_detector_cost_matches_table_2():
    """Table 2 bottom: BMViT ViT-B 16×4 @ 288 costs 350 GFLOPs (MACs); ours within 3%."""
    cost = detector_cost(load_config(AVA_VIT), 80)
    assert cost.input == [16, 288, 288] and cost.tokens == [8, 18, 18]
    assert abs(cost.gmacs_total / 350 - 1) < 0.03, cost
    assert 347.0 < cost.gmacs_backbone < 347.1  # 12 blocks + tubelet embedding at 2592 tokens
    assert 86.2e6 < cost.params_backbone < 86.3e6  # VideoMAE ViT-B without its head: 86.2 M
