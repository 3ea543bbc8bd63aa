"""Horizontal-flip test-time augmentation (models/flip_tta.py)."""

import numpy as np
import pytest
import torch

from bmvit.config import load_config
from bmvit.models.build import build_detector
from bmvit.models.flip_tta import FlipTTA, mirror_index
from bmvit.models.token_selection import grid_cells


@pytest.mark.parametrize("blocks,h,w", [(1, 3, 4), (2, 5, 5), (4, 2, 7)])
def test_mirror_index_maps_each_cell_to_its_mirror_image(blocks, h, w):
    perm = mirror_index(blocks * h * w, h, w)
    cells = grid_cells(h, w).repeat(blocks, 1)  # (L, 4) cxcywh, blocks of h*w in row-major order
    assert torch.equal(perm[perm], torch.arange(blocks * h * w))  # an involution
    assert torch.allclose(cells[perm, 0], 1 - cells[:, 0])
    assert torch.equal(cells[perm, 1:], cells[:, 1:])
    assert torch.equal(perm // (h * w), torch.arange(blocks * h * w) // (h * w))  # stays in its block


def test_mirror_index_rejects_tokens_off_the_grid():
    with pytest.raises(ValueError, match="not blocks of the 3x4"):
        mirror_index(13, 3, 4)


@pytest.mark.parametrize("selection", ["tubelet", "2(c+t)", "maxpool", "singleton"])
def test_flip_tta_output_is_exactly_mirror_equivariant(selection):
    """Whatever the model, the averaged prediction of the mirrored clip is the mirror image of the
    averaged prediction of the clip: same boxes mirrored, same scores, swapped direction classes."""
    torch.manual_seed(0)
    cfg = load_config("configs/synthetic/tiny.yaml", [f"model.token_selection={selection}"])
    model = build_detector(cfg.model, cfg.data, 6).eval()
    tta = FlipTTA(model, swap=[(0, 1)])
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        out, out_m = tta(x), tta(x.flip(-1))
        plain = model(x)
    _, h, w = out["grid"]
    perm = mirror_index(out["boxes"].shape[1], h, w)
    mirrored = out_m["boxes"][:, perm]
    assert torch.allclose(1 - mirrored[..., 0], out["boxes"][..., 0], atol=1e-5)
    assert torch.allclose(mirrored[..., 1:], out["boxes"][..., 1:], atol=1e-5)
    assert torch.allclose(out_m["actor_logits"][:, perm], out["actor_logits"], atol=1e-4)
    assert torch.allclose(out_m["action_logits"][:, perm][..., [1, 0, 2, 3, 4, 5]], out["action_logits"], atol=1e-4)
    # and it is not the plain model's output (a random model is not mirror-symmetric)
    assert not torch.allclose(out["actor_logits"], plain["actor_logits"], atol=1e-3)
    assert out["boxes"].shape == plain["boxes"].shape and out["action_logits"].shape == plain["action_logits"].shape


def test_flip_tta_of_a_symmetric_clip_with_no_swap_is_the_plain_output():
    """A clip equal to its mirror image: both views give the same outputs up to the mirroring, so
    the average of probabilities is the plain model's."""
    torch.manual_seed(1)
    cfg = load_config("configs/synthetic/tiny.yaml")
    model = build_detector(cfg.model, cfg.data, 6).eval()
    x = torch.randn(1, 3, 8, 64, 32)
    x = torch.cat((x, x.flip(-1)), dim=-1)  # (1, 3, 8, 64, 64), mirror-symmetric
    with torch.no_grad():
        plain, out = model(x), FlipTTA(model)(x)
    _, h, w = out["grid"]
    perm = mirror_index(out["boxes"].shape[1], h, w)
    avg = (plain["actor_logits"].sigmoid() + plain["actor_logits"][:, perm].sigmoid()) / 2
    assert torch.allclose(out["actor_logits"].sigmoid(), avg, atol=1e-5)


def test_evaluation_with_hflip_tta_predicts_with_the_averaged_model(tmp_path):
    """``eval.hflip_tta=true``: the split's detection rows are those of FlipTTA(model) with the
    config's ``data.hflip_swap`` as columns, and differ from the plain model's."""
    from inference_fixtures import tiny_config, tiny_model, write_dataset

    from bmvit.data.build import make_dataset
    from bmvit.engine.evaluate import predict_rows

    root = write_dataset(tmp_path / "data")
    cfg = tiny_config(root, extra=["eval.threshold=0.3", "data.hflip_swap=[[1,3]]"])
    cfg_tta = tiny_config(root, extra=["eval.threshold=0.3", "data.hflip_swap=[[1,3]]", "eval.hflip_tta=true"])
    ds = make_dataset(cfg, "val", augment=False)
    model = tiny_model(cfg)
    cpu = torch.device("cpu")
    got = predict_rows(model, ds, cfg_tta, cpu, progress=False)
    want = predict_rows(FlipTTA(model, [(0, 2)]), ds, cfg, cpu, progress=False)
    plain = predict_rows(model, ds, cfg, cpu, progress=False)
    assert len(got.person_or_score) > 0
    assert np.array_equal(got.actions, want.actions)
    assert np.allclose(got.boxes, want.boxes) and np.allclose(got.person_or_score, want.person_or_score)
    assert len(got.person_or_score) != len(plain.person_or_score) or not np.allclose(got.person_or_score, plain.person_or_score)
