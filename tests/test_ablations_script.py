"""benchmarks/ablations.py without training: it reuses finished runs, summarizes seeds as mean ± std
per Table 1 row, and rewrites only the marked block of the doc."""

import importlib.util
import json
import statistics
from argparse import Namespace
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("ablations", Path(__file__).resolve().parents[1] / "benchmarks" / "ablations.py")
ablations = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ablations)


def _finished(run: Path, value: float, args: Namespace, variant: str, seed: int) -> None:
    run.mkdir(parents=True)
    lines = [{"step": 20, "loss": 1.0}, {"step": 40, "val_frame_map": 0.1, "final": True, "val_actor_ap": 0.2}]
    lines[-1]["val_frame_map"] = value
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    ablations.write_stamp(run.with_name(run.name + ".recipe.json"), *ablations.recipe_key(variant, seed, args))


def test_finished_runs_are_reused_and_summarized(tmp_path):
    values = {("tubelet", 0): 0.5, ("tubelet", 1): 0.6, ("tubelet", 2): 0.7, ("ct", 0): 0.4, ("ct", 1): 0.45}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  max_steps: 10\n")
    args = Namespace(out=str(tmp_path), config=str(recipe), data="unused", overrides=[], ledger=str(tmp_path / "ledger.jsonl"))
    for (variant, seed), v in values.items():
        _finished(tmp_path / f"{variant}_seed{seed}", v, args, variant, seed)
    # train_one must not start anything for a finished run (the command would fail: no such config)
    recs = {k: ablations.train_one(*k, args, threads=1) for k in values}
    results: dict = {}
    for (variant, _), rec in recs.items():
        results.setdefault(variant, []).append(rec)
    rows = {(r["table"], r["row"]): r for r in ablations.summarize(results)}
    demo = rows[("1b", "tubelet")]  # the base of every row
    assert demo["seeds"] == 3 and demo["mean"] == pytest.approx(0.6)
    assert demo["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert rows[("1a", "last pool removed (out 2×12²)")]["map"] == demo["map"]  # the demo run set is shared
    assert rows[("1b", "C+T")]["mean"] == pytest.approx(0.425) and rows[("1b", "C+T")]["seeds"] == 2
    table = ablations.markdown(list(rows.values()))
    assert "| 1b | tubelet | 3 | **0.600** ± 0.100 | 0.500 / 0.600 / 0.700 |" in table
    assert "| 1b | 2(C+T) | 0 | not run |" in table


def test_a_changed_recipe_redoes_the_run(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  stride: 4\n")
    args = Namespace(out=str(tmp_path), config=str(recipe), data="d", overrides=[], ledger=str(tmp_path / "ledger.jsonl"))
    _finished(tmp_path / "tubelet_seed0", 0.5, args, "tubelet", 0)
    assert ablations.train_one("tubelet", 0, args, threads=1)["val_frame_map"] == 0.5
    started = []

    def fake_run(cmd, **kw):
        started.append(cmd)
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr(ablations.subprocess, "run", fake_run)
    recipe.write_text("# a comment changes no result\ndata:\n  stride: 4\n")
    assert ablations.train_one("tubelet", 0, args, threads=1)["val_frame_map"] == 0.5 and not started
    recipe.write_text("data:\n  stride: 2\n")  # the recipe's training changed: the old result is stale
    with pytest.raises(SystemExit, match="failed"):
        ablations.train_one("tubelet", 0, args, threads=1)
    assert len(started) == 1 and f"train.out_dir={tmp_path / 'tubelet_seed0'}" in started[0]


def test_the_ledger_carries_finished_runs_to_an_empty_output_folder(tmp_path, monkeypatch):
    """A run recorded in the ledger is not trained again on a machine without its run folder;
    a run of another recipe is."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  stride: 4\n")
    ledger = tmp_path / "ledger.jsonl"
    first = Namespace(out=str(tmp_path / "a"), config=str(recipe), data="d", overrides=[], ledger=str(ledger))
    _finished(tmp_path / "a" / "tubelet_seed0", 0.5, first, "tubelet", 0)
    assert ablations.train_one("tubelet", 0, first, threads=1)["val_frame_map"] == 0.5  # reused and recorded
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(e["variant"], e["seed"], e["record"]["val_frame_map"]) for e in entries] == [("tubelet", 0, 0.5)]
    ledger.write_text(ledger.read_text() + '{"cut sho')  # a torn line is skipped, not an error
    started = []

    def fake_run(cmd, **kw):
        started.append(cmd)
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr(ablations.subprocess, "run", fake_run)
    elsewhere = Namespace(out=str(tmp_path / "b"), config=str(recipe), data="d", overrides=[], ledger=str(ledger))
    (tmp_path / "b").mkdir()
    assert ablations.train_one("tubelet", 0, elsewhere, threads=1)["val_frame_map"] == 0.5 and not started
    with pytest.raises(SystemExit, match="failed"):  # seed 1 is not in the ledger
        ablations.train_one("tubelet", 1, elsewhere, threads=1)
    assert len(started) == 1


def test_unfinished_run_is_not_taken_as_done(tmp_path):
    run = tmp_path / "tubelet_seed0"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 20, "loss": 1.0}) + "\n" + '{"step": 40, "fin')
    assert ablations.final_record(run) is None  # a killed run's half-written last line is not an error


def test_write_docs_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text(f"# head\n{ablations.BEGIN}\nold table\n{ablations.END}\ntail text\n")
    ablations.write_docs("| new |", Namespace(doc=str(doc), seeds=[0, 1, 2], data="data/synthetic"))
    text = doc.read_text()
    assert text.startswith("# head\n") and text.endswith("tail text\n")
    assert "| new |" in text and "old table" not in text and "Seeds: 0 1 2" in text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        ablations.write_docs("| new |", Namespace(doc=str(doc), seeds=[0], data="d"))


def test_report_tabulates_finished_runs_without_training(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  token_selection: c+t\ntrain:\n  max_steps: 10\n")  # BASE makes it tubelet
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{ablations.BEGIN}\nold\n{ablations.END}\nrest\n")
    args = Namespace(out=str(tmp_path / "runs"), config=str(recipe), data=str(data), overrides=[],
                     ledger=str(tmp_path / "ledger.jsonl"))
    _finished(tmp_path / "runs" / "tubelet_seed0", 0.5, args, "tubelet", 0)
    _finished(tmp_path / "runs" / "ct_seed1", 0.4, args, "ct", 1)
    monkeypatch.setattr(ablations.subprocess, "run", lambda *a, **k: pytest.fail("--report must not train"))
    monkeypatch.setattr(ablations, "plot", lambda rows, path: path.write_text("png"))
    monkeypatch.setattr("sys.argv", ["ablations.py", "--data", str(data), "--out", args.out, "--config", str(recipe),
                                     "--ledger", args.ledger, "--report", "--write-docs", "--doc", str(doc),
                                     "--plot", str(tmp_path / "p.png")])
    assert ablations.main() == 0
    text = doc.read_text()
    assert "| 1b | tubelet | 1 | **0.500** (one seed: no spread) |" in text and "| 1b | C+T | 1 | **0.400**" in text
    assert "2 of 21 runs finished so far" in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert len(ablations.read_ledger(Path(args.ledger))) == 2  # the finished folders went into the ledger


def test_changed_eval_settings_reevaluate_the_weights_instead_of_training(tmp_path, monkeypatch):
    """Only the recipe's ``eval`` section changed: a finished run whose weights are here is
    re-evaluated (recorded with the new settings, once); one without weights counts as not done."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("eval:\n  threshold: 0.2\n")
    args = Namespace(out=str(tmp_path / "runs"), config=str(recipe), data="d", overrides=[],
                     ledger=str(tmp_path / "ledger.jsonl"))
    _finished(tmp_path / "runs" / "tubelet_seed0", 0.5, args, "tubelet", 0)
    (tmp_path / "runs" / "tubelet_seed0" / "model.safetensors").write_bytes(b"weights")
    _finished(tmp_path / "runs" / "ct_seed0", 0.4, args, "ct", 0)  # no weights
    assert ablations.finished("tubelet", 0, args)["val_frame_map"] == 0.5
    assert ablations.finished("ct", 0, args)["val_frame_map"] == 0.4
    calls = []

    def fake_reevaluate(variant, seed, a, old):
        calls.append((variant, seed, old["val_frame_map"]))
        return {**old, "val_frame_map": 0.55, "reevaluated": True}

    monkeypatch.setattr(ablations, "reevaluate", fake_reevaluate)
    monkeypatch.setattr(ablations.subprocess, "run", lambda *a, **k: pytest.fail("an eval change must not retrain"))
    recipe.write_text("eval:\n  threshold: 0.1\n")
    assert ablations.finished("tubelet", 0, args)["val_frame_map"] == 0.55
    assert ablations.finished("tubelet", 0, args)["val_frame_map"] == 0.55  # recorded: not evaluated again
    assert calls == [("tubelet", 0, 0.5)]
    assert ablations.finished("ct", 0, args) is None  # no weights to re-evaluate
    recipe.write_text("eval:\n  threshold: 0.1\ntrain:\n  max_steps: 7\n")
    assert ablations.finished("tubelet", 0, args) is None  # training changed: nothing to reuse


def test_reevaluate_reproduces_the_final_evaluation_of_training(small_synth, tmp_path):
    """Re-evaluating a run's weights under unchanged eval settings gives the figure its training
    logged at the end (the same evaluation, from the saved weights)."""
    from bmvit.config import load_config
    from bmvit.engine.train import train

    recipe = tmp_path / "recipe.yaml"
    tiny = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    recipe.write_text(f"base: {tiny}\ndata:\n  size: 32\n  num_frames: 4\nmodel:\n  head_hidden: 16\n  kv_stride: [1, 4, 4]\n"
                      "train:\n  max_steps: 3\n  batch_size: 4\neval:\n  threshold: 0.0\n")
    args = Namespace(out=str(tmp_path / "runs"), config=str(recipe), data=str(small_synth), overrides=[],
                     ledger=str(tmp_path / "ledger.jsonl"))
    run = tmp_path / "runs" / "tubelet_seed0"
    cfg = load_config(str(recipe), [*ablations.BASE, "train.seed=0", f"data.root={small_synth}", f"train.out_dir={run}",
                                    "train.threads=1", "train.eval_at_minutes=[]"])
    final = train(cfg, progress=False)
    rec = ablations.reevaluate("tubelet", 0, args, final)
    assert rec["val_frame_map"] == pytest.approx(final["val_frame_map"], abs=1e-9)
    assert rec["val_actor_ap"] == pytest.approx(final["val_actor_ap"], abs=1e-9) and rec["reevaluated"]
