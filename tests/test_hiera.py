"""Hiera video backbone: block table, token order, position embeddings, checkpoint import, detector.

The official-layout state dicts here are written from the reference constructor's naming and
shapes (not from the importer). The numerical cross-check against the official hiera-transformer
package is a dev check outside the test suite (docs/backbone.md, "Hiera").
"""

import pytest
import torch
import torch.nn.functional as F

from bmvit.config import DataConfig, ModelConfig, load_config
from bmvit.engine.optim import param_groups
from bmvit.errors import CheckpointError, ConfigError
from bmvit.models.build import build_detector
from bmvit.models.checkpoints.hiera import from_hiera, to_hiera
from bmvit.models.hiera import (
    HIERA_SPECS,
    Hiera,
    block_table,
    build_hiera,
    output_grid,
    reroll,
    unroll,
)
from bmvit.models.position import resize_pos_embed

TINY = HIERA_SPECS["hiera_tiny"]


def official_state_dict(spec, input_size, num_classes=7, mae=False, seed=0):
    """Random tensors under the official Hiera keys and shapes (``hiera.Hiera(sep_pos_embed=True)``)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t, h, w = (n // s for n, s in zip(input_size, spec.patch_stride))
    c = spec.embed_dim
    sd = {"pos_embed_spatial": rnd(1, h * w, c), "pos_embed_temporal": rnd(1, t, c),
          "patch_embed.proj.weight": rnd(c, 3, *spec.patch_kernel), "patch_embed.proj.bias": rnd(c)}
    i = 0
    for stage, n in enumerate(spec.stages):
        for j in range(n):
            d_in = c
            d_out = c * 2 if (stage > 0 and j == 0) else c
            b = f"blocks.{i}."
            sd[b + "norm1.weight"], sd[b + "norm1.bias"] = rnd(d_in), rnd(d_in)
            sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = rnd(3 * d_out, d_in), rnd(3 * d_out)
            sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = rnd(d_out, d_out), rnd(d_out)
            sd[b + "norm2.weight"], sd[b + "norm2.bias"] = rnd(d_out), rnd(d_out)
            sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = rnd(4 * d_out, d_out), rnd(4 * d_out)
            sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = rnd(d_out, 4 * d_out), rnd(d_out)
            if d_in != d_out:
                sd[b + "proj.weight"], sd[b + "proj.bias"] = rnd(d_out, d_in), rnd(d_out)
            c, i = d_out, i + 1
    if mae:  # MaskedAutoencoderHiera: no norm/head; encoder_norm, fusion heads and a decoder instead
        sd.update({"encoder_norm.weight": rnd(c), "encoder_norm.bias": rnd(c), "mask_token": rnd(1, 1, 16),
                   "multi_scale_fusion_heads.0.weight": rnd(c, spec.embed_dim, 1, 4, 4),
                   "decoder_embed.weight": rnd(16, c), "decoder_pos_embed": rnd(1, 64, 16),
                   "decoder_blocks.0.norm1.weight": rnd(16), "decoder_pred.weight": rnd(48, 16)})
    else:
        sd["norm.weight"], sd["norm.bias"] = rnd(c), rnd(c)
        sd["head.projection.weight"], sd["head.projection.bias"] = rnd(num_classes, c), rnd(num_classes)
    return sd


# ------------------------------------------------------------------------------ architecture


def test_block_tables_match_the_reference_constructor():
    b = block_table(HIERA_SPECS["hiera_b_16x224"])
    assert len(b) == 24
    assert [r.dim_out for r in b] == [96] * 2 + [192] * 3 + [384] * 16 + [768] * 3
    assert [r.num_heads for r in b] == [1] * 2 + [2] * 3 + [4] * 16 + [8] * 3
    assert [i for i, r in enumerate(b) if r.q_stride > 1] == [2, 5, 21] and b[2].q_stride == 4
    # mask-unit attention in stages 1-2, lagged one block: block 5 (opens stage 3) still attends per unit
    assert [r.mask_unit_attn for r in b] == [True] * 6 + [False] * 18
    assert [b[i].window for i in (0, 2, 5, 21)] == [64, 16, 4, 1]
    assert b[0].drop_path == 0 and b[-1].drop_path == pytest.approx(0.2)
    l2 = block_table(HIERA_SPECS["hiera_l_16x224"], q_pool=2)
    assert [i for i, r in enumerate(l2) if r.q_stride > 1] == [2, 8] and l2[-1].dim_out == 1152
    assert [r.num_heads for r in l2][::10] == [2, 8, 8, 8, 8] and l2[-1].num_heads == 16
    with pytest.raises(ConfigError, match="q_pool"):
        block_table(TINY, q_pool=3)


@pytest.mark.parametrize("name, params", [("hiera_b_16x224", 50.8e6), ("hiera_l_16x224", 212.6e6)])
def test_parameter_counts(name, params):
    # official hiera-transformer 0.1.4: 51.09 M / 213.09 M with the 400-way K400 head (0.31 M / 0.46 M)
    with torch.device("meta"):
        m = build_hiera(name)
    assert abs(sum(p.numel() for p in m.parameters()) - params) < 0.1e6


GRIDS = {  # (name, input, q_pool) -> output grid
    ("hiera_b_16x224", (16, 224, 224), 3): (8, 7, 7),
    ("hiera_b_16x224", (16, 224, 224), 2): (8, 14, 14),
    ("hiera_l_16x224", (16, 256, 256), 2): (8, 16, 16),  # configs/paper/ava/hieral_16x224.yaml
    ("hiera_l_16x224", (16, 256, 256), 3): (8, 8, 8),
    ("hiera_l_16x224", (16, 224, 288), 2): (8, 14, 18),  # non-square
    ("hiera_tiny", (8, 64, 64), 2): (4, 4, 4),
    ("hiera_tiny", (8, 64, 48), 1): (4, 8, 6),
}


@pytest.mark.parametrize("key", list(GRIDS), ids=lambda k: f"{k[0]}-{'x'.join(map(str, k[1]))}-q{k[2]}")
def test_output_shape_and_grid_on_meta(key):
    name, size, q_pool = key
    with torch.device("meta"):
        m = build_hiera(name, size, q_pool=q_pool)
        y = m.forward_features(torch.empty(2, 3, *size))
    assert tuple(y.shape) == (2, m.out_dim, *GRIDS[key])
    assert m.grid(*size) == GRIDS[key] == output_grid(HIERA_SPECS[name], size, q_pool)
    assert m.out_dim == {"hiera_b_16x224": 768, "hiera_l_16x224": 1152, "hiera_tiny": 128}[name]


def test_input_not_divisible_into_mask_units_is_a_config_error():
    with pytest.raises(ConfigError, match="multiples of 32"):
        build_hiera("hiera_b_16x224", (16, 240, 240))


# ------------------------------------------------------------------------------ token order


@pytest.mark.parametrize("thw, levels", [((4, 16, 8), 2), ((2, 8, 8), 3), ((3, 4, 12), 1), ((3, 5, 7), 0)])
def test_unroll_and_reroll_are_inverse_permutations(thw, levels):
    n = thw[0] * thw[1] * thw[2]
    idx = torch.arange(n, dtype=torch.float32).view(1, n, 1)
    u = unroll(idx, thw, (1, 2, 2), levels)
    assert torch.equal(u.flatten().sort().values, idx.flatten())  # a permutation
    assert torch.equal(reroll(u, thw, (1, 2, 2), levels), idx)
    assert torch.equal(unroll(reroll(idx, thw, (1, 2, 2), levels), thw, (1, 2, 2), levels), idx)


def test_unrolled_order_makes_pooling_and_mask_units_contiguous():
    thw, levels = (2, 8, 8), 2
    x = torch.randn(1, 2 * 8 * 8, 3)
    u = unroll(x, thw, (1, 2, 2), levels)
    # max over the outermost quarter == 2×2 spatial max pool, in the unrolled order of the pooled grid
    pooled = u.view(1, 4, -1, 3).amax(1)
    grid = x.transpose(1, 2).reshape(1, 3, *thw)
    want = F.max_pool3d(grid, (1, 2, 2)).flatten(2).transpose(1, 2)
    assert torch.equal(reroll(pooled, (2, 4, 4), (1, 2, 2), levels - 1), want)
    # mask units: the innermost index runs over the 2×2×2 coarse cells; each holds one 1×4×4 block
    pos = unroll(torch.arange(128.0).view(1, 128, 1), thw, (1, 2, 2), levels).view(16, 8)  # (within-unit, unit)
    for unit in range(8):
        t, h, w = (pos[:, unit].long() // 64), (pos[:, unit].long() // 8) % 8, pos[:, unit].long() % 8
        assert len(set(t.tolist())) == 1 and len(set((h // 4).tolist())) == 1 and len(set((w // 4).tolist())) == 1
        assert len(set(zip(h.tolist(), w.tolist()))) == 16


def _token_local(model: Hiera) -> Hiera:
    """Zero the attention and MLP outputs: every block is then identity / norm + linear + 2×2 max pool."""
    with torch.no_grad():
        for blk in model.blocks:
            for lin in (blk.attn.proj, blk.mlp[2]):
                lin.weight.zero_()
                lin.bias.zero_()
    return model


def test_output_grid_is_in_spatial_order():
    """With token-local blocks the network is conv + pos + per-token maps + max pools, which we can
    compute directly on the (t, h, w) grid; any scrambling of the token order would show."""
    torch.manual_seed(0)
    m = _token_local(Hiera(TINY, (8, 64, 48), q_pool=1)).eval()
    clip = torch.randn(1, 3, 8, 64, 48)
    with torch.no_grad():
        got = m.forward_features(clip)
        x = m.patch_embed(clip)  # (1, C, 4, 16, 12)
        x = x + m.pos_embed(tuple(x.shape[2:])).transpose(1, 2).reshape(x.shape)
        for blk in m.blocks:
            if blk.proj is not None:
                x = blk.proj(blk.norm1(x.movedim(1, -1))).movedim(-1, 1)
            if blk.s.q_stride > 1:
                x = F.max_pool3d(x, (1, 2, 2))
        want = m.norm(x.movedim(1, -1)).movedim(-1, 1)
    assert got.shape == (1, 128, 4, 8, 6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # stage outputs are spatially ordered too
    with torch.no_grad():
        stages = m.forward_stages(clip)
    assert [tuple(s.shape[2:]) for s in stages] == [(4, 16, 12), (4, 8, 6), (4, 8, 6)]


def test_key_frame_maps_to_slice_t_over_2():
    """Kernel 3 / stride 2 / padding 1 in time: output slice j is centred on input frame 2j, so the
    key frame T/2 lands in slice t//2 only (checked on a token-local model)."""
    torch.manual_seed(0)
    m = _token_local(Hiera(TINY, (8, 64, 64))).eval()
    base = torch.zeros(1, 3, 8, 64, 64)
    impulse = base.clone()
    impulse[:, :, 4] = torch.randn(3, 64, 64)  # key frame T/2 = 4
    with torch.no_grad():
        diff = (m.forward_features(impulse) - m.forward_features(base)).abs().amax(dim=(0, 1, 3, 4))
    assert diff.shape == (4,) and diff[2] > 0 and diff[[0, 1, 3]].max() == 0


