"""``bmvit eval-ava`` / ``eval-frame`` / ``eval-video`` end to end: table, last line, JSON, PNG,
and one-line errors naming ``file:line`` (exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmvit.cli.main import main
from bmvit.data.formats.ava import AvaRows, write_label_map, write_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _ava_files(tmp_path):
    write_label_map(tmp_path / "labels.pbtxt", {1: "stand", 2: "sit", 3: "walk"})
    full, miss = (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.1, 0.1)

    def rows(items):
        return AvaRows([i[0] for i in items], np.array([i[1] for i in items]), np.array([i[2] for i in items], float),
                       np.array([i[3] for i in items]), np.array([i[4] for i in items], float))

    write_rows(tmp_path / "gt.csv", rows([("v", 902, full, 1, 0), ("v", 903, full, 2, 1)]), "{:d}")
    write_rows(tmp_path / "pred.csv", rows([("v", 902, miss, 1, 0.9), ("v", 902, full, 1, 0.8), ("v", 903, full, 2, 0.7)]))
    return tmp_path / "gt.csv", tmp_path / "pred.csv", tmp_path / "labels.pbtxt"


def test_eval_ava_outputs(tmp_path, capsys):
    gt, pred, labels = _ava_files(tmp_path)
    code, out, err = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels),
                          "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "plots"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == "frame-mAP@0.5: 0.7500"  # stand: FP then TP -> 0.5; sit: 1.0; walk: no GT
    assert "| stand | 50.00 | 1 |" in out and "| walk | n/a | 0 |" in out
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["mAP"] == 0.75 and doc["per_class"] == {"stand": 0.5, "sit": 1.0, "walk": None}
    assert doc["max_dets_per_frame"] == 50
    assert (tmp_path / "plots" / "ava_pr.png").read_bytes()[:8] == PNG_MAGIC
    # The cap: with 1 detection per frame the TP on frame 902 is cut; 0 = uncapped.
    code, out, _ = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels),
                        "--max-dets-per-frame", "1")
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 0.5000"
    code, out, _ = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels),
                        "--max-dets-per-frame", "0")
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 0.7500"


def test_eval_ava_plot_with_a_class_that_has_no_detections(tmp_path, capsys):
    """--plot with a class that has GT but no detection row (its AP is 0): was a matplotlib ValueError
    traceback ("x and y must have same first dimension"), now the PNG is written."""
    gt, pred, labels = _ava_files(tmp_path)
    pred.write_text("".join(line + "\n" for line in pred.read_text().splitlines() if not line.split(",")[6] == "2"))
    code, out, err = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels),
                          "--plot", str(tmp_path / "plots"))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 0.2500"  # stand 0.5, sit 0 (no detections)
    assert (tmp_path / "plots" / "ava_pr.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("verb", ["eval-ava", "eval-frame"])
def test_eval_plot_into_a_file_is_one_error_line(tmp_path, capsys, verb):
    """--plot naming an existing file (not a folder) was a FileExistsError traceback; now one line."""
    gt, pred, labels = _ava_files(tmp_path)
    args = ["--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels)]
    if verb == "eval-frame":
        (tmp_path / "c.txt").write_text("run\n")
        (tmp_path / "g.csv").write_text("v,1,run,10,10,50,50\n")
        (tmp_path / "d.csv").write_text("v,1,run,0.9,10,10,50,50\n")
        args = ["--classes", str(tmp_path / "c.txt"), "--gt", str(tmp_path / "g.csv"), "--pred", str(tmp_path / "d.csv")]
    code, out, err = _run(capsys, verb, *args, "--plot", str(gt))
    assert code == 2
    assert err.startswith("error: ") and "cannot write output" in err and len(err.strip().splitlines()) == 1


def test_eval_ava_names_rows_outside_the_label_map(tmp_path, capsys):
    """Rows with action ids the label map lacks are left out (official rule 1), and said so: a 0-based
    detection file must not just score 0 without a word."""
    gt, pred, labels = _ava_files(tmp_path)
    pred.write_text(pred.read_text() + "v,0902,0.0,0.0,1.0,1.0,0,0.95\nv,0903,0.0,0.0,1.0,1.0,9,0.5\n")
    gt.write_text(gt.read_text() + "v,0902,0.0,0.0,1.0,1.0,80,0\n")
    code, out, err = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels),
                          "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 0.7500"  # unchanged: those rows are left out
    assert ("note: 1 ground-truth rows (action ids 80) and 2 detection rows (action ids 0, 9) not in the label "
            "map: left out") in out
    assert json.loads((tmp_path / "m.json").read_text())["unlisted_rows"]["detections"] == {"0": 1, "9": 1}


def _one_error_line(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_eval_ava_bad_row(tmp_path, capsys):
    gt, pred, labels = _ava_files(tmp_path)
    text = pred.read_text().splitlines()
    text[2] = text[2].replace(",", ";", 2)
    pred.write_text("\n".join(text) + "\n")
    code, _, err = _run(capsys, "eval-ava", "--gt", str(gt), "--pred", str(pred), "--labelmap", str(labels))
    _one_error_line(code, err, "pred.csv:3:", "expected 7 or 8")


def _ucf_files(tmp_path):
    (tmp_path / "classes.txt").write_text("run\njump\n")
    gt = "".join(f"v,{f},run,p0,0,0,9,9\n" for f in range(1, 21))
    det = "".join(f"v,{f},run,0.9,0,0,9,9\nv,{f},run,0.3,40,40,49,49\n" for f in range(1, 21))
    (tmp_path / "gt.csv").write_text(gt)
    (tmp_path / "det.csv").write_text(det)
    return tmp_path / "classes.txt", tmp_path / "gt.csv", tmp_path / "det.csv"


def test_eval_frame_outputs(tmp_path, capsys):
    classes, gt, det = _ucf_files(tmp_path)
    code, out, err = _run(capsys, "eval-frame", "--classes", str(classes), "--gt", str(gt), "--pred", str(det),
                          "--json", str(tmp_path / "f.json"), "--plot", str(tmp_path))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "frame-mAP@0.5: 1.0000"
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["mAP"] == 1.0 and doc["per_class"] == {"run": 1.0, "jump": None}
    assert (tmp_path / "frame_pr.png").read_bytes()[:8] == PNG_MAGIC


def test_eval_frame_unknown_class(tmp_path, capsys):
    classes, gt, det = _ucf_files(tmp_path)
    det.write_text(det.read_text() + "v,3,swim,0.5,0,0,9,9\n")
    code, _, err = _run(capsys, "eval-frame", "--classes", str(classes), "--gt", str(gt), "--pred", str(det))
    _one_error_line(code, err, "det.csv:41:", "unknown class 'swim'")


def test_eval_video_outputs_and_tube_round_trip(tmp_path, capsys):
    classes, gt, det = _ucf_files(tmp_path)
    code, out, err = _run(capsys, "eval-video", "--classes", str(classes), "--gt", str(gt), "--pred", str(det),
                          "--tubes-out", str(tmp_path / "tubes.csv"), "--json", str(tmp_path / "v.json"),
                          "--plot", str(tmp_path))
    assert code == 0, err
    last = out.strip().splitlines()[-4:]
    assert last == ["video-mAP@0.2: 1.0000", "video-mAP@0.5: 1.0000", "video-mAP@0.75: 1.0000", "video-mAP@0.5:0.95: 1.0000"]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["mAP"] == 1.0 and doc["video_mAP"]["0.5:0.95"] == 1.0 and doc["per_class"]["jump"] is None
    assert (tmp_path / "video_pr.png").read_bytes()[:8] == PNG_MAGIC
    # Linked tubes written with --tubes-out evaluate the same through --pred-tubes.
    code, out2, err = _run(capsys, "eval-video", "--classes", str(classes), "--gt", str(gt),
                           "--pred-tubes", str(tmp_path / "tubes.csv"))
    assert code == 0, err
    assert out2.strip().splitlines()[-4:] == last


def test_eval_video_needs_tube_ids(tmp_path, capsys):
    classes, gt, det = _ucf_files(tmp_path)
    gt.write_text("v,1,run,0,0,9,9\n")
    code, _, err = _run(capsys, "eval-video", "--classes", str(classes), "--gt", str(gt), "--pred", str(det))
    _one_error_line(code, err, "gt.csv:1:", "expected 8 columns")


@pytest.mark.parametrize("verb", ["eval-ava", "eval-frame", "eval-video"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0 and "--json" in capsys.readouterr().out


def test_eval_verbs_do_not_import_torch(tmp_path):
    """``bmvit eval-ava`` (and the other file evaluators) start without importing torch."""
    import subprocess
    import sys

    gt, pred, labels = _ava_files(tmp_path)
    (tmp_path / "ucf").mkdir()
    classes, fgt, fdet = _ucf_files(tmp_path / "ucf")
    code = (
        "import sys\nfrom bmvit.cli.main import main\n"
        f"assert main(['eval-ava', '--gt', {str(gt)!r}, '--pred', {str(pred)!r}, '--labelmap', {str(labels)!r}]) == 0\n"
        f"assert main(['eval-frame', '--classes', {str(classes)!r}, '--gt', {str(fgt)!r}, '--pred', {str(fdet)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "frame-mAP@0.5: 1.0000"
