"""The paper's protocol end to end: a model trained on 3 classes, evaluated on 2 (``eval.label_map``).

The in-training evaluation (``metrics.jsonl``), ``bmvit eval`` and ``bmvit eval-ava --labelmap
<2-class file>`` on the CSV that ``bmvit eval`` writes give the same mAP, exactly, under both
protocols: ActivityNet 2019 (50 detections per frame) and PySlowFast (uncapped).
"""

from __future__ import annotations

import json

import pytest

from bmvit.cli.main import main
from bmvit.data.formats.ava import write_label_map
from tests.data_fixtures import write_ava

OVERRIDES = {
    "data.size": 48, "data.num_frames": 8, "model.backbone": "mvit_tiny", "model.head_hidden": 32,
    "model.kv_stride": "[1,4,4]", "model.token_selection": "singleton", "eval.threshold": 0.0,
    "eval.batch_size": 4, "train.threads": 1, "train.max_steps": 1, "train.batch_size": 2, "train.log_every": 1,
    "eval.label_map": "annotations/eval2.pbtxt", "eval.max_dets_per_frame": 0,
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from bmvit.config import load_config
    from bmvit.engine.train import train

    root = write_ava(tmp_path_factory.mktemp("ava3"))
    write_label_map(root / "annotations" / "eval2.pbtxt", {1: "stand", 7: "wave"})  # 2 of the 3 classes
    out = root.parent / "run"
    cfg = load_config(None, [f"{k}={v}" for k, v in {**OVERRIDES, "data.root": root, "train.out_dir": out}.items()])
    final = train(cfg, progress=False)
    return root, out, final


def _eval_ava(capsys, root, csv, cap, tmp):
    code = main(["eval-ava", "--gt", str(root / "annotations" / "val.csv"), "--pred", str(csv), "--labelmap",
                 str(root / "annotations" / "eval2.pbtxt"), "--max-dets-per-frame", str(cap), "--json", str(tmp)])
    assert code == 0, capsys.readouterr().err
    return json.loads(tmp.read_text())


def test_in_training_eval_and_eval_ava_agree_on_the_evaluated_classes(trained_run, capsys, tmp_path):
    root, out, final = trained_run
    record = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["final"] and record["eval_protocol"] == "uncapped"
    assert record["val_frame_map"] == record["val_frame_map_uncapped"]  # eval.max_dets_per_frame=0: the headline
    for key in ("val_actor_precision", "val_actor_recall", "val_actor_ap"):
        assert key in record

    code = main(["eval", "--run", str(out), "--no-progress"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert printed[-1] == f"frame-mAP@0.5: {record['val_frame_map']:.4f}"
    assert any(line.startswith("actor precision@θ=0:") and "actor AP@0.5" in line for line in printed)
    doc = json.loads((out / "eval" / "metrics_val.json").read_text())
    assert set(doc["per_class"]) == {"stand", "wave"}  # only the evaluated classes
    for key in ("precision", "recall", "ap"):  # the actor detector: same numbers in both places
        assert doc["actor"][key] == record[f"val_actor_{key}"]
    assert doc["actor"]["num_gt"] == 5  # the persons of write_ava's 4 val frames (2 + 1 + 1 + 1)
    csv = out / "eval" / "detections_val.csv"
    assert {line.split(",")[6] for line in csv.read_text().splitlines()} == {"1", "7"}  # class 3 not written

    rows_per_frame = max(sum(1 for _ in g) for _, g in __import__("itertools").groupby(
        line.split(",")[1] + line.split(",")[0] for line in csv.read_text().splitlines()))
    assert rows_per_frame > 50  # the official cap binds: the two protocols see different detections
    for name, cap in (("official", 50), ("uncapped", 0)):
        from_file = _eval_ava(capsys, root, csv, cap, tmp_path / f"{name}.json")["mAP"]
        assert doc["protocols"][name]["mAP"] == record[f"val_frame_map_{name}"] == from_file, name
        assert doc["protocols"][name]["num_classes"] == 2


def test_eval_label_map_must_be_a_subset_of_the_training_classes(trained_run, capsys):
    root, out, _ = trained_run
    write_label_map(root / "annotations" / "other.pbtxt", {1: "stand", 9: "swim"})
    code = main(["eval", "--run", str(out), "--no-progress", "eval.label_map=annotations/other.pbtxt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "other.pbtxt" in err[0] and "[9]" in err[0]


def test_every_ava_paper_config_evaluates_the_60_classes_and_states_its_protocol(capsys):
    from pathlib import Path

    from bmvit.config import load_config

    files = sorted(Path("configs/paper/ava").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        cfg = load_config(f)
        assert cfg.eval.label_map.endswith("_for_activitynet_2019.pbtxt"), f
        assert cfg.data.label_map.endswith("ava_action_list_v2.2.pbtxt"), f  # training keeps the 80 classes
        assert "\n  max_dets_per_frame: " in f.read_text(), f  # stated in the file itself
    assert main(["train", "--config", str(files[0]), "--print-config"]) == 0
    assert "label_map: annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt" in capsys.readouterr().out
