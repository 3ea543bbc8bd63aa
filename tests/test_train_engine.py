"""Training engine: crash + resume is bit-identical, DDP equals one process, checkpoints are safe."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bmvit.config import load_config
from bmvit.engine.optim import param_groups
from bmvit.engine.sampler import ResumableBatchSampler
from bmvit.engine.state import list_checkpoints, load_latest
from bmvit.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _overrides(root, out, **kw):
    over = {
        "data.root": root, "data.size": 48, "data.num_frames": 4, "data.stride": 4, "data.cache_frames": True,
        "data.hflip_prob": 0.5, "data.color_jitter": 0.2, "data.hflip_swap": "[[1,2]]",
        "model.backbone": "mvit_tiny", "model.head_hidden": 32, "model.kv_stride": "[1,4,4]",
        "model.drop_path": 0.1,  # exercises the global RNG (must be restored on resume)
        "loss.extra_positives": "centre_cell", "eval.threshold": 0.05,
        "train.out_dir": out, "train.batch_size": 4, "train.lr": 1e-3, "train.warmup_steps": 2,
        "train.grad_clip": 1.0, "train.log_every": 1, "train.threads": 1, "train.ckpt_every": 3,
        "train.ckpt_each_epoch": False, "train.keep_checkpoints": 2, **kw,
    }
    return [f"{k}={v}" for k, v in over.items()]


def _bmvit(args, env_extra=None, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "bmvit", "train", "--no-progress", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _weights(path):
    return load_file(str(path))


def test_sampler_partitions_global_batches():
    one = ResumableBatchSampler(23, batch_size=4, seed=5)
    one.set_epoch(2)
    two = [ResumableBatchSampler(23, batch_size=2, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in two:
        s.set_epoch(2)
    a = list(one)
    b0, b1 = list(two[0]), list(two[1])
    assert len(a) == 5 and len(b0) == len(b1) == 5
    for k in range(5):
        assert a[k] == b0[k] + b1[k]  # same samples *and* augmentation seeds
    seen = [i for batch in a for i, _ in batch]
    assert len(set(seen)) == 20  # no repeats; the incomplete last global batch is dropped
    one.set_epoch(2, start_batch=3)
    assert list(one) == a[3:]
    one.set_epoch(3)
    assert list(one) != a  # a new order each epoch


def test_kill_and_resume_is_bit_identical(small_synth, tmp_path):
    """SIGKILL a run mid-epoch right after a checkpoint lands, resume it, compare final weights."""
    steps = "train.max_steps=9"
    ref = _bmvit(["--config", "configs/synthetic/tiny.yaml", *_overrides(small_synth, tmp_path / "ref"), steps])
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err

    run = tmp_path / "crash"
    proc = _bmvit(["--config", "configs/synthetic/tiny.yaml", *_overrides(small_synth, run), steps])
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any(p.name == "step_00000006" for p in list_checkpoints(run)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists()
    # A half-written checkpoint must be skipped, with a warning.
    broken = run / "checkpoints" / "step_00000007"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")
    (broken / "manifest.json").write_text('{"step": 7, "files": {"model.safetensors": "00"}}')

    res = _bmvit(["--config", "configs/synthetic/tiny.yaml", "--resume", "auto", *_overrides(small_synth, run), steps])
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err
    assert "skipping damaged checkpoint" in err and "resumed from" in err
    a, b = _weights(tmp_path / "ref" / "model.safetensors"), _weights(run / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics: one record per step, none duplicated by the resume
    steps_logged = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()
                    if "loss" in json.loads(l)]
    assert steps_logged == list(range(1, 10))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000006", "step_00000009"]  # keep_checkpoints=2


def test_refuses_to_overwrite_a_run(small_synth, tmp_path):
    from bmvit.engine.train import train

    cfg = load_config("configs/synthetic/tiny.yaml", _overrides(small_synth, tmp_path / "r") + ["train.max_steps=1"])
    train(cfg, progress=False)
    assert load_latest(tmp_path / "r") is not None
    with pytest.raises(ConfigError, match="--resume auto"):
        train(cfg, progress=False)
    train(cfg, progress=False, overwrite=True)


def test_ddp_two_processes_match_one(small_synth, tmp_path):
    """2 gloo processes with batch 2 each follow the 1-process batch-4 trajectory.

    Tolerance: both runs see the same samples and augmentations; only the order of float
    reductions differs (gradient all-reduce, per-rank sums), which moves losses by ~1e-6
    relative per step; 1e-3 relative over 6 steps leaves room for that and nothing else.
    Stochastic depth is off: its masks are drawn per process batch, so with it on the two runs
    are equivalent only in distribution."""
    common = _overrides(small_synth, tmp_path / "one") + ["train.max_steps=6", "train.ckpt_every=0",
                                                          "model.drop_path=0"]
    one = _bmvit(["--config", "configs/synthetic/tiny.yaml", *common])
    _, err = one.communicate(timeout=600)
    assert one.returncode == 0, err
    two_args = _overrides(small_synth, tmp_path / "two") + ["train.max_steps=6", "train.ckpt_every=0",
                                                              "train.batch_size=2", "model.drop_path=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "bmvit", "train", "--no-progress", "--config", "configs/synthetic/tiny.yaml", *two_args]
    two = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    def losses(run):
        return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    la = [r["loss"] for r in a if "loss" in r]
    lb = [r["loss"] for r in b if "loss" in r]
    assert len(la) == len(lb) == 6
    for x, y in zip(la, lb):
        assert abs(x - y) <= 1e-3 * abs(x), (la, lb)
    wa, wb = _weights(tmp_path / "one" / "model.safetensors"), _weights(tmp_path / "two" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_layer_decay_groups():
    from bmvit.models.build import build_detector

    cfg = load_config("configs/synthetic/tiny.yaml")
    model = build_detector(cfg.model, cfg.data, 6)
    groups = param_groups(model, 1e-4, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = 5
    assert scale[id(named["heads.action.0.weight"])] == 1.0
    assert scale[id(named["backbone.blocks.4.mlp.fc1.weight"] if "backbone.blocks.4.mlp.fc1.weight" in named
                    else next(p for n, p in named.items() if n.startswith("backbone.blocks.4.") and p.ndim == 2))] == 0.5
    assert scale[id(named["backbone.patch_embed.weight"])] == 0.5 ** (depth + 1)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(named["backbone.patch_embed.bias"]) in no_decay
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_ddp_eval_marks_follow_one_clock(small_synth, tmp_path):
    """``train.eval_at_minutes`` under torchrun when the ranks' clocks disagree (rank 0 a minute
    ahead): every rank must take rank 0's decision. Before the fix rank 0 passed the mark and
    dropped it while rank 1 kept it, and rank 1's next check waited in a collective alone (the
    run hung after its evaluation)."""
    script = tmp_path / "skewed.py"
    script.write_text(
        "import os, sys\n"
        "import bmvit.engine.train as t\n"
        "ahead = 60.0 if os.environ.get('RANK') == '0' else 0.0\n"
        "orig = t.TrainClock.seconds\n"
        "t.TrainClock.seconds = lambda self: orig(self) + ahead\n"
        "from bmvit.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    args = _overrides(small_synth, tmp_path / "two") + ["train.max_steps=5", "train.ckpt_every=0", "train.batch_size=2",
                                                          "model.drop_path=0", "train.eval_at_minutes=[0.5]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519", str(script),
           "train", "--no-progress", "--config", "configs/synthetic/tiny.yaml", *args]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:  # a file, not a pipe: a hung worker must not keep the test waiting on it
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["pkill", "-9", "-f", str(script)], check=False)  # workers outside the group too
            proc.wait()
            pytest.fail("the 2-process run hung after its evaluation at a time mark")
    assert proc.returncode == 0, log.read_text()[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    marks = [r for r in recs if "train_minutes" in r and not r.get("final")]
    assert len(marks) == 1 and marks[0]["train_minutes"] >= 1.0  # once, at rank 0's (skewed) minute


def test_resume_with_another_model_config_is_one_line(small_synth, tmp_path):
    from bmvit.engine.train import train

    over = _overrides(small_synth, tmp_path / "r") + ["train.max_steps=1"]
    train(load_config("configs/synthetic/tiny.yaml", over), progress=False)
    changed = load_config("configs/synthetic/tiny.yaml", over + ["model.head_hidden=48"])
    with pytest.raises(CheckpointError, match=r"step_00000001: does not fit .*\(model.head_hidden: 32 -> 48\)"):
        train(changed, progress=False, resume="auto")


def test_an_out_dir_that_is_a_file_is_one_line(small_synth, tmp_path):
    from bmvit.engine.train import train
    from bmvit.errors import OutputError

    (tmp_path / "f").write_text("")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        cfg = load_config("configs/synthetic/tiny.yaml", _overrides(small_synth, out) + ["train.max_steps=1"])
        with pytest.raises(OutputError, match=f"{out}: cannot write output"):
            train(cfg, progress=False)
