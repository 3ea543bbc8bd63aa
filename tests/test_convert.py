"""Checkpoint import: key layouts both ways, rel-pos resizing, safe loading (self-made fixtures only)."""

import re
from dataclasses import replace

import pytest
import torch

from bmvit.cli.main import main as bmvit
from bmvit.errors import CheckpointError
from bmvit.models.checkpoints.mvit import (
    ConvertedStateDict,
    from_slowfast,
    from_torchvision,
    load_mvit_checkpoint,
    read_checkpoint,
    to_slowfast,
    to_torchvision,
)
from bmvit.models.mvit import MVIT_SPECS, MViT, mvitv2_s
from bmvit.models.position import interpolate_rel_pos

TINY = replace(MVIT_SPECS["mvit_tiny"], cls_token=True)  # the reference layouts always carry a class token


def reference_state_dict(model: MViT, layout: str, num_classes: int = 7) -> dict[str, torch.Tensor]:
    """A state dict in the reference key layout, written from the reference naming (not from the converter)."""
    g = torch.Generator().manual_seed(0)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    device = model.patch_embed.weight.device
    rnd = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    sf = layout == "slowfast"
    c0 = model.spec.embed_dim
    sd = {
        ("patch_embed.proj.weight" if sf else "conv_proj.weight"): rnd(*shapes["patch_embed.weight"]),
        ("patch_embed.proj.bias" if sf else "conv_proj.bias"): rnd(c0),
        ("cls_token" if sf else "pos_encoding.class_token"): rnd(1, 1, c0) if sf else rnd(c0),
    }
    for i, row in enumerate(model.table):
        b, d_in, d_out = f"blocks.{i}.", row.dim_in, row.dim_out
        hd = d_out // row.num_heads
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = rnd(d_in), rnd(d_in)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = rnd(d_out), rnd(d_out)
        sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = rnd(3 * d_out, d_in), rnd(3 * d_out)
        proj = "attn.proj." if sf else "attn.project.0."
        sd[b + proj + "weight"], sd[b + proj + "bias"] = rnd(d_out, d_out), rnd(d_out)
        for x in "qkv":
            sd[b + (f"attn.pool_{x}.weight" if sf else f"attn.pool_{x}.pool.weight")] = rnd(hd, 1, 3, 3, 3)
            norm = f"attn.norm_{x}." if sf else f"attn.pool_{x}.norm_act.0."
            sd[b + norm + "weight"], sd[b + norm + "bias"] = rnd(hd), rnd(hd)
        for a in "thw":
            sd[b + f"attn.rel_pos_{a}"] = rnd(*shapes[b + f"attn.rel_pos_{a}"])
        fc1, fc2 = ("mlp.fc1.", "mlp.fc2.") if sf else ("mlp.0.", "mlp.3.")
        sd[b + fc1 + "weight"], sd[b + fc1 + "bias"] = rnd(4 * d_out, d_out), rnd(4 * d_out)
        sd[b + fc2 + "weight"], sd[b + fc2 + "bias"] = rnd(d_out, 4 * d_out), rnd(d_out)
        if d_in != d_out:
            p = "proj." if sf else "project."
            sd[b + p + "weight"], sd[b + p + "bias"] = rnd(d_out, d_in), rnd(d_out)
    c = model.out_dim
    sd["norm.weight"], sd["norm.bias"] = rnd(c), rnd(c)
    head = "head.projection." if sf else "head.1."
    sd[head + "weight"], sd[head + "bias"] = rnd(num_classes, c), rnd(num_classes)
    return sd


@pytest.mark.parametrize("layout", ["torchvision", "slowfast"])
def test_key_mapping_both_ways_tiny(layout):
    model = MViT(TINY, (8, 32, 32))
    ref = reference_state_dict(model, layout)
    convert_in, convert_out = (from_torchvision, to_torchvision) if layout == "torchvision" else (from_slowfast, to_slowfast)
    ours = convert_in(ref, target=model)
    assert isinstance(ours, ConvertedStateDict) and isinstance(ours, dict)
    model.load_state_dict(ours, strict=True)
    r = ours.report
    assert sorted(r.dropped) == sorted(k for k in ref if k.startswith("head."))
    assert r.unexpected == [] and r.missing == [] and r.resized == []
    # spot values: renamed tensors are the same tensors (class token reshaped to (1, 1, C))
    fc2 = "blocks.1.mlp.fc2.weight" if layout == "slowfast" else "blocks.1.mlp.3.weight"
    assert torch.equal(model.blocks[1].mlp[2].weight, ref[fc2])
    cls = ref["cls_token" if layout == "slowfast" else "pos_encoding.class_token"]
    assert torch.equal(model.cls_token.reshape(-1), cls.reshape(-1)) and model.cls_token.shape == (1, 1, TINY.embed_dim)
    # and back: the reference layout minus its classification head, value for value
    back = convert_out(model.state_dict())
    assert set(back) == {k for k in ref if not k.startswith("head.")}
    assert all(torch.equal(back[k], ref[k]) for k in back)


