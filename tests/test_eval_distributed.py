"""Distributed evaluation: a 2-process CPU (gloo) run gives exactly the single-process rows and
mAP on the small synthetic set, every sample predicted once (no sampler padding)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bmvit.engine.evaluate import evaluate_split, shard_batches

OVERRIDES = {
    "data.size": 48, "data.num_frames": 8, "model.backbone": "mvit_tiny", "model.head_hidden": 32,
    "model.kv_stride": "[1,4,4]", "eval.threshold": 0.001, "eval.batch_size": 5, "train.threads": 1,
}


@pytest.mark.parametrize("n,bs,world", [(16, 5, 2), (16, 4, 2), (7, 3, 3), (2, 5, 4), (0, 3, 2), (23, 1, 5)])
def test_shards_cover_every_sample_once_with_single_process_batches(n, bs, world):
    single = [idx for _, idx in shard_batches(n, bs, 0, 1)]
    parts = [shard_batches(n, bs, r, world) for r in range(world)]
    numbered = sorted(b for part in parts for b in part)
    assert [idx for _, idx in numbered] == single  # same batches, each exactly once
    assert sorted(i for idx in single for i in idx) == list(range(n))


def _setup(root: str):
    from bmvit.config import load_config
    from bmvit.data.build import make_dataset
    from bmvit.models.build import build_detector

    torch.set_num_threads(1)
    cfg = load_config(None, [f"{k}={v}" for k, v in {**OVERRIDES, "data.root": root}.items()])
    ds = make_dataset(cfg, "val")
    model = build_detector(cfg.model, cfg.data, len(ds.labels))
    return cfg, ds, model


def _worker(rank: int, world: int, root: str, state_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        cfg, ds, model = _setup(root)
        model.load_state_dict(torch.load(state_path, weights_only=True))
        res, rows = evaluate_split(model, ds, cfg.data.path(cfg.data.val_csv), cfg, torch.device("cpu"), progress=False)
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump({"map": res.mean_ap, "aps": res.per_class_ap, "rows": rows}, f)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(small_synth, tmp_path):
    cfg, ds, model = _setup(str(small_synth))
    torch.manual_seed(0)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    torch.save(state, tmp_path / "state.pt")
    single, rows = evaluate_split(model, ds, cfg.data.path(cfg.data.val_csv), cfg, torch.device("cpu"), progress=False)
    assert len(rows) > 0 and len(ds) % cfg.eval.batch_size != 0  # uneven shards are exercised

    mp.spawn(_worker, args=(2, str(small_synth), str(tmp_path / "state.pt"), str(tmp_path)), nprocs=2, join=True)
    r0 = pickle.loads((tmp_path / "rank0.pkl").read_bytes())
    r1 = pickle.loads((tmp_path / "rank1.pkl").read_bytes())
    assert r0["map"] == single.mean_ap and r1["map"] == single.mean_ap  # exactly, on every rank
    assert json.dumps(r0["aps"]) == json.dumps(single.per_class_ap)
    got = r0["rows"]
    assert got.video_ids == rows.video_ids
    for name in ("timestamps", "boxes", "actions", "person_or_score"):
        assert np.array_equal(getattr(got, name), getattr(rows, name)), name
    assert len(r1["rows"]) == 0  # rows live on rank 0 only
    frames = {(v, int(t)) for v, t in zip(rows.video_ids, rows.timestamps)}
    assert len(frames) == len(ds)  # every key frame predicted (and, by the equality above, once)
