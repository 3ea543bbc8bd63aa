"""Other runtimes (inference.precision): the backbone through torch.compile at a fixed batch size
(``bmvit benchmark --compile``) gives the eager detections up to rounding; ``bmvit benchmark --onnx
--quantize int8`` times an int8 ONNX model; MViT (class token + rel-pos) traces as one graph; misuse
is a one-line ConfigError. The real
inductor compilation takes minutes on 2 busy cores: that test is ``slow``
(benchmarks/precision_speed.py --compile checks the paper-size model's outputs too)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from inference_fixtures import tiny_config, tiny_model

import bmvit.inference.precision as precision
from bmvit.cli.main import main as bmvit
from bmvit.errors import ConfigError
from bmvit.inference.precision import CompiledBackbone, compile_backbone, prepare_model
from bmvit.models.mvit import build_mvit

torch.set_num_threads(1)
HAS_CXX = bool(shutil.which("g++") or shutil.which("c++"))


@pytest.fixture(scope="module")
def model_and_clips():
    cfg = tiny_config(rel_pos=True)
    torch.manual_seed(1)
    return tiny_model(cfg), torch.randn(3, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)  # (3, 3, T, S, S)


def test_mvit_with_class_token_and_rel_pos_traces_as_one_graph():
    # A graph break per block (e.g. an op with a strided out= tensor) would split the compiled model
    # into dozens of graphs and hit dynamo's recompile limit: compile would then run mostly eager.
    model = build_mvit("mvit_tiny", (4, 32, 32), remove_last_pool=True, cls_token=True, rel_pos=True).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    torch._dynamo.reset()
    traced = torch.compile(model.forward_features, backend="eager", fullgraph=True)  # fullgraph: a break raises
    with torch.inference_mode():
        torch.testing.assert_close(traced(clip), model.forward_features(clip), rtol=0, atol=1e-6)


def test_fixed_batch_pads_short_batches_and_splits_long_ones(model_and_clips, monkeypatch):
    calls = []

    def fake_compile(module, **kwargs):  # the wrapper's logic without minutes of inductor
        calls.append(kwargs)
        return lambda clip: (calls.append(clip.shape[0]), module(clip))[1]

    monkeypatch.setattr(precision.torch, "compile", fake_compile)
    model, clips = model_and_clips
    compiled = copy.deepcopy(model)
    backbone = compile_backbone(compiled, batch=2)
    assert isinstance(compiled.backbone, CompiledBackbone) and calls[0] == {"dynamic": False, "options": {"freezing": True}}
    assert list(compiled.state_dict()) == [k.replace("backbone.", "backbone.inner.", 1) if k.startswith("backbone.") else k
                                           for k in model.state_dict()]  # weights once, not twice
    with torch.inference_mode():
        for n in (1, 2, 3):  # padded to 2; exact; split 2 + 1 (padded)
            calls[1:] = []
            out, ref = compiled(clips[:n]), model(clips[:n])
            assert calls[1:] == [2] * (1 + (n > 2))
            for key in ("boxes", "actor_logits", "action_logits"):
                torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-6)
        assert backbone.warm_up(tuple(clips.shape[1:])) >= 0 and calls[-1] == 2


def test_misuse_is_a_config_error(model_and_clips, monkeypatch):
    model, _ = model_and_clips
    with pytest.raises(ConfigError, match="drop --quantize"):
        compile_backbone(prepare_model(copy.deepcopy(model), "fp32", "int8"), 2)
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        compile_backbone(copy.deepcopy(model), 2)
    assert bmvit(["benchmark", "--config", "configs/synthetic/tiny.yaml", "--runs", "1", "--warmup", "0", "--compile",
                  "data.size=64", "data.num_frames=8"]) == 2  # no compiler: the one-line error, exit status 2


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CXX, reason="torch.compile (inductor) needs a C++ compiler on the CPU")
def test_compiled_backbone_gives_the_eager_detections(model_and_clips):
    # Tolerance: 1e-4 on boxes and logits (measured 1e-7 / 6e-6: the fused kernels sum in another order).
    model, clips = model_and_clips
    compiled = copy.deepcopy(model)
    compile_backbone(compiled, batch=2).warm_up(tuple(clips.shape[1:]))
    with torch.inference_mode():
        out, ref = compiled(clips), model(clips)
    for key in ("boxes", "actor_logits", "action_logits"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-4)
    kept = ref["actor_logits"].sigmoid() > 0.5  # (B, L): the detections at θ = 0.5
    assert kept.any() and torch.equal(out["actor_logits"].sigmoid() > 0.5, kept)
    torch.testing.assert_close(out["action_logits"][kept].sigmoid(), ref["action_logits"][kept].sigmoid(), rtol=0, atol=1e-4)


def test_benchmark_times_the_int8_onnx_model(capsys):
    pytest.importorskip("onnxruntime")
    over = ["data.size=64", "data.num_frames=8", "model.head_hidden=32"]
    assert bmvit(["benchmark", "--config", "configs/synthetic/tiny.yaml", "--model", "detector", "--runs", "1",
                  "--warmup", "0", "--json", "--onnx", "--quantize", "int8", "--threads", "1", *over]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runtime"] == "onnxruntime" and res["quantize"] == "int8" and res["export_s"] > 0
