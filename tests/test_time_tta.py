"""Temporal test-time augmentation (eval.time_tta, models/time_tta.py): the wrapper's average, the
readers' clip layout, and the evaluation's use of both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bmvit.engine.evaluate as evaluate
from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.errors import ConfigError
from bmvit.inference.windows import SlidingClips, clip_indices, clip_span
from bmvit.models.build import build_detector
from bmvit.models.time_tta import TimeTTA

TINY = "configs/synthetic/tiny.yaml"


def _average_by_hand(outs):
    boxes = torch.stack([o["boxes"] for o in outs]).mean(0)
    probs = {k: torch.stack([o[k].sigmoid() for o in outs]).mean(0) for k in ("actor_logits", "action_logits")}
    return boxes, probs


def test_time_tta_averages_the_views_of_each_key_frame():
    torch.manual_seed(0)
    cfg = load_config(TINY, ["model.token_selection=c+t"])
    model = build_detector(cfg.model, cfg.data, 6, load_pretrained=False).eval()
    views = [torch.randn(2, 3, 8, 64, 64) for _ in range(3)]  # 3 views of 2 key frames
    with torch.no_grad():
        out = TimeTTA(model, 3, 8)(torch.cat(views, dim=2))  # (2, 3, 24, 64, 64): views one after the other
        boxes, probs = _average_by_hand([model(v) for v in views])
    assert out["boxes"].shape == boxes.shape == (2, out["boxes"].shape[1], 4)
    assert torch.allclose(out["boxes"], boxes, atol=1e-6)
    for key, p in probs.items():
        assert torch.allclose(out[key].sigmoid(), p, atol=1e-5)
    with torch.no_grad():
        one = TimeTTA(model, 1, 8)(views[0])
        plain = model(views[0])
    assert torch.equal(one["actor_logits"], plain["actor_logits"])
    with pytest.raises(ValueError, match="expected 3 clips of 8 frames"):
        TimeTTA(model, 3, 8)(torch.randn(1, 3, 12, 64, 64))  # 12 frames split in 3 would run silently


def test_clip_indices_put_the_moved_clips_one_after_the_other():
    idx = clip_indices(5, 4, 2, total=10, views=(-1, 1))
    assert idx.tolist() == [0, 2, 4, 6] + [2, 4, 6, 8]  # key 5: frames 1,3,5,7 moved by -1, then by +1
    assert clip_indices(1, 4, 2, total=10, views=(-3, 3)).tolist() == [0, 0, 0, 0] + [0, 2, 4, 6]  # clamped at 0
    assert clip_span(4, 2, (-1, 1)) == (5, 3) and clip_span(4, 2) == (4, 2) and clip_span(8, 2, (2, 3)) == (8, 9)


@pytest.mark.parametrize("views", [(0,), (-1, 1), (-2, 0, 3)])
def test_sliding_clips_with_views_are_the_clamped_clip_indices(views):
    T, tau, total = 4, 2, 23
    keys = [0, 3, 9, 15, 21, 22]
    window = SlidingClips(T, tau, iter(keys), views)
    got = []
    for i in range(total):
        got += window.push(np.array([i]))
    got += window.flush()
    assert [k for k, _ in got] == keys
    for k, clip in got:
        assert clip[:, 0].tolist() == clip_indices(k, T, tau, total, views).tolist()


def test_eval_reader_returns_the_views_and_training_ignores_them(small_synth):
    base = [f"data.root={small_synth}", "data.size=32", "data.num_frames=4", "data.stride=2"]
    cfg = load_config(TINY, [*base, "eval.time_tta=[-1,2]"])
    both = make_dataset(cfg, "val")
    minus = make_dataset(load_config(TINY, [*base, "eval.time_tta=[-1]"]), "val")
    plus = make_dataset(load_config(TINY, [*base, "eval.time_tta=[2]"]), "val")
    plain = make_dataset(load_config(TINY, [*base, "eval.time_tta=[]"]), "val")
    for i in (0, len(both) - 1):
        clip = both[i][0]
        assert clip.shape == (3, 8, 32, 32)
        assert torch.equal(clip[:, :4], minus[i][0]) and torch.equal(clip[:, 4:], plus[i][0])
        assert plain[i][0].shape == (3, 4, 32, 32)
    assert not torch.equal(minus[0][0], plain[0][0])  # the offsets move the clip
    assert make_dataset(cfg, "train", augment=True)[0][0].shape == (3, 4, 32, 32)


def test_evaluation_averages_the_outputs_of_the_moved_clips(small_synth, monkeypatch):
    """predict() on a reader with views gives postprocess exactly the by-hand average of the outputs
    of the single moved clips (read by readers with one view each)."""
    base = [f"data.root={small_synth}", "data.size=32", "data.num_frames=4", "data.stride=2", "eval.batch_size=3",
            "eval.hflip_tta=true", "model.head_hidden=16", "model.kv_stride=[1,4,4]"]
    seen: list[dict] = []
    real = evaluate.postprocess

    def spy(outputs, threshold, *args, **kwargs):
        if threshold >= 0:
            seen.append({k: outputs[k].clone() for k in ("boxes", "actor_logits", "action_logits")})
        return real(outputs, threshold, *args, **kwargs)

    monkeypatch.setattr(evaluate, "postprocess", spy)
    torch.manual_seed(0)
    cfg = load_config(TINY, base)
    model = build_detector(cfg.model, cfg.data, 6, load_pretrained=False).eval()
    runs = {}
    for views in ("[-1,1]", "[-1]", "[1]"):
        c = load_config(TINY, [*base, f"eval.time_tta={views}"])
        ds = make_dataset(c, "val")
        seen.clear()
        evaluate.predict(model, ds, evaluate.PredictOptions.from_config(c), list(ds.class_ids), torch.device("cpu"),
                         progress=False)
        runs[views] = list(seen)
    assert len(runs["[-1,1]"]) == len(runs["[1]"]) > 1
    for got, a, b in zip(runs["[-1,1]"], runs["[-1]"], runs["[1]"]):
        boxes, probs = _average_by_hand([a, b])
        assert torch.allclose(got["boxes"], boxes, atol=1e-6)
        for key, p in probs.items():
            assert torch.allclose(got[key].sigmoid(), p, atol=1e-5)


@pytest.mark.parametrize("value,match", [("[1,1]", "distinct"), ("[0.5]", "expected int"), ("2", "expected a list")])
def test_bad_time_tta_is_a_config_error(value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, [f"eval.time_tta={value}"])


@pytest.mark.parametrize("value", [[0.5], [1, 1], [True], "ab", None])
def test_detector_rejects_bad_time_tta_offsets(value):
    from bmvit.inference.detector import Detector

    cfg = load_config(TINY)
    with pytest.raises(ConfigError, match="time TTA"):
        Detector(build_detector(cfg.model, cfg.data, 6, load_pretrained=False), cfg, {i: str(i) for i in range(1, 7)},
                 time_tta=value)
