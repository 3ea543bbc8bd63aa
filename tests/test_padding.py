"""Variable aspect ratio (Table 1c): padded batches, token validity, matcher/loss/eval with padding masks."""

import itertools
import json

import torch

from bmvit.boxes import cxcywh_to_xyxy
from bmvit.config import load_config
from bmvit.data.collate import pad_collate, unpad_boxes, valid_tokens
from bmvit.losses.criterion import SetCriterion
from bmvit.losses.matcher import HungarianMatcher, centre_cell_positives, centre_region_positives
from bmvit.models.token_selection import grid_cells


def _padded_targets():
    """Clip 0 is 64×48 (h×w), clip 1 is 40×96, on a 64×96 canvas (multiple 16)."""
    b0 = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # cxcywh on its own image
    b1 = torch.tensor([[0.25, 0.5, 0.3, 0.6], [0.8, 0.75, 0.2, 0.5]])  # 2nd box touches the bottom edge
    items = [(torch.zeros(3, 2, 64, 48), {"boxes": b0, "labels": torch.tensor([[1.0, 0.0]])}),
             (torch.zeros(3, 2, 40, 96), {"boxes": b1, "labels": torch.tensor([[0.0, 1.0], [1.0, 1.0]])})]
    clips, targets = pad_collate(items, multiple=16)
    return clips, targets, (b0, b1)


def test_valid_tokens_hand_case_and_unpad_round_trip():
    clips, targets, originals = _padded_targets()
    assert clips.shape == (2, 3, 2, 64, 96) and targets[0]["canvas_size"] == (64, 96)
    cells = grid_cells(4, 6)  # 16-pixel cells on the 64×96 canvas
    valid = valid_tokens(cells, targets)  # (2, 24)
    v0 = valid[0].reshape(4, 6)
    assert v0[:, :3].all() and not v0[:, 3:].any()  # image 0 covers 48 of 96 columns: cells 0..2
    v1 = valid[1].reshape(4, 6)  # image 1 covers 40 of 64 rows: cell centres at 8, 24 (in), 40, 56 (out)
    assert v1[:2].all() and not v1[2:].any()
    for t, orig in zip(targets, originals):
        back = unpad_boxes(cxcywh_to_xyxy(t["boxes"]), t)
        assert torch.allclose(back, cxcywh_to_xyxy(orig), atol=1e-6)
    assert valid_tokens(cells, [{"boxes": torch.zeros(0, 4)}]) is None  # unpadded batch: all tokens valid


def _outputs(L, K, seed):
    g = torch.Generator().manual_seed(seed)
    return {"boxes": torch.rand(2, L, 4, generator=g) * 0.5 + 0.25, "actor_logits": torch.randn(2, L, generator=g),
            "action_logits": torch.randn(2, L, K, generator=g)}


def test_matcher_with_padding_equals_brute_force_over_valid_tokens():
    _, targets, _ = _padded_targets()
    cells = grid_cells(4, 6)
    valid = valid_tokens(cells, targets)
    matcher = HungarianMatcher(1.0, 1.0, 1.0, 1.0)
    for seed in range(5):
        out = _outputs(24, 2, seed)
        # make every padded token the perfect candidate: it must still never be matched
        for b, t in enumerate(targets):
            out["boxes"][b, ~valid[b]] = t["boxes"][0]
            out["actor_logits"][b, ~valid[b]] = 20.0
        matches = matcher(out, targets, valid)
        for b, (t, (rows, cols)) in enumerate(zip(targets, matches)):
            assert valid[b, rows].all()
            cost = matcher.cost_matrix(out["boxes"][b], out["actor_logits"][b], out["action_logits"][b],
                                       t["boxes"], t["labels"])  # (L, N)
            ok = torch.nonzero(valid[b]).flatten().tolist()
            n = len(t["boxes"])
            best = min(sum(cost[r, j] for j, r in enumerate(perm)) for perm in itertools.permutations(ok, n))
            assert abs(float(cost[rows, cols].sum()) - float(best)) < 1e-5
        unmasked = matcher(out, targets)
        assert any((~valid[b, r]).any() for b, (r, _) in enumerate(unmasked))  # the mask is what prevents it


