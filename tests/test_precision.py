"""Reduced-precision inference (inference.precision): bf16 backbone and dynamic int8 linear layers
give the fp32 detections up to their rounding, through the Detector and `bmvit detect`/`benchmark`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from inference_fixtures import make_checkpoint, tiny_config, tiny_model, write_video

from bmvit.cli.main import main as bmvit
from bmvit.errors import ConfigError
from bmvit.inference.precision import CastBackbone, prepare_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_and_clip():
    cfg = tiny_config()
    torch.manual_seed(1)
    clip = torch.randn(2, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)
    return tiny_model(cfg), clip


@pytest.mark.parametrize("dtype,quantize,box_tol,prob_tol", [("bf16", None, 0.002, 0.05), ("fp32", "int8", 0.01, 0.15)])
def test_reduced_precision_outputs_follow_fp32(model_and_clip, dtype, quantize, box_tol, prob_tol):
    model, clip = model_and_clip
    with torch.inference_mode():
        ref = model(clip)
        reduced = prepare_model(copy.deepcopy(model), dtype, quantize)
        out = reduced(clip)
    for key in ("boxes", "actor_logits", "action_logits"):
        assert out[key].dtype == torch.float32 and out[key].shape == ref[key].shape
        a, b = (out[key], ref[key]) if key == "boxes" else (out[key].sigmoid(), ref[key].sigmoid())  # probabilities
        err = (a - b).abs().max().item()
        assert 0 < err < (box_tol if key == "boxes" else prob_tol), (key, err)  # changed (really reduced) but close
    if dtype == "bf16":
        assert isinstance(reduced.backbone, CastBackbone)
        assert next(reduced.backbone.parameters()).dtype == torch.bfloat16
        assert next(reduced.heads.parameters()).dtype == torch.float32  # heads stay float32
    else:
        names = {n for n, m in reduced.named_modules() if "quantized" in type(m).__module__}
        assert names and not any(n.endswith("qkv") for n in names)  # the fused qkv stays float


def test_invalid_combinations_are_config_errors(model_and_clip):
    model, _ = model_and_clip
    for kwargs in ({"dtype": "fp16"}, {"quantize": "int4"}, {"dtype": "bf16", "quantize": "int8"},
                   {"quantize": "int8", "device": "meta"}):
        with pytest.raises(ConfigError):
            prepare_model(copy.deepcopy(model), **kwargs)


def test_detect_bf16_records_its_precision_and_is_not_mixed_on_rerun(tmp_path):
    ckpt = make_checkpoint(tmp_path / "model.safetensors")
    video = write_video(tmp_path / "v.mp4", n=20, width=64, height=48)
    out = tmp_path / "out"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-video",
                  "--no-progress", "--dtype", "bf16"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert doc["settings"]["dtype"] == "bf16" and doc["settings"]["quantize"] is None
    batch = tmp_path / "batch"
    args = ["detect", str(video), str(video.with_name("other.mp4")), "--checkpoint", str(ckpt), "--out", str(batch),
            "--no-video", "--no-progress"]
    assert bmvit(args) == 1  # other.mp4 does not exist
    assert bmvit(args + ["--quantize", "int8"]) == 2  # v done in fp32: not silently mixed with int8


def test_benchmark_reports_the_mode(capsys):
    over = ["data.size=64", "data.num_frames=8", "model.head_hidden=32"]
    assert bmvit(["benchmark", "--config", "configs/synthetic/tiny.yaml", "--model", "detector", "--runs", "1",
                  "--warmup", "0", "--json", "--quantize", "int8", *over]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["quantize"] == "int8" and res["dtype"] == "float32" and not res["autocast"]
    assert bmvit(["benchmark", "--config", "configs/synthetic/tiny.yaml", "--runs", "1", "--warmup", "0", "--json",
                  "--dtype", "bf16", *over]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"
