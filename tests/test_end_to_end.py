"""A short train -> eval on the small synthetic set: proves the whole path *learns*.

Thresholds: an untrained detector scores ~0.0–0.05 frame-mAP here (its boxes are its grid cells,
its scores constant), so the assertions below cannot pass unless boxes, actor scores and action
scores all improved. The training split is a handful of clips the model must nearly memorise;
the held-out split (different seed) must clearly beat the untrained baseline.
"""

import json

import numpy as np
from dataclasses import replace

import pytest
import torch

from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.data.synthetic import generate
from bmvit.engine.evaluate import evaluate_split
from bmvit.engine.train import train
from bmvit.models.build import build_detector
from tests.conftest import SMALL

# Larger than the shared fixture: enough key frames (~180) to generalise to held-out videos.
MEDIUM = replace(SMALL, train_videos=48, val_videos=8, seconds=5, seed=11)


@pytest.fixture(scope="module")
def medium_synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("medium"), MEDIUM)


def _cfg(root, out, **kw):
    over = {
        "data.root": root, "data.size": 64, "data.num_frames": 8, "data.cache_frames": True,
        "data.hflip_prob": 0.5, "data.hflip_swap": "[[1,2]]",
        "model.backbone": "mvit_tiny", "model.head_hidden": 64, "model.kv_stride": "[1,4,4]",
        "loss.extra_positives": "centre_cell", "loss.cost_l1": 5, "loss.cost_giou": 2, "loss.cost_action": 0.5, "eval.nms_iou": 0.5, "eval.score": "actor*action",
        "train.out_dir": out, "train.batch_size": 8, "train.lr": 2e-3, "train.warmup_steps": 20,
        "train.grad_clip": 1.0, "train.log_every": 10, "train.threads": 2, **kw,
    }
    return load_config(None, [f"{k}={v}" for k, v in over.items()])


def test_train_then_eval_learns(medium_synth, tmp_path):
    cfg = _cfg(medium_synth, tmp_path / "run", **{"train.max_steps": 500})
    torch.manual_seed(0)
    ds_val = make_dataset(cfg, "val")
    untrained = build_detector(cfg.model, cfg.data, 6)
    base, _ = evaluate_split(untrained, ds_val, cfg.data.path(cfg.data.val_csv), cfg, torch.device("cpu"), progress=False)

    final = train(cfg, progress=False)
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3  # loss at least halves
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "config.yaml").is_file()

    from bmvit.engine.checkpoint import load_weights

    state, cfg2, meta = load_weights(tmp_path / "run" / "model.safetensors")
    model = build_detector(cfg2.model, cfg2.data, 6)
    model.load_state_dict(state)
    ds_train = make_dataset(cfg2, "train")
    fit, _ = evaluate_split(model, ds_train, cfg2.data.path(cfg2.data.train_csv), cfg2, torch.device("cpu"), progress=False)
    val = final["val_frame_map"]
    print(f"untrained val {base.mean_ap:.3f}  trained val {val:.3f}  train-split {fit.mean_ap:.3f}")
    # Measured (seed 0): untrained 0.000, held-out 0.168, train split 0.298 on the reference machine;
    # on the 2-core CI machine (2026-12-02) held-out 0.096-0.105 and train split 0.31-0.32 from run to run
    # (2-thread float sums are not bit-reproducible, and 500 steps on this small set amplify that).
    assert base.mean_ap < 0.05
    assert fit.mean_ap > 0.2
    assert val > 0.05 and val > base.mean_ap + 0.05


def test_overfits_a_handful_of_clips(small_synth):
    """Four clips, 150 steps: the loss must collapse and the clips' own frame-mAP approach 1."""
    from bmvit.data.collate import collate_square as collate
    from bmvit.data.transforms import normalize_clips
    from bmvit.data.formats.ava import read_rows
    from bmvit.data.keyframes import KeyFrameTable
    from bmvit.engine.evaluate import predict_rows
    from bmvit.evaluation.ava import evaluate_ava
    from bmvit.losses.criterion import SetCriterion
    from bmvit.losses.matcher import HungarianMatcher

    cfg = _cfg(small_synth, "unused", **{"data.size": 48, "data.hflip_prob": 0.0, "eval.nms_iou": "none",
                                          "eval.score": "action", "loss.extra_positives": "none"})
    torch.manual_seed(0)
    ds = make_dataset(cfg, "train")
    ds.table = KeyFrameTable.from_keyframes([k for k in ds.keyframes if len(k.boxes)][:4], len(ds.labels))
    clips, targets = collate([ds[i] for i in range(4)])
    clips = normalize_clips(clips, cfg.data.mean, cfg.data.std)  # uint8 -> normalized float (the device step)
    model = build_detector(cfg.model, cfg.data, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    matcher, criterion = HungarianMatcher(5, 2, 1, 0.5), SetCriterion()
    losses = []
    for _ in range(150):
        out = model(clips)
        loss = criterion.losses(out, targets, matcher(out, targets), sum(len(t["boxes"]) for t in targets))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    gt = read_rows(cfg.data.path(cfg.data.train_csv))
    keep = {(k.video_id, k.timestamp) for k in ds.keyframes}
    gt = gt.select(np.array([(v, int(t)) in keep for v, t in zip(gt.video_ids, gt.timestamps)]))
    result = evaluate_ava(gt, predict_rows(model, ds, cfg, torch.device("cpu"), progress=False), ds.labels)
    assert result.mean_ap > 0.9, result.per_class_ap
