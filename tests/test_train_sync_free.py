"""The GPU feeding path of training, checked on the CPU: the sync-free non-finite-step handling that
CUDA training takes (fused AdamW skips the update on the device; the host reads the flags at log
steps / checkpoints), forced here with a fused CPU AdamW — the same observable behaviour as the
per-micro-batch check (tests/test_train_features.py); and persistent prefetching workers that
deliver uint8 clips + colour factors train the same weights as the in-process loader."""

import pytest
import torch
from safetensors.torch import load_file
from test_train_features import _assert_same, _cfg, _ckpt, _records

from bmvit.engine import optim
from bmvit.engine import train as train_mod
from bmvit.engine.train import nonfinite_grads, train
from bmvit.errors import TrainingError


@pytest.fixture
def fused_on_cpu(monkeypatch):
    def make(model, lr, weight_decay, layer_decay, device):
        return torch.optim.AdamW(optim.param_groups(model, weight_decay, layer_decay), lr=lr, fused=True)
    monkeypatch.setattr(train_mod, "make_optimizer", make)


def test_nonfinite_grads_flag_and_fused_skip():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p, q], lr=0.1, fused=True)
    p.grad, q.grad = torch.tensor([1.0, float("nan"), 1.0]), torch.ones(2)
    opt.found_inf = nonfinite_grads([p, q], torch.device("cpu"))
    assert float(opt.found_inf) == 1.0
    opt.step()  # skipped: nothing moves, the step count stays 0
    assert torch.equal(p.detach(), torch.ones(3)) and torch.equal(q.detach(), torch.ones(2))
    assert float(opt.state[q]["step"]) == 0
    p.grad = torch.ones(3)
    opt.found_inf = nonfinite_grads([p, q], torch.device("cpu"))
    opt.step()
    assert float(opt.found_inf) == 0.0 and (p.detach() < 1).all() and float(opt.state[q]["step"]) == 1


def test_nan_policy_without_host_sync(small_synth, tmp_path, fused_on_cpu):
    blow_up = {"train.lr": 1e30, "train.warmup_steps": 0, "train.grad_clip": "null", "train.max_steps": 3,
               "train.ckpt_every": 1}
    stop = tmp_path / "stop"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(gradients not finite; the step was not applied\).*train\.nan_policy=skip"):
        train(_cfg(small_synth, stop, **blow_up), progress=False)
    assert _ckpt(stop, 1).is_dir() and not _ckpt(stop, 2).exists()

    skip = tmp_path / "skip"
    final = train(_cfg(small_synth, skip, **blow_up, **{"train.nan_policy": "skip"}), progress=False)
    assert final["step"] == 3
    skipped = [r for r in _records(skip) if "skipped" in r]
    assert [r["step"] for r in skipped] == [2, 3] and all("not applied" in r["skipped"] for r in skipped)
    after_step_1 = load_file(str(_ckpt(skip, 1) / "model.safetensors"))
    _assert_same(load_file(str(skip / "model.safetensors")), after_step_1)  # skipped steps change nothing


def test_persistent_workers_give_the_same_weights(small_synth, tmp_path):
    """Two DataLoader workers (persistent, prefetching, across an epoch boundary) train exactly the weights
    of the in-process loader: uint8 clips + colour factors from the workers, jitter on the 'device'."""
    kw = {"train.batch_size": 16, "train.max_steps": 5, "train.warmup_steps": 0, "data.color_jitter": 0.4}
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        train(_cfg(small_synth, out, **kw, **{"data.num_workers": workers}), progress=False)
        runs[workers] = load_file(str(out / "model.safetensors"))
        assert any("epoch" in r and r["epoch"] >= 1 for r in _records(out))  # crossed an epoch boundary
    _assert_same(runs[0], runs[2])