def test_loss_ignores_padded_tokens():
    _, targets, _ = _padded_targets()
    cells = grid_cells(4, 6)
    valid = valid_tokens(cells, targets)
    out = _outputs(24, 2, 0)
    matches = HungarianMatcher()(out, targets, valid)
    crit = SetCriterion().losses
    base = crit(out, targets, matches, 3.0, valid)
    changed = {k: v.clone() for k, v in out.items()}
    changed["actor_logits"][~valid] = 30.0  # confident false positives on padding: no effect
    changed["action_logits"][~valid] = 30.0
    again = crit(changed, targets, matches, 3.0, valid)
    for k in ("actor", "action", "l1", "giou", "loss"):
        assert torch.allclose(base[k], again[k]), k
    assert crit(changed, targets, matches, 3.0)["actor"] > base["actor"] + 1.0  # without the mask they count
    everything = torch.ones_like(valid)
    plain = crit(out, targets, matches, 3.0)
    assert torch.allclose(crit(out, targets, matches, 3.0, everything)["loss"], plain["loss"])
    focal = SetCriterion(focal_gamma=2.0).losses
    assert torch.allclose(focal(out, targets, matches, 3.0, valid)["actor"],
                          focal(changed, targets, matches, 3.0, valid)["actor"])


def test_extra_positives_stay_inside_the_image():
    _, targets, _ = _padded_targets()
    cells = grid_cells(4, 6)
    valid = valid_tokens(cells, targets)
    empty = [(torch.zeros(0, dtype=torch.long),) * 2 for _ in targets]
    wide = centre_region_positives(empty, cells, targets, radius=10.0, valid=valid)
    for b, (rows, _) in enumerate(wide):
        assert len(rows) > 0 and valid[b, rows].all()
    unmasked = centre_region_positives(empty, cells, targets, radius=10.0)
    assert any((~valid[b, r]).any() for b, (r, _) in enumerate(unmasked))
    for b, (rows, _) in enumerate(centre_cell_positives(empty, cells, targets, valid)):
        assert valid[b, rows].all()


def test_keep_aspect_trains_and_evaluates(small_synth, tmp_path):
    """Two steps of keep-aspect training with mixed clip sizes per batch, then evaluation that maps boxes
    back to each key frame."""
    from bmvit.data.build import make_dataset
    from bmvit.engine.evaluate import predict_rows
    from bmvit.engine.train import train
    from bmvit.models.build import build_detector

    over = {"data.root": small_synth, "data.size": 48, "data.num_frames": 4, "data.resize": "keep_aspect",
            "data.short_side": "[32, 64]", "model.backbone": "mvit_tiny", "model.head_hidden": 32,
            "model.kv_stride": "[1,4,4]", "eval.threshold": 0.0, "eval.batch_size": 3,
            "train.out_dir": tmp_path / "r", "train.batch_size": 4, "train.max_steps": 2, "train.threads": 1}
    cfg = load_config("configs/synthetic/tiny.yaml", [f"{k}={v}" for k, v in over.items()])
    ds = make_dataset(cfg, "train", augment=True)
    sizes = {tuple(ds[i][0].shape[-2:]) for i in range(6)}
    assert len(sizes) > 1  # the random short side really varies the clip size
    train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    val = make_dataset(cfg, "val")
    model = build_detector(cfg.model, cfg.data, len(val.labels), load_pretrained=False)
    rows = predict_rows(model, val, cfg, torch.device("cpu"), progress=False)
    assert len(rows.boxes) > 0 and (rows.boxes >= 0).all() and (rows.boxes <= 1).all()
    # Box mapping. The 96x72 val frames become 64x48 clips on a 64x64 canvas (padding below). An
    # untrained box head outputs zero, so every token's box is its canvas cell; evaluation must keep
    # only the tokens whose cell centre lies on the image (y < 48/64) and map their boxes to the key
    # frame (y / (48/64)). NMS (tiny.yaml) folds the two 2(c+t) slices of a cell into one box.
    assert tuple(val[0][0].shape[-2:]) == (48, 64)
    with torch.no_grad():
        cells = model.eval()(torch.zeros(1, 3, 4, 64, 64))["cells"]  # (L, 4) canvas-normalized cxcywh
    frac = 48 / 64
    on_image = cells[cells[:, 1] < frac]
    want = cxcywh_to_xyxy(on_image) / torch.tensor([1.0, frac, 1.0, frac])
    want = {tuple(round(v, 4) for v in b) for b in want.clamp(0, 1).tolist()}
    assert 0 < len(want) < len({tuple(c) for c in cells.tolist()})  # some cells are padding only
    frames = sorted(set(zip(rows.video_ids, rows.timestamps.tolist())))
    assert len(frames) == len(val)
    for vid, ts in frames:
        sel = [i for i, (v, t) in enumerate(zip(rows.video_ids, rows.timestamps.tolist())) if (v, t) == (vid, ts)]
        got = {tuple(round(v, 4) for v in b) for b in rows.boxes[sel].tolist()}
        assert got == want, (vid, ts, sorted(got - want)[:3], sorted(want - got)[:3])
