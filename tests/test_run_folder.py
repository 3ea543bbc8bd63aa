"""The run folder across kills and restarts (bmvit.engine.run_folder): metrics.jsonl holds each
record once, whatever moment the previous process was killed at."""

import json

import pytest

from bmvit.config import load_config
from bmvit.engine.run_folder import prepare_run_folder, truncate_metrics
from bmvit.errors import CheckpointError


def _log(path, *records, torn=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def test_resume_drops_later_final_and_torn_records(tmp_path):
    m = tmp_path / "metrics.jsonl"
    # killed mid-line after the final evaluation of a run whose last checkpoint is step 2
    _log(m, {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "val_frame_map": 0.1},
         {"step": 3, "loss": 0.4}, {"step": 2, "final": True, "val_frame_map": 0.2}, torn='{"step": 4, "lo')
    truncate_metrics(m, 2)
    assert [json.loads(line) for line in m.read_text().splitlines()] == [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "val_frame_map": 0.1}]


def test_a_fresh_start_does_not_append_to_the_killed_runs_log(tmp_path):
    """A run killed before its first checkpoint, restarted with or without --resume auto: a new log."""
    for resume in ("auto", None):
        _log(tmp_path / "metrics.jsonl", {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5})
        assert prepare_run_folder(tmp_path, resume, overwrite=False, is_main=True) is None
        assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_config_changes_name_each_key(tmp_path):
    from bmvit.engine.checkpoint import save_weights
    from bmvit.engine.checkpoint import config_changes

    cfg = load_config(None, ["model.backbone=mvit_tiny", "train.out_dir=a"])
    save_weights(tmp_path / "model.safetensors", __import__("torch").nn.Linear(1, 1), cfg)
    later = load_config(None, ["model.backbone=mvit_tiny", "train.out_dir=b", "train.lr=0.5", "model.head_hidden=7"])
    assert config_changes(tmp_path, cfg) == []  # the same run; another out_dir is no change either
    assert config_changes(tmp_path, later) == ["model.head_hidden: 256 -> 7", "train.lr: 0.0001 -> 0.5"]


def test_a_restart_removes_what_a_killed_run_left_half_written(tmp_path):
    """Half-written final weights and checkpoint folders (each the size of the model) do not pile up."""
    (tmp_path / "checkpoints" / ".tmp_step_00000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp_step_00000004" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".model.safetensors.4242.0f07b064.tmp").write_bytes(b"half")
    (tmp_path / "model.safetensors").write_bytes(b"kept")
    prepare_run_folder(tmp_path, "auto", overwrite=False, is_main=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "model.safetensors"]


def test_a_damaged_checkpoint_is_reported_in_one_line(tmp_path, capsys):
    (tmp_path / "checkpoints" / "step_00000004").mkdir(parents=True)  # damaged: no manifest
    assert prepare_run_folder(tmp_path, "auto", overwrite=False, is_main=True) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[0].startswith("warning: skipping damaged checkpoint: ") and "manifest" in err[0]
    assert "no intact checkpoint" in err[1]
    # set aside, never deleted: out of the resumed run's way, still there to inspect
    assert err[2].startswith("resume: moved the damaged checkpoint step_00000004 to ")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["damaged_step_00000004"]
    (tmp_path / "checkpoints" / "step_00000004").mkdir()  # damaged again: a second name
    prepare_run_folder(tmp_path, "auto", overwrite=False, is_main=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "damaged_step_00000004", "damaged_step_00000004_1"]


def test_resume_given_the_run_folder_says_which_checkpoint_to_pass(tmp_path):
    (tmp_path / "checkpoints" / "step_00000004").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"a run folder, not a checkpoint folder; pass .*step_00000004 or "
                                              r"--resume auto with train.out_dir="):
        prepare_run_folder(tmp_path / "new", str(tmp_path), overwrite=False, is_main=True)


@pytest.mark.parametrize("files", [["model.safetensors", "state.pt"], {}])
def test_a_manifest_without_the_checksums_is_one_line(tmp_path, files):
    ckpt = tmp_path / "checkpoints" / "step_00000004"
    ckpt.mkdir(parents=True)
    (ckpt / "manifest.json").write_text(json.dumps({"step": 4, "files": files}))
    with pytest.raises(CheckpointError, match=r"manifest.json: 'files' must map model.safetensors, state.pt"):
        prepare_run_folder(tmp_path, str(ckpt), overwrite=False, is_main=True)


def test_resume_auto_reads_a_state_without_a_step_to_the_one_line_refusal(tmp_path):
    """A checkpoint whose state.pt lacks the run keys reaches RunState's refusal (no KeyError before it)."""
    import torch

    from bmvit.engine.state import save_checkpoint

    cfg = load_config(None, ["model.backbone=mvit_tiny"])
    for step in (4, 6):
        save_checkpoint(tmp_path, step, torch.nn.Linear(1, 1), cfg, {"epoch": 1}, keep=0)
    found = prepare_run_folder(tmp_path, "auto", overwrite=False, is_main=True)
    assert found.path.name == "step_00000006"
    from bmvit.engine.state import RunState

    with pytest.raises(CheckpointError, match=r"step_00000006/state.pt: no step, batch, .* in the training state"):
        RunState.from_state(found.state, found.path)


def test_overwrite_discards_the_earlier_runs_outputs(tmp_path):
    """Nothing of the earlier run is left to pass for the new one's (were the new one killed early)."""
    (tmp_path / "checkpoints" / "step_00000004").mkdir(parents=True)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics_val.json").write_text("{}")
    for name in ("model.safetensors", "best.safetensors", "metrics.jsonl"):
        (tmp_path / name).write_text("earlier run")
    prepare_run_folder(tmp_path, None, overwrite=True, is_main=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"] and not (tmp_path / "metrics.jsonl").read_text()


def test_resume_and_overwrite_together_are_refused_in_the_api_too(tmp_path):
    """`train(cfg, resume="auto", overwrite=True)` used to ignore overwrite without a word."""
    from bmvit.errors import ConfigError

    with pytest.raises(ConfigError, match="resume and overwrite exclude each other"):
        prepare_run_folder(tmp_path, "auto", overwrite=True, is_main=True)


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, capsys):
    """`--resume RUN/checkpoints/step_4` when step_6 exists: step_6 belongs to the abandoned continuation;
    it is renamed (not deleted), so that a later `--resume auto` does not take it."""
    import torch

    from bmvit.engine.state import list_checkpoints, save_checkpoint

    cfg = load_config(None, ["model.backbone=mvit_tiny"])
    for step in (4, 6):
        save_checkpoint(tmp_path, step, torch.nn.Linear(1, 1), cfg, {"step": step}, keep=0)
    found = prepare_run_folder(tmp_path, str(tmp_path / "checkpoints" / "step_00000004"), overwrite=False, is_main=True)
    assert found.path.name == "step_00000004"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004"]
    assert (tmp_path / "checkpoints" / "abandoned_step_00000006" / "manifest.json").is_file()
    assert "moved the abandoned checkpoint step_00000006" in capsys.readouterr().err
    other = tmp_path / "other"  # a checkpoint of another run folder leaves this one's checkpoints alone
    save_checkpoint(other, 9, torch.nn.Linear(1, 1), cfg, {"step": 9}, keep=0)
    prepare_run_folder(other, str(tmp_path / "checkpoints" / "step_00000004"), overwrite=False, is_main=True)
    assert [p.name for p in list_checkpoints(other)] == ["step_00000009"]
