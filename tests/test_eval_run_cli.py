"""``bmvit eval --run RUN --split val --render 1``: the command ``make demo`` ends with.

A three-step tiny run on the shared small synthetic set stands in for the demo's run folder. The
checks tie what ``bmvit eval`` prints and writes to independent figures: the final evaluation that
training logged for the same weights, and ``bmvit eval-ava`` re-scoring the detections CSV it wrote.
"""

from __future__ import annotations

import json
import re

import av
import pytest

from bmvit.cli.main import main
from bmvit.config import load_config
from bmvit.engine.train import train

TINY = "configs/synthetic/tiny.yaml"


@pytest.fixture(scope="module")
def run(small_synth, tmp_path_factory):
    """A trained run folder (model.safetensors + metrics.jsonl) and its final logged val frame-mAP."""
    out = tmp_path_factory.mktemp("evalrun") / "run"
    over = {"data.root": small_synth, "data.size": 32, "data.num_frames": 4, "data.cache_frames": True,
            "model.head_hidden": 16, "model.kv_stride": "[1,4,4]", "train.out_dir": out, "train.batch_size": 4,
            "train.max_steps": 3, "train.threads": 1, "train.eval_at_minutes": "[]", "eval.threshold": 0.0}
    cfg = load_config(TINY, [f"{k}={v}" for k, v in over.items()])
    final = train(cfg, progress=False)
    return out, final["val_frame_map"], cfg


def _main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_run_prints_writes_and_renders_what_training_measured(run, capsys):
    folder, logged, cfg = run
    code, out, err = _main(capsys, "eval", "--run", str(folder), "--split", "val", "--render", "1", "--no-progress")
    assert code == 0, err
    lines = out.strip().splitlines()
    m = re.fullmatch(r"frame-mAP@0\.5: (\d\.\d{4})", lines[-1])
    assert m, lines[-1]
    assert logged > 0  # a figure the comparisons below can get wrong
    assert float(m.group(1)) == pytest.approx(logged, abs=5e-5)  # same weights, same config, same split
    ev = folder / "eval"
    metrics = json.loads((ev / "metrics_val.json").read_text())
    assert metrics["split"] == "val" and metrics["checkpoint"] == str(folder / "model.safetensors")
    assert metrics["mean_ap"] == pytest.approx(logged, abs=1e-9)
    # the detections CSV re-scored by the AVA evaluator CLI gives the same figure
    det = ev / "detections_val.csv"
    assert f"predictions: {det}" in lines
    code, out2, err2 = _main(capsys, "eval-ava", "--gt", str(cfg.data.path(cfg.data.val_csv)), "--pred", str(det),
                             "--labelmap", str(cfg.data.path(cfg.data.label_map)),
                             "--max-dets-per-frame", str(cfg.eval.max_dets_per_frame), "--json", str(ev / "rescored.json"))
    assert code == 0, err2
    rescored = json.loads((ev / "rescored.json").read_text())["mean_ap"]
    assert rescored == pytest.approx(logged, abs=1e-3)  # CSV text may round boxes (3 decimals)
    # --render 1: the video with the most annotated actors, every frame of it
    rendered = [line.split(" ", 1)[1] for line in lines if line.startswith("rendered ")]
    assert len(rendered) == 1 and rendered[0].endswith(".mp4")
    vid = rendered[0].rsplit("render_", 1)[1][: -len(".mp4")]
    boxes = {tuple(r.split(",")[:6]) for r in cfg.data.path(cfg.data.val_csv).read_text().splitlines()}  # one per actor
    actors = {v: sum(1 for b in boxes if b[0] == v) for v in {b[0] for b in boxes}}
    assert actors[vid] == max(actors.values()) > min(actors.values())
    frames = len(list((cfg.data.path(cfg.data.frames_dir) / vid).iterdir()))
    with av.open(rendered[0]) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames


