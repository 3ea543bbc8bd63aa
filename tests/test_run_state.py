"""The run state a checkpoint saves (bmvit.engine.state.RunState): legacy keys, round trip, clear refusal."""

import pytest

from bmvit.engine.state import RunState
from bmvit.errors import CheckpointError

LEGACY = {"step": 12, "epoch": 3, "batch": 1, "train_seconds": 4.5, "best_map": 0.25, "eval_minutes_left": [2.0, 5.0],
          "optimizer": {}, "scaler": {}, "rng": {}, "world_size": 1, "ema_updates": 0}


def test_reads_the_keys_of_checkpoints_written_before_the_class():
    st = RunState.from_state(LEGACY, __import__("pathlib").Path("run/checkpoints/step_00000012"))
    assert st == RunState(12, 3, 1, 4.5, 0.25, [2.0, 5.0])
    written = st.to_state()
    assert {k: written[k] for k in written if k in LEGACY} == {k: LEGACY[k] for k in written if k in LEGACY}
    assert written["warmup_seconds"] is None  # a legacy run had no time budget: none is invented on resume
    assert written["eval_due"] is False  # nor an evaluation put off by a stop
    assert set(written) - set(LEGACY) == {"warmup_seconds", "eval_due"}  # the same keys, plus the new ones


def test_a_state_without_the_run_keys_is_refused_by_name(tmp_path):
    broken = {k: v for k, v in LEGACY.items() if k not in ("best_map", "eval_minutes_left")}
    with pytest.raises(CheckpointError, match=r"step_1/state.pt: no best_map, eval_minutes_left in the training state"):
        RunState.from_state(broken, tmp_path / "step_1")
