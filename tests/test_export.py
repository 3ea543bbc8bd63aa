"""ONNX export of the whole detector: onnxruntime parity (< 1e-4, fp32, CPU), dynamic batch, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from inference_fixtures import make_checkpoint, tiny_config, tiny_model  # noqa: E402

from bmvit.cli.main import main as bmvit  # noqa: E402
from bmvit.config import load_config  # noqa: E402
from bmvit.inference.export import OnnxModel, export_and_check, export_onnx  # noqa: E402
from bmvit.models.build import build_detector  # noqa: E402
from bmvit.models.postprocess import postprocess  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("rel_pos", [False, True], ids=["tiny", "tiny-relpos"])
def test_onnx_parity_tiny_config(tmp_path, rel_pos):
    cfg = tiny_config(rel_pos=rel_pos)
    model = tiny_model(cfg)
    shape = (1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)
    diffs = export_and_check(model, tmp_path / "m.onnx", shape, dynamic_batch=True, threads=1)
    assert diffs["max"] < 1e-4, diffs  # checked on a batch of 2 although traced with 1


def test_onnx_parity_class_token_backbone(tmp_path):
    """MViTv2-S layout (class token, rel-pos, residual pooling) at a toy size: the export-only branches."""
    cfg = load_config(None, ["model.backbone=mvitv2_s", "data.size=32", "data.num_frames=4", "model.head_hidden=32"])
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.data, 5, load_pretrained=False).eval()
    diffs = export_and_check(model, tmp_path / "s.onnx", (1, 3, 4, 32, 32), dynamic_batch=True, threads=1)
    assert diffs["max"] < 1e-4, diffs


def test_onnx_outputs_reproduce_postprocess(tmp_path):
    cfg = tiny_config()
    model = tiny_model(cfg)
    path = export_onnx(model, tmp_path / "m.onnx", (2, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size))
    clip = torch.randn(2, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size, generator=torch.Generator().manual_seed(1))
    boxes, actor, action = OnnxModel(path, threads=1).run(clip)
    with torch.no_grad():
        dets = postprocess(model(clip), cfg.eval.threshold)  # no NMS: plain thresholding
    for b, d in enumerate(dets):
        keep = np.flatnonzero(actor[b] > cfg.eval.threshold)
        assert keep.tolist() == d.tokens.tolist()
        assert np.abs(boxes[b, keep] - d.boxes.numpy()).max(initial=0) < 1e-5
        assert np.abs(action[b, keep] - d.action_scores.numpy()).max(initial=0) < 1e-5


def test_export_cli_prints_parity(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "model.safetensors")
    out = tmp_path / "exported" / "model.onnx"
    assert bmvit(["export", "--checkpoint", str(ck), "--format", "onnx", "--out", str(out), "--dynamic-batch",
                  "--threads", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert out.is_file() and res["dynamic_batch"] and res["parity_batch"] == 2
    assert res["max_abs_diff"] < 1e-4 and res["input"] == [1, 3, 8, 64, 64]
    assert bmvit(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "b.onnx"), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "max abs diff" in text and "parity vs PyTorch" in text


def test_export_cli_unwritable_out_is_one_error_line(tmp_path, capsys):
    """--out under a file (a file where a folder should be) was a FileExistsError traceback."""
    ck = make_checkpoint(tmp_path / "model.safetensors")
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / "model.onnx"
    assert bmvit(["export", "--checkpoint", str(ck), "--out", str(out), "--no-check", "--threads", "1"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{out.parent}: cannot write output" in last  # before the trace
