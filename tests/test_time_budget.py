"""``train.max_minutes``: training ends when the time budget is spent, with the lr cosine ending there;
a budget that never binds changes nothing; a run ended by its budget resumes as finished."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bmvit.config import load_config
from bmvit.engine import clock
from bmvit.engine.clock import budget_progress
from bmvit.engine.optim import lr_factor
from bmvit.engine.state import list_checkpoints
from bmvit.engine.train import train
from bmvit.errors import ConfigError
from tests.test_train_engine import ROOT, _overrides


def _cfg(root, out, *extra):
    over = _overrides(root, out, **{"train.ckpt_every": 0, "model.drop_path": 0}) + ["train.eval_at_minutes=[]", *extra]
    return load_config(ROOT / "configs" / "synthetic" / "tiny.yaml", over)


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_lr_follows_the_further_of_steps_and_budget():
    plain = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert plain == [lr_factor(s, 100, 10, 0.1, 0.0) for s in range(100)]  # no budget: the schedule as before
    assert lr_factor(5, 100, 10, 0.1, 0.9) == plain[5]  # warm-up is by steps only
    assert lr_factor(20, 100, 10, 0.1, 0.5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(20, 100, 10, 0.1, 0.01) == plain[20]  # the steps further along than the budget
    assert lr_factor(20, 100, 10, 0.1, 3.0) == pytest.approx(0.1)  # past the budget: the cosine's end
    assert budget_progress(100.0, 0.0, 10.0) == 0.0 and budget_progress(100.0, 600.0, None) == 0.0
    assert budget_progress(5.0, 600.0, 10.0) == 0.0  # before the warm-up's end on the clock
    assert budget_progress(305.0, 600.0, 10.0) == pytest.approx(0.5)


def test_a_budget_that_never_binds_changes_nothing(small_synth, tmp_path):
    a = train(_cfg(small_synth, tmp_path / "a", "train.max_steps=4"), progress=False)
    b = train(_cfg(small_synth, tmp_path / "b", "train.max_steps=4", "train.max_minutes=1000"), progress=False)
    assert a["step"] == b["step"] == 4 and "stopped_by" not in b
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lrs = [[r["lr"] for r in _records(tmp_path / d) if "lr" in r] for d in "ab"]
    assert lrs[0] == lrs[1]


def test_the_budget_ends_training_and_the_schedule(small_synth, tmp_path, monkeypatch):
    ticks = itertools.count()  # a clock that moves 1 s per reading, whatever the machine's speed
    monkeypatch.setattr(clock.TrainClock, "seconds", lambda self: self.before + float(next(ticks)))
    run = tmp_path / "budget"
    cfg = _cfg(small_synth, run, "train.max_steps=40", "train.max_minutes=0.25", "train.min_lr_ratio=0.1")
    final = train(cfg, progress=False)
    assert 2 < final["step"] < 40 and final["stopped_by"] == "train.max_minutes"
    assert (run / "model.safetensors").is_file() and final["val_frame_map"] >= 0
    assert list_checkpoints(run)[-1].name == f"step_{final['step']:08d}"  # the end is checkpointed
    recs = [r for r in _records(run) if "lr" in r]
    assert [r["step"] for r in recs] == list(range(1, final["step"] + 1))
    after = [r["lr"] for r in recs[2:]]  # warm-up: 2 steps
    assert after == sorted(after, reverse=True)
    steps_only = [cfg.train.lr * lr_factor(r["step"] - 1, 40, 2, 0.1) for r in recs[2:]]
    assert all(x <= y + 1e-12 for x, y in zip(after, steps_only)) and after[-1] < steps_only[-1]
    # resumed, a run that spent its budget takes no more steps: its final weights are evaluated again
    again = train(cfg, progress=False, resume="auto")
    assert again["step"] == final["step"] and again["stopped_by"] == "train.max_minutes"
    assert [r["step"] for r in _records(run) if "lr" in r] == list(range(1, final["step"] + 1))


def test_a_negative_budget_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="train.max_minutes"):
        load_config(ROOT / "configs" / "synthetic" / "tiny.yaml", ["train.max_minutes=-1"])


def test_ddp_ranks_stop_on_rank_0s_clock(small_synth, tmp_path):
    """Under torchrun every rank must stop at the step rank 0's clock spends the budget (rank 0 is
    a minute ahead here); a rank that went on alone would wait in the next collective for ever."""
    script = tmp_path / "skewed.py"
    script.write_text(
        "import os, sys\n"
        "import bmvit.engine.clock as c\n"
        "ahead = 60.0 if os.environ.get('RANK') == '0' else 0.0\n"
        "orig = c.TrainClock.seconds\n"
        "c.TrainClock.seconds = lambda self: orig(self) + ahead\n"
        "from bmvit.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    run = tmp_path / "two"
    args = _overrides(small_synth, run) + ["train.max_steps=200", "train.ckpt_every=0", "train.batch_size=2",
                                           "model.drop_path=0", "train.max_minutes=1.02"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29523", str(script),
           "train", "--no-progress", "--config", "configs/synthetic/tiny.yaml", *args]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:  # a file, not a pipe: a hung worker must not keep the test waiting on it
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["pkill", "-9", "-f", str(script)], check=False)
            proc.wait()
            pytest.fail("a rank went on after rank 0 spent the time budget")
    assert proc.returncode == 0, log.read_text()[-3000:]
    final = [r for r in _records(run) if r.get("final")]
    assert len(final) == 1 and final[0]["stopped_by"] == "train.max_minutes" and final[0]["step"] < 200
    assert "time budget of 1.02 training minutes spent" in log.read_text()


def test_a_budget_spent_in_the_warm_up_says_so(small_synth, tmp_path, monkeypatch, capsys):
    ticks = itertools.count()
    monkeypatch.setattr(clock.TrainClock, "seconds", lambda self: self.before + float(next(ticks)))
    cfg = _cfg(small_synth, tmp_path / "w", "train.max_steps=40", "train.max_minutes=0.05", "train.warmup_steps=30")
    final = train(cfg, progress=False)
    assert final["step"] < 30 and final["stopped_by"] == "train.max_minutes"
    assert "still in the warm-up (30 steps): the lr never reached its cosine" in capsys.readouterr().err