def test_key_mapping_mvitv2_s_full_layout_on_meta():
    with torch.device("meta"):
        model = mvitv2_s()
        sd_tv = reference_state_dict(model, "torchvision", num_classes=400)
        sd_sf = reference_state_dict(model, "slowfast", num_classes=400)
    assert sum(v.numel() for v in sd_tv.values()) == 34_537_744  # torchvision mvit_v2_s num_params
    for convert_in, sd in ((from_torchvision, sd_tv), (from_slowfast, sd_sf)):
        ours = convert_in(sd, target=model)
        assert ours.report.missing == [] and ours.report.unexpected == [] and len(ours.report.dropped) == 2
        model.load_state_dict(ours, strict=True, assign=True)
    assert set(to_torchvision(model.state_dict())) == {k for k in sd_tv if not k.startswith("head.")}


def test_slowfast_ddp_prefix_and_unknown_keys_reported():
    model = MViT(TINY, (8, 32, 32))
    ref = {f"module.{k}": v for k, v in reference_state_dict(model, "slowfast").items()}
    ref["module.pos_embed"] = torch.zeros(1, 4, 32)  # MViTv1-style absolute embedding: no place in MViTv2
    out = from_slowfast({"model_state": ref, "epoch": 3}, target=model)
    assert out.report.unexpected == ["pos_embed"]
    model.load_state_dict(out, strict=True)


def test_interpolate_rel_pos():
    table = torch.randn(7, 5)
    assert interpolate_rel_pos(table, 7) is table
    assert interpolate_rel_pos(torch.ones(7, 5) * 3, 13).allclose(torch.full((13, 5), 3.0))
    ramp = torch.arange(4.0)[:, None].expand(4, 2)
    up = interpolate_rel_pos(ramp, 8)  # linear, align_corners=False: half-pixel centres
    assert up.shape == (8, 2) and torch.allclose(up[:, 0], torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]))


def test_resized_tables_compute_what_runtime_interpolation_computes():
    """A checkpoint for 32² resized to a model built for 48² (and with the last pool removed) gives the
    same output as the 32² model, which interpolates its tables on the fly at 48²."""
    torch.manual_seed(0)
    for remove in (False, True):
        small = MViT(TINY, (8, 32, 32), remove_last_pool=remove).eval()
        big = MViT(TINY, (8, 48, 48), remove_last_pool=remove).eval()
        sd = from_torchvision(to_torchvision(small.state_dict()), target=big)
        assert sd.report.resized and all(k.endswith(("rel_pos_h", "rel_pos_w")) for k, _, _ in sd.report.resized)
        big.load_state_dict(sd, strict=True)
        x = torch.randn(1, 3, 8, 48, 48)
        with torch.no_grad():
            assert torch.allclose(small.forward_features(x), big.forward_features(x), atol=1e-5)


def test_pooling_removal_resizes_last_stage_tables():
    pooled = MViT(TINY, (8, 32, 32))
    unpooled = MViT(TINY, (8, 32, 32), remove_last_pool=True)
    sd = from_slowfast(to_slowfast(pooled.state_dict()), target=unpooled)
    resized = {k for k, _, _ in sd.report.resized}
    assert resized == {"blocks.4.attn.rel_pos_h", "blocks.4.attn.rel_pos_w"}  # the block after the removed pool
    unpooled.load_state_dict(sd, strict=True)


def test_shape_mismatch_names_the_key():
    model = MViT(TINY, (8, 32, 32))
    sd = to_torchvision(model.state_dict())
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="blocks.0.attn.qkv.weight"):
        from_torchvision(sd, target=model)


_EXECUTED = []


def _side_effect():
    _EXECUTED.append(True)
    return "not a tensor"


class _Evil:
    def __reduce__(self):
        return (_side_effect, ())


