"""Training features through their public behaviour (``train(cfg)``, ``bmvit train``, the run folder):
EMA, ``train.nan_policy``, gradient accumulation, periodic evaluation + ``best.safetensors``,
``--resume PATH``, and gradient checkpointing.

Every run is a few optimizer steps of a tiny MViT on 32² four-frame clips of the shared small
synthetic set, so each test takes seconds; the checks compare files a run writes (checkpoints,
``metrics.jsonl``, ``*.safetensors``) with what the documented rule says they must hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bmvit.cli.main import main
from bmvit.config import DataConfig, ModelConfig, load_config
from bmvit.engine.train import train
from bmvit.errors import TrainingError
from bmvit.models.build import build_detector

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "synthetic" / "tiny.yaml"


def _overrides(root, out, **kw) -> list[str]:
    over = {
        "data.root": root, "data.size": 32, "data.num_frames": 4, "data.stride": 4, "data.cache_frames": True,
        "model.backbone": "mvit_tiny", "model.head_hidden": 16, "model.kv_stride": "[1,4,4]", "model.drop_path": 0,
        "train.out_dir": out, "train.batch_size": 2, "train.threads": 1, "train.log_every": 1,
        "train.eval_at_minutes": "[]", "train.ckpt_each_epoch": False, "train.keep_checkpoints": 0,
        "eval.threshold": 0.0, **kw,
    }
    return [f"{k}={v}" for k, v in over.items()]


def _cfg(root, out, **kw):
    return load_config(TINY, _overrides(root, out, **kw))


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def ema_run(small_synth, tmp_path_factory):
    """4 steps with EMA (decay 0.2), a checkpoint and a periodic evaluation after every step."""
    run = tmp_path_factory.mktemp("ema") / "run"
    final = train(_cfg(small_synth, run, **{"train.max_steps": 4, "train.ckpt_every": 1, "train.eval_every": 1,
                                            "train.ema_decay": 0.2, "train.lr": 1e-2, "train.warmup_steps": 0}),
                  progress=False)
    return run, final


def test_ema_follows_the_documented_average_and_is_the_saved_model(ema_run):
    """``ema = d·ema + (1-d)·w`` after each step, ``d = min(decay, (1+n)/(10+n))`` with n updates so far
    (decay 0.2: the warm-up value 2/11 at step 2, the cap 0.2 from step 3); the final
    ``model.safetensors`` holds the EMA weights."""
    run, _ = ema_run
    w = {s: load_file(str(_ckpt(run, s) / "model.safetensors")) for s in (1, 2, 3, 4)}
    ema = {s: load_file(str(_ckpt(run, s) / "ema.safetensors")) for s in (1, 2, 3, 4)}
    for s in (2, 3, 4):
        d = min(0.2, s / (9 + s))  # n = s - 1 updates before step s: (1 + n) / (10 + n)
        for k, v in ema[s].items():
            want = d * ema[s - 1][k].double() + (1 - d) * w[s][k].double()
            assert torch.allclose(v.double(), want, atol=1e-6, rtol=1e-5), (s, k)
    assert any(not torch.allclose(ema[4][k], w[4][k]) for k in w[4])  # the average is not the weights
    _assert_same(load_file(str(run / "model.safetensors")), ema[4])


def _eval_cli(checkpoint: Path, out: Path, capsys) -> float:
    code = main(["eval", "--checkpoint", str(checkpoint), "--split", "val", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "metrics_val.json").read_text())["mean_ap"]


def test_periodic_evaluation_scores_the_ema_weights_and_keeps_the_best(ema_run, tmp_path, capsys):
    """``train.eval_every``: each logged val mAP is that step's (EMA) weights' score, as ``bmvit eval``
    computes it; ``best.safetensors`` holds the weights of the first best evaluation."""
    run, final = ema_run
    records = _records(run)
    periodic = [r for r in records if "val_frame_map" in r and not r.get("final")]
    assert [r["step"] for r in periodic] == [1, 2, 3]  # every step but the last, which the final evaluation covers
    scores = [r["val_frame_map"] for r in periodic]
    assert len(set(scores)) > 1, scores  # the weights moved enough to tell the evaluations apart
    for r in periodic[::2]:
        ema_score = _eval_cli(_ckpt(run, r["step"]) / "ema.safetensors", tmp_path / f"e{r['step']}", capsys)
        assert ema_score == pytest.approx(r["val_frame_map"], abs=1e-9), r
    raw = _eval_cli(_ckpt(run, 1) / "model.safetensors", tmp_path / "raw1", capsys)
    assert raw != pytest.approx(periodic[0]["val_frame_map"], abs=1e-9)  # EMA and raw weights score differently
    best_step = periodic[scores.index(max(scores))]["step"]
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["step"]) == best_step and json.loads(meta["val_frame_map"]) == max(scores)
    _assert_same(load_file(str(run / "best.safetensors")), load_file(str(_ckpt(run, best_step) / "ema.safetensors")))
    assert records[-1]["final"] and records[-1]["val_frame_map"] == final["val_frame_map"]


def test_nan_policy_stop_and_skip(small_synth, tmp_path):
    """A learning rate of 1e30 makes step 1's update blow the weights up: every later loss is NaN.
    ``stop`` ends the run with one clear error at step 2; ``skip`` skips those steps without touching
    the weights and logs each skip."""
    blow_up = {"train.lr": 1e30, "train.warmup_steps": 0, "train.grad_clip": "null", "train.max_steps": 3,
               "train.ckpt_every": 1}
    stop = tmp_path / "stop"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 .*train\.nan_policy=skip"):
        train(_cfg(small_synth, stop, **blow_up), progress=False)
    assert _ckpt(stop, 1).is_dir() and not _ckpt(stop, 2).exists() and not (stop / "model.safetensors").exists()

    skip = tmp_path / "skip"
    final = train(_cfg(small_synth, skip, **blow_up, **{"train.nan_policy": "skip"}), progress=False)
    assert final["step"] == 3
    records = _records(skip)
    assert [r["step"] for r in records if "skipped" in r] == [2, 3]
    assert all("non-finite loss" in r["skipped"] for r in records if "skipped" in r)
    for line in (skip / "metrics.jsonl").read_text().splitlines():  # strict JSON: a NaN term is logged as null
        json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}: {line}"))
    after_step_1 = load_file(str(_ckpt(skip, 1) / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in after_step_1.values())
    _assert_same(load_file(str(skip / "model.safetensors")), after_step_1)  # skipped steps change nothing


def test_gradient_accumulation_equals_a_larger_batch(small_synth, tmp_path):
    """Batch 2 × ``train.accum_steps`` 2 sees the samples and augmentations of batch 4 and shares one loss
    normalizer (the actors of all micro-batches): same losses and weights up to float summation order."""
    common = {"train.max_steps": 3, "train.lr": 1e-2, "train.warmup_steps": 0}
    train(_cfg(small_synth, tmp_path / "big", **common, **{"train.batch_size": 4}), progress=False)
    train(_cfg(small_synth, tmp_path / "acc", **common, **{"train.batch_size": 2, "train.accum_steps": 2}),
          progress=False)
    big = [r for r in _records(tmp_path / "big") if "loss" in r]
    acc = [r for r in _records(tmp_path / "acc") if "loss" in r]
    assert [r["step"] for r in big] == [r["step"] for r in acc] == [1, 2, 3]
    for a, b in zip(big, acc):
        for k in ("loss", "actor", "action", "l1", "giou"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (a["step"], k, a[k], b[k])
    wa, wb = load_file(str(tmp_path / "big" / "model.safetensors")), load_file(str(tmp_path / "acc" / "model.safetensors"))
    # AdamW moves every weight by up to lr = 1e-2 per step; summation-order noise in near-zero gradients
    # leaves ~2e-4 (measured), a lost or mis-scaled micro-batch moves weights by ~1e-2
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-3


def test_resume_from_a_checkpoint_path_is_bit_identical(small_synth, tmp_path, capsys):
    """``bmvit train --resume PATH`` (a checkpoint folder of another run) continues that run exactly: same
    final weights, bit for bit, with EMA and stochastic depth (global RNG) on."""
    steps = {"train.max_steps": 4, "train.ckpt_every": 2, "train.ema_decay": 0.9, "model.drop_path": 0.2}
    ref = tmp_path / "ref"
    train(_cfg(small_synth, ref, **steps), progress=False)
    new = tmp_path / "continued"
    args = ["train", "--no-progress", "--config", str(TINY), "--resume", str(_ckpt(ref, 2)),
            *_overrides(small_synth, new, **steps)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"resumed from {_ckpt(ref, 2)} (step 2/4" in err
    _assert_same(load_file(str(new / "model.safetensors")), load_file(str(ref / "model.safetensors")))
    assert [r["step"] for r in _records(new) if "loss" in r] == [3, 4]  # the new folder logs only what it ran
    # a wrong path: one line naming it
    assert main(["train", "--no-progress", "--config", str(TINY), "--resume", str(tmp_path / "nope"),
                 *_overrides(small_synth, tmp_path / "x", **steps)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "nope") in err[0]


def _counting(forward, n):
    def wrapped(*args, **kwargs):
        n[0] += 1
        return forward(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("backbone", ["mvit_tiny", "vit_tiny", "hiera_tiny"])
def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    """``model.grad_checkpointing`` recomputes each block in the backward pass (the block runs twice)
    and changes no gradient — also with stochastic depth, whose masks must be replayed."""
    data = DataConfig(num_frames=8, size=64)

    def build(flag):
        torch.manual_seed(0)
        m = build_detector(ModelConfig(backbone=backbone, head_hidden=16, drop_path=0.3, grad_checkpointing=flag),
                           data, 3).train()
        for head in (m.heads.box[-1],):  # the box head starts at zero: give it gradients to compare
            torch.nn.init.normal_(head.weight, std=0.1)
        return m

    plain, ckpt = build(False), build(True)
    ckpt.load_state_dict(plain.state_dict())
    clip = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    grads, calls = [], []
    for m in (plain, ckpt):
        n, block = [0], m.backbone.blocks[0]
        block.forward = _counting(block.forward, n)  # (a forward hook does not see the recomputation)
        torch.manual_seed(7)  # same drop-path masks in both models
        out = m(clip)
        g = torch.Generator().manual_seed(3)
        loss = sum((out[k] * torch.randn(out[k].shape, generator=g)).sum()
                   for k in ("boxes", "actor_logits", "action_logits"))
        loss.backward()
        calls.append(n[0])
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert calls == [1, 2]  # checkpointing really recomputed the block
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(plain.parameters()))
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6), k
