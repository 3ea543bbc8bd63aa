"""Fuzz: AVA CSVs (annotations, detections, exclusions) and the label-map .pbtxt (tests/fuzz/invariant.py).

Readers: ``read_rows`` (evaluation, detections), ``read_rows_fast`` (must equal ``read_rows``),
``read_checked_rows`` (training; must agree with ``read_rows`` on what it keeps),
``read_exclusions``, ``read_label_map``; and ``bmvit eval-ava`` on the same files.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from bmvit.data.formats.ava_checks import read_checked_rows
from bmvit.data.formats.ava import read_exclusions, read_label_map, read_rows
from bmvit.evaluation.ava_csv_fast import read_rows_fast
from tests.fuzz.invariant import expect_ok_or_named_error, mutated_bytes, mutated_csv, run_cli

GT = [["v1", "0902", "0.100", "0.200", "0.500", "0.900", "1", "0"],
      ["v1", "0902", "0.100", "0.200", "0.500", "0.900", "3", "0"],
      ["v1", "0903", "0.300", "0.100", "0.700", "0.800", "2", "1"],
      ["v2", "0902", "0.000", "0.000", "1.000", "1.000", "2", "0"]]
DET = [r[:7] + [s] for r, s in zip(GT, ["0.9", "0.25", "0.6", "0.01"])]
EXCL = [["v1", "0904"], ["v2", "0903"]]
LABEL_MAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "walk"\n  id: 2\n}\nitem {\n  name: "sit"\n  id: 3\n}\n'


def _same_rows(a, b) -> None:
    a, b = (x.to_rows() if hasattr(x, "to_rows") else x for x in (a, b))  # the fast reader's coded rows
    assert a.video_ids == b.video_ids
    for x, y in ((a.timestamps, b.timestamps), (a.boxes, b.boxes), (a.actions, b.actions), (a.person_or_score, b.person_or_score)):
        np.testing.assert_array_equal(x, y)


def _check_rows(rows, data: bytes) -> None:
    R = len(rows)
    assert rows.timestamps.shape == (R,) and rows.boxes.shape == (R, 4) and rows.actions.shape == (R,)
    assert np.isfinite(rows.boxes).all() and np.isfinite(rows.person_or_score).all()
    assert R <= data.count(b"\n") + data.count(b"\r") + 1


def test_fuzz_annotation_and_detection_csv(fuzz, tmp_path):
    path = tmp_path / "rows.csv"

    def check(args):
        data, table = args
        path.write_bytes(data)
        rows, err = expect_ok_or_named_error(lambda: read_rows(path), [path])
        fast, err_fast = expect_ok_or_named_error(lambda: read_rows_fast(path), [path])
        assert (err is None) == (err_fast is None), (err, err_fast)
        if rows is not None:
            _check_rows(rows, data)
            _same_rows(rows, fast)
        checked, err_c = expect_ok_or_named_error(lambda: read_checked_rows(path, [1, 2, 3]), [path])
        if checked is not None:
            kept, lines = checked
            assert rows is not None, "a file the training reader accepts must be a valid AVA CSV"
            assert len(kept) == len(rows) and len(lines) == len(kept)
            _same_rows(kept, rows)
            assert ((kept.boxes >= 0) & (kept.boxes <= 1)).all()
            assert (kept.boxes[:, 0] < kept.boxes[:, 2]).all() and (kept.boxes[:, 1] < kept.boxes[:, 3]).all()
            assert set(kept.actions.tolist()) <= {1, 2, 3}

    table = st.sampled_from([GT, DET])
    fuzz.run(table.flatmap(lambda t: st.tuples(mutated_csv(t), st.just(t))), check, "AVA CSV (gt/det readers)", 60)


def test_fuzz_skip_policy_never_raises_on_rows(fuzz, tmp_path):
    """Under on_error=skip a bad row is skipped, never an exception (only an unreadable file is)."""
    path = tmp_path / "rows.csv"

    def check(data):
        path.write_bytes(data)
        got, err = expect_ok_or_named_error(lambda: read_checked_rows(path, [1, 2, 3], on_error="skip"), [path])
        if err is not None:
            assert "UTF-8" in str(err) or "CSV row" in str(err), err
        else:
            kept, _ = got
            assert np.isfinite(kept.boxes).all()

    fuzz.run(mutated_csv(GT), check, "AVA CSV (on_error=skip)", 25)


def test_fuzz_exclusions_csv(fuzz, tmp_path):
    path = tmp_path / "excl.csv"

    def check(data):
        path.write_bytes(data)
        keys, _ = expect_ok_or_named_error(lambda: read_exclusions(path), [path])
        if keys is not None:
            assert all(isinstance(k, str) and "," in k for k in keys)

    fuzz.run(mutated_csv(EXCL), check, "AVA exclusions CSV", 30)


def test_fuzz_label_map(fuzz, tmp_path):
    path = tmp_path / "labels.pbtxt"

    def check(data):
        path.write_bytes(data)
        labels, _ = expect_ok_or_named_error(lambda: read_label_map(path), [path])
        if labels is not None:
            assert labels and all(isinstance(k, int) and isinstance(v, str) for k, v in labels.items())

    fuzz.run(mutated_bytes(LABEL_MAP.encode()), check, "label map .pbtxt", 40)


def test_fuzz_eval_ava_cli(fuzz, tmp_path):
    """``bmvit eval-ava`` on mutated ground truth, detections, label map and exclusions."""
    files = {"gt": (tmp_path / "gt.csv", GT), "pred": (tmp_path / "det.csv", DET), "excl": (tmp_path / "excl.csv", EXCL)}
    labelmap = tmp_path / "labels.pbtxt"

    def check(args):
        which, data = args
        for name, (p, rows) in files.items():
            p.write_text("\n".join(",".join(r) for r in rows) + "\n")
        labelmap.write_text(LABEL_MAP)
        target = labelmap if which == "labelmap" else files[which][0]
        target.write_bytes(data)
        argv = ["eval-ava", "--gt", files["gt"][0], "--pred", files["pred"][0], "--labelmap", labelmap,
                "--exclusions", files["excl"][0]]
        rc, out, _ = run_cli(argv, [target])
        if rc == 0:
            assert "mAP" in out

    strategy = st.one_of(
        st.tuples(st.just("gt"), mutated_csv(GT)), st.tuples(st.just("pred"), mutated_csv(DET)),
        st.tuples(st.just("excl"), mutated_csv(EXCL)), st.tuples(st.just("labelmap"), mutated_bytes(LABEL_MAP.encode())))
    fuzz.run(strategy, check, "bmvit eval-ava (CLI)", 30)
