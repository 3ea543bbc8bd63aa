"""SIGTERM / Ctrl-C during training: the step under way finishes, a checkpoint of it is written, the
process exits with 128 + the signal; ``--resume auto`` then ends bit-identical to a run never stopped.
Under torchrun a signal that reaches one rank stops every rank after the same step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from bmvit.engine.state import list_checkpoints
from bmvit.engine.stop import StopRequest
from tests.test_train_engine import ROOT, _overrides

# A wrapper around the CLI that signals its own process just before step AT starts (rank RANK_TO_SIGNAL
# only under torchrun): a deterministic stand-in for a scheduler's SIGTERM or a user's Ctrl-C.
WRAPPER = (
    "import os, signal, sys\n"
    "import bmvit.engine.train as t\n"
    "at, sig, who = int(os.environ['AT']), getattr(signal, os.environ['SIG']), os.environ.get('WHO', '0')\n"
    "orig = t.TrainingRun.train_step\n"
    "def step(self):\n"
    "    if self.state.step + 1 == at and os.environ.get('RANK', '0') == who:\n"
    "        os.kill(os.getpid(), sig)\n"
    "    return orig(self)\n"
    "t.TrainingRun.train_step = step\n"
    "from bmvit.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def _run(cmd, env_extra, tmp_path, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **env_extra}
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the run did not stop: " + log.read_text()[-2000:]) from None
    return proc.returncode, log.read_text()


def _loss_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_sigterm_checkpoints_the_step_and_resume_is_bit_identical(small_synth, tmp_path):
    args = ["train", "--no-progress", "--config", "configs/synthetic/tiny.yaml"]
    steps = ["train.max_steps=7", "train.ckpt_every=0"]
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    ref = tmp_path / "ref"
    rc, log = _run([sys.executable, "-m", "bmvit", *args, *_overrides(small_synth, ref), *steps], {}, tmp_path)
    assert rc == 0, log[-2000:]

    run = tmp_path / "stopped"
    rc, log = _run([sys.executable, str(wrapper), *args, *_overrides(small_synth, run), *steps],
                   {"AT": "3", "SIG": "SIGTERM"}, tmp_path)
    assert rc == 128 + signal.SIGTERM, log[-2000:]
    assert "stopped by SIGTERM after step 3 of 7" in log and "--resume auto" in log and "Traceback" not in log
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003"]  # the stop's own checkpoint
    assert not (run / "model.safetensors").exists() and _loss_steps(run) == [1, 2, 3]

    rc, log = _run([sys.executable, "-m", "bmvit", *args, "--resume", "auto", *_overrides(small_synth, run), *steps],
                   {}, tmp_path)
    assert rc == 0, log[-2000:]
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _loss_steps(run) == list(range(1, 8))


def test_ctrl_c_on_one_torchrun_rank_stops_every_rank_after_the_same_step(small_synth, tmp_path):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    run = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", str(wrapper),
           "train", "--no-progress", "--config", "configs/synthetic/tiny.yaml",
           *_overrides(small_synth, run), "train.max_steps=200", "train.ckpt_every=0", "train.batch_size=2"]
    rc, log = _run(cmd, {"AT": "2", "SIG": "SIGINT", "WHO": "1"}, tmp_path, timeout=300)
    assert rc != 0  # torchrun reports the workers' exit status 130 as a failure
    assert "stopped by a stop request on another rank after step 2 of 200" in log, log[-3000:]
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002"]
    assert _loss_steps(run) == [1, 2]


def test_ctrl_c_in_a_terminal_running_torchrun_checkpoints_every_rank(small_synth, tmp_path):
    """Ctrl-C in a terminal signals torchrun and its workers at once, and torchrun forwards it to
    the workers again: the copies must not escalate; the run checkpoints and ends."""
    run = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "bmvit",
           "train", "--no-progress", "--config", "configs/synthetic/tiny.yaml",
           *_overrides(small_synth, run), "train.max_steps=100000", "train.ckpt_every=0", "train.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and not (run / "metrics.jsonl").is_file():
                time.sleep(0.1)
            while time.time() < deadline and len((run / "metrics.jsonl").read_text().splitlines()) < 2:
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the run did not stop: " + log.read_text()[-2000:]) from None
    text = log.read_text()
    assert "stopped by SIGINT after step" in text and "Traceback" not in text.split("stopped by")[0], text[-3000:]
    steps = _loss_steps(run)
    assert steps == list(range(1, len(steps) + 1))
    assert [p.name for p in list_checkpoints(run)] == [f"step_{steps[-1]:08d}"]  # the stop's own checkpoint


def test_the_handlers_are_put_back_and_a_later_second_signal_is_immediate(monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a copy of the same request (torchrun forwarding it): no escalation
        assert stop.requested and stop.signum == signal.SIGTERM
        monkeypatch.setattr(StopRequest, "ESCALATE_AFTER_S", 0.0)  # as if a second had passed
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_evaluation_put_off_by_a_stop_runs_after_the_resume(small_synth, tmp_path):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    run = tmp_path / "ev"
    args = ["train", "--no-progress", "--config", "configs/synthetic/tiny.yaml", *_overrides(small_synth, run),
            "train.max_steps=4", "train.ckpt_every=0", "train.eval_every=2"]
    rc, log = _run([sys.executable, str(wrapper), *args], {"AT": "2", "SIG": "SIGTERM"}, tmp_path)
    assert rc == 128 + signal.SIGTERM, log[-2000:]
    evals = lambda: [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()  # noqa: E731
                     if "train_minutes" in json.loads(l) and not json.loads(l).get("final")]
    assert evals() == []  # stopped at once, the step-2 evaluation owed
    rc, log = _run([sys.executable, "-m", "bmvit", *args, "--resume", "auto"], {}, tmp_path)
    assert rc == 0, log[-2000:]
    assert evals() == [2]  # after the resume, at the step it was due


def test_eval_marks_follow_the_config_on_resume(small_synth, tmp_path):
    from bmvit.config import load_config
    from bmvit.engine.train import train

    run = tmp_path / "marks"
    base = _overrides(small_synth, run) + ["train.ckpt_every=2", "train.eval_at_minutes=[]"]
    cfg = load_config(ROOT / "configs" / "synthetic" / "tiny.yaml", base + ["train.max_steps=2"])
    train(cfg, progress=False)
    clock = torch.load(run / "checkpoints" / "step_00000002" / "state.pt", weights_only=True)["train_seconds"]
    past, ahead = clock / 120, clock / 60 + 1e-6  # minutes: one the run had passed, one just ahead of it
    more = load_config(ROOT / "configs" / "synthetic" / "tiny.yaml",
                       base[:-1] + [f"train.eval_at_minutes=[{past!r},{ahead!r}]", "train.max_steps=4"])
    train(more, progress=False, resume="auto")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the mark ahead fires after the next step; the one already passed is not evaluated late
    assert [r["step"] for r in recs if "train_minutes" in r and not r.get("final")] == [3]