def test_unsafe_checkpoint_is_refused(tmp_path):
    model = MViT(TINY, (8, 32, 32))
    path = tmp_path / "evil.pyth"
    torch.save({"model_state": to_slowfast(model.state_dict()), "extra": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        read_checkpoint(path)
    assert str(path) in str(e.value) and not _EXECUTED
    with pytest.raises(CheckpointError, match="refused"):
        load_mvit_checkpoint(model, path, "slowfast")
    assert not _EXECUTED


def test_convert_cli_and_config_pretrained(tmp_path, capsys):
    from bmvit.config import load_config
    from bmvit.models.build import build_detector

    src_model = MViT(TINY, (8, 32, 32))
    ref = reference_state_dict(src_model, "slowfast")
    torch.save({"epoch": 200, "model_state": ref, "cfg": "MVIT:\n  DEPTH: 5\n"}, tmp_path / "k400.pyth")
    out = tmp_path / "k400.safetensors"
    assert bmvit(["convert", "--from", "slowfast", str(tmp_path / "k400.pyth"), "--out", str(out)]) == 0
    assert "dropped (2): head.projection.weight, head.projection.bias" in capsys.readouterr().out  # the report
    # a weight the configured backbone does not have is refused, by name (mvit_tiny has no class token)
    cfg = load_config(None, ["model.backbone=mvit_tiny", "data.num_frames=8", "data.size=48", f"model.pretrained={out}"])
    with pytest.raises(CheckpointError, match=r"^'model.pretrained': .*k400.safetensors: 'cls_token': .*\(bmvit layout\)"
                                              r".*the MViT backbone does not have"):
        build_detector(cfg.model, cfg.data, num_classes=3)
    # without it, the converted file initializes the configured backbone (a larger input: rel-pos tables resized)
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(out).items() if k != "cls_token"}, tmp_path / "k400_no_cls.safetensors")
    cfg = load_config(None, ["model.backbone=mvit_tiny", "data.num_frames=8", "data.size=48",
                             f"model.pretrained={tmp_path / 'k400_no_cls.safetensors'}"])
    det = build_detector(cfg.model, cfg.data, num_classes=3)
    assert torch.equal(det.backbone.blocks[2].attn.qkv.weight, ref["blocks.2.attn.qkv.weight"])
    assert det.backbone.blocks[0].attn.rel_pos_h.shape[0] > ref["blocks.0.attn.rel_pos_h"].shape[0]
    # unsafe file through the CLI: one error line, exit status 2, nothing written
    torch.save({"model_state": ref, "extra": _Evil()}, tmp_path / "evil.pyth")
    assert bmvit(["convert", "--from", "slowfast", str(tmp_path / "evil.pyth"), "--out", str(tmp_path / "e.safetensors")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "refused to load" in last and "evil.pyth" in last
    assert not (tmp_path / "e.safetensors").exists() and not _EXECUTED
    # a missing pretrained file names the config key
    cfg = load_config(None, ["model.backbone=mvit_tiny", "data.size=32", f"model.pretrained={tmp_path / 'nope.pyth'}"])
    with pytest.raises(CheckpointError, match="'model.pretrained'.*not found"):
        build_detector(cfg.model, cfg.data, num_classes=3)


def test_convert_cli_refuses_the_wrong_layout_and_names_the_file(tmp_path, capsys):
    """--from slowfast on a torchvision file wrote a file of leftovers (exit 0); a shape error did not name the file."""
    model = MViT(TINY, (8, 32, 32))
    torch.save(reference_state_dict(model, "torchvision"), tmp_path / "tv.pth")
    torch.save({"model_state": reference_state_dict(model, "slowfast")}, tmp_path / "sf.pyth")
    (tmp_path / "zero.pyth").write_bytes(b"")
    out = tmp_path / "o.safetensors"
    cases = [(["tv.pth", "--from", "slowfast"], r"tv.pth: the keys are in the torchvision layout \(e.g. 'conv_proj\.[a-z]+'\), "
                                                r"not slowfast: use --from torchvision"),
             (["sf.pyth", "--from", "torchvision"], "sf.pyth: the keys are in the slowfast layout .* use --from slowfast"),
             (["zero.pyth", "--from", "slowfast"], r"zero.pyth: empty file \(0 bytes\), not a checkpoint"),
             (["sf.pyth", "--from", "slowfast", "--set", "model.backbone=mvit_tiny_fast", "--set", "data.size=32"],
              r"sf.pyth: 'blocks.3.norm2.weight': checkpoint shape \(128,\) does not fit the model's \(64,\)")]
    for args, match in cases:
        args[0] = str(tmp_path / args[0])
        assert bmvit(["convert", *args, "--out", str(out)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and re.search(match, last), last
        assert not out.exists()


def test_convert_cli_config_of_another_backbone_family_is_refused(tmp_path, capsys):
    """MViT weights 'fitted' to a Hiera config reported 'lacks 2 weights, e.g. pos_embed_spatial' (the rest matched by name)."""
    torch.save({"model_state": reference_state_dict(MViT(TINY, (8, 32, 32)), "slowfast")}, tmp_path / "sf.pyth")
    assert bmvit(["convert", str(tmp_path / "sf.pyth"), "--from", "slowfast", "--out", str(tmp_path / "o.safetensors"),
                  "--set", "model.backbone=hiera_tiny", "--set", "data.size=64"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: model.backbone=hiera_tiny: convert fits MViTv2 checkpoints to an MViT backbone")


def test_convert_cli_refuses_an_output_name_model_pretrained_would_misread(tmp_path, capsys):
    """--out x.pth wrote safetensors bytes under a name model.pretrained then reads with torch.load."""
    torch.save({"model_state": reference_state_dict(MViT(TINY, (8, 32, 32)), "slowfast")}, tmp_path / "sf.pyth")
    for name, hint in (("o.pth", "o.safetensors"), ("backbone", "backbone.safetensors")):
        assert bmvit(["convert", str(tmp_path / "sf.pyth"), "--from", "slowfast", "--out", str(tmp_path / name)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: --out {tmp_path / name}: convert writes a safetensors file; name it {hint}")
        assert not (tmp_path / name).exists()