# ------------------------------------------------------------------------------ position embeddings


def test_pos_embed_resize():
    spatial, temporal = torch.randn(1, 16, 5), torch.randn(1, 4, 5)
    s, t = resize_pos_embed(spatial, temporal, (4, 4), (4, 4, 4))
    assert torch.equal(s, spatial) and torch.equal(t, temporal)  # same grid: untouched
    const = torch.ones(1, 16, 5) * 3.0
    s, t = resize_pos_embed(const, torch.arange(4.0).view(1, 4, 1), (4, 4), (8, 6, 8))
    assert s.shape == (1, 48, 5) and torch.allclose(s, torch.full_like(s, 3.0))
    # linear in time, align_corners=False: values at (j + 0.5) / 2 - 0.5 of the old axis, clamped
    assert torch.allclose(t.flatten(), torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]))


def test_load_time_resize_equals_runtime_resize(tmp_path):
    torch.manual_seed(0)
    small = Hiera(TINY, (8, 64, 64)).eval()
    path = tmp_path / "official.pth"
    torch.save({"model_state": {**to_hiera(small.state_dict()), "head.projection.weight": torch.zeros(3, 128)}}, path)
    big = Hiera(TINY, (8, 96, 80)).eval()
    report = big.load_checkpoint(path, "hiera")
    assert [k for k, *_ in report.resized] == ["pos_embed_spatial"]
    assert list(report.resized[0][1:]) == [[1, 256, 32], [1, 24 * 20, 32]]
    clip = torch.randn(1, 3, 8, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(big.forward_features(clip), small.forward_features(clip))


# ------------------------------------------------------------------------------ checkpoint import


def test_official_layout_round_trip_every_weight_lands(tmp_path):
    sd = official_state_dict(TINY, (8, 64, 64))
    model = Hiera(TINY, (8, 64, 64))
    out = from_hiera({"model_state": sd}, target=model)
    r = out.report
    assert r.dropped == ["head.projection.weight", "head.projection.bias"]
    assert not r.missing and not r.unexpected and not r.resized
    assert r.converted == len(model.state_dict()) == len(sd) - 2
    for theirs, ours in (("patch_embed.proj.weight", "patch_embed.weight"), ("blocks.1.mlp.fc1.bias", "blocks.1.mlp.0.bias"),
                         ("blocks.3.mlp.fc2.weight", "blocks.3.mlp.2.weight"), ("blocks.1.proj.weight", "blocks.1.proj.weight")):
        assert torch.equal(out[ours], sd[theirs])
    assert to_hiera(out) == {k: v for k, v in sd.items() if not k.startswith("head.")}  # and back
    # through a file, with a DDP prefix, as build_detector's hook calls it
    path = tmp_path / "hiera_tiny.pth"
    torch.save({"model_state": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)
    report = model.load_checkpoint(path, "auto")
    assert report.converted == len(model.state_dict()) and len(report.dropped) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, out[k]), k


def test_mae_checkpoint_drops_decoder_and_starts_norm_as_identity(tmp_path):
    sd = official_state_dict(TINY, (8, 64, 64), mae=True)
    path = tmp_path / "mae_hiera.pth"
    torch.save({"model_state": sd}, path)
    model = Hiera(TINY, (8, 64, 64))
    report = model.load_checkpoint(path, "hiera")
    assert report.missing == ["norm.weight", "norm.bias"]
    assert {k.split(".")[0].split("_")[0] for k in report.dropped} == {"encoder", "mask", "multi", "decoder"}
    assert torch.equal(model.norm.weight, torch.ones(128)) and torch.equal(model.norm.bias, torch.zeros(128))
    assert torch.equal(model.blocks[4].mlp[2].weight, sd["blocks.4.mlp.fc2.weight"])


def test_bmvit_detector_checkpoint_loads_backbone_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    det = build_detector(ModelConfig(backbone="hiera_tiny", head_hidden=32), DataConfig(num_frames=8, size=64), 3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in det.state_dict().items()}, str(path))
    fresh = Hiera(TINY, (8, 64, 64), q_pool=1)
    report = fresh.load_checkpoint(path, "auto")
    assert report.source == "bmvit" and not report.missing and not report.unexpected
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, det.backbone.state_dict()[k]), k