def test_eval_overrides_apply_on_top_of_the_checkpoint_config(run, capsys, tmp_path):
    folder, _, _ = run
    code, _, err = _main(capsys, "eval", "--run", str(folder), "--out", str(tmp_path / "all"), "--no-progress")
    assert code == 0, err
    code, out, err = _main(capsys, "eval", "--run", str(folder), "--out", str(tmp_path / "none"), "--no-progress",
                           "eval.threshold=0.999")
    assert code == 0, err
    everything = (tmp_path / "all" / "detections_val.csv").read_text().splitlines()
    nothing = (tmp_path / "none" / "detections_val.csv").read_text().splitlines()
    assert len(everything) > 0 and nothing == []  # no token of a 3-step model is that sure of an actor
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 0.0000"


@pytest.mark.parametrize("args, needle", [([], "--run"), (["--run", "NOWHERE"], "model.safetensors")])
def test_eval_bad_input_is_one_line(args, needle, capsys, tmp_path):
    args = [a.replace("NOWHERE", str(tmp_path / "nowhere")) for a in args]
    code, _, err = _main(capsys, "eval", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_train_render_writes_and_prints_what_eval_would(small_synth, capsys, tmp_path):
    """``bmvit train --render 1`` (what ``make demo`` runs) ends with the final evaluation as
    ``bmvit eval --run RUN --render 1`` would print and write it — without evaluating twice."""
    out = tmp_path / "run"
    over = {"data.root": small_synth, "data.size": 32, "data.num_frames": 4, "model.head_hidden": 16,
            "model.kv_stride": "[1,4,4]", "train.out_dir": out, "train.batch_size": 4, "train.max_steps": 2,
            "train.threads": 1, "train.eval_at_minutes": "[]", "eval.threshold": 0.0}
    code, out_train, err = _main(capsys, "train", "--config", TINY, "--no-progress", "--render", "1",
                                 *[f"{k}={v}" for k, v in over.items()])
    assert code == 0, err
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert logged["final"] and logged["val_frame_map"] > 0
    lines = out_train.strip().splitlines()
    assert lines[-1] == f"frame-mAP@0.5: {logged['val_frame_map']:.4f}"
    written = {p.name: p.read_bytes() for p in (out / "eval").iterdir()}
    assert {"detections_val.csv", "metrics_val.json"} <= set(written)
    rendered = [line.split(" ", 1)[1] for line in lines if line.startswith("rendered ")]
    assert len(rendered) == 1 and rendered[0].startswith(str(out / "eval" / "render_"))
    # bmvit eval of the same weights writes the same detections and metrics, prints the same report
    code, out_eval, err = _main(capsys, "eval", "--run", str(out), "--out", str(tmp_path / "again"), "--render", "1",
                                "--no-progress")
    assert code == 0, err
    again = tmp_path / "again"
    assert (again / "detections_val.csv").read_bytes() == written["detections_val.csv"]
    m1, m2 = (json.loads(b) for b in (written["metrics_val.json"], (again / "metrics_val.json").read_bytes()))
    assert m1 == m2
    report = lambda text: [ln for ln in text.rstrip().splitlines() if not ln.startswith(("rendered ", "predictions: "))]  # noqa: E731
    assert report(out_eval) == report(out_train)[-len(report(out_eval)):]
    assert (again / f"render_{rendered[0].rsplit('render_', 1)[1]}").is_file()


def test_eval_of_a_run_that_did_not_finish_says_how_to_go_on(tmp_path, capsys):
    from bmvit.cli.main import main as cli

    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000005").mkdir(parents=True)
    assert cli(["eval", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: not written yet — the run did not finish" in err and "--resume auto" in err


def test_eval_of_a_training_checkpoint_writes_beside_the_run_not_into_the_checkpoint():
    from pathlib import Path

    from bmvit.cli.eval import _default_out

    assert _default_out(Path("runs/x/checkpoints/step_00000040/model.safetensors")) == Path("runs/x/eval/step_00000040")
    assert _default_out(Path("weights/model.safetensors")) == Path("weights/eval")