def test_bad_checkpoints_raise_checkpoint_errors_naming_the_file(tmp_path):
    model = Hiera(TINY, (8, 64, 64))
    with pytest.raises(CheckpointError, match="not found"):
        model.load_checkpoint(tmp_path / "absent.pth", "hiera")
    evil = tmp_path / "evil.pth"
    torch.save({"model_state": {"x": torch.zeros(1)}, "cfg": ConfigError("pickled object")}, evil)
    with pytest.raises(CheckpointError, match="evil.pth.*refused"):
        model.load_checkpoint(evil, "hiera")
    mvit_like = tmp_path / "mvit.pth"
    torch.save({"model_state": {"patch_embed.proj.weight": torch.zeros(96, 3, 3, 7, 7)}}, mvit_like)
    with pytest.raises(CheckpointError, match="mvit.pth.*not a video Hiera"):
        model.load_checkpoint(mvit_like, "auto")
    with pytest.raises(CheckpointError, match="MViT layout"):
        model.load_checkpoint(mvit_like, "slowfast")
    other = tmp_path / "hiera_b.pth"
    torch.save({"model_state": official_state_dict(HIERA_SPECS["hiera_b_16x224"], (16, 64, 64))}, other)
    with pytest.raises(CheckpointError, match="hiera_b.pth: '.*'.*does not fit"):
        model.load_checkpoint(other, "hiera")


# ------------------------------------------------------------------------------ detector


def test_detector_forward_backward_cpu():
    torch.manual_seed(0)
    model = build_detector(ModelConfig(backbone="hiera_tiny", head_hidden=32, grad_checkpointing=True),
                           DataConfig(num_frames=8, size=64), num_classes=3)
    assert model.backbone.q_pool == 1  # remove_last_pool (default true): one pooling stage fewer
    model.train()
    out = model(torch.randn(2, 3, 8, 64, 64))
    assert out["grid"] == (4, 8, 8)
    assert out["boxes"].shape == (2, 2 * 8 * 8, 4) and out["action_logits"].shape == (2, 128, 3)
    (out["boxes"].sum() + out["actor_logits"].sum() + out["action_logits"].sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["backbone.pos_embed_spatial"].abs().sum() > 0 and grads["backbone.blocks.0.attn.qkv.weight"].abs().sum() > 0
    # layer-wise lr decay finds Hiera's blocks; position embeddings are stem parameters without weight decay
    groups = param_groups(model, 1e-4, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["backbone.pos_embed_temporal"])] == scale[id(named["backbone.patch_embed.weight"])] == 0.5 ** 6
    assert scale[id(named["backbone.blocks.4.attn.qkv.weight"])] == 0.5
    assert decay[id(named["backbone.pos_embed_spatial"])] == 0.0 and decay[id(named["backbone.blocks.0.attn.qkv.weight"])] > 0


def test_paper_config_builds_with_the_expected_grid():
    cfg = load_config("configs/paper/ava/hieral_16x224.yaml", ["model.pretrained=null"])
    assert cfg.model.backbone == "hiera_l_16x224" and cfg.data.size == 256
    with torch.device("meta"):
        det = build_detector(cfg.model, cfg.data, num_classes=80)
        out = det(torch.empty(1, 3, 16, 256, 256))
    assert det.backbone.q_pool == 2 and out["grid"] == (8, 16, 16) and out["boxes"].shape == (1, 512, 4)
    cfg = load_config("configs/paper/ava/hieral_16x224.yaml")
    assert cfg.model.pretrained_format == "hiera"
    with torch.device("meta"), pytest.raises(CheckpointError, match="'model.pretrained'.*hiera_large_16x224.pth"):
        build_detector(cfg.model, cfg.data, num_classes=80)
