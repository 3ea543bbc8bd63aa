"""Fuzz: ACT ground-truth pickles through the restricted unpickler (tests/fuzz/invariant.py).

Byte-level damage to a valid pickle, and structural damage (a key dropped, any value replaced by
a wrong type, NaN/inf/huge/negative numbers, wrong array shapes). ``read_act_pkl`` either returns
annotations whose every tube lies inside its video (frames in 1..nframes, finite boxes inside the
frame, x1 < x2, y1 < y2) or raises a BmvitError naming the file.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
from hypothesis import strategies as st

from bmvit.data.formats.act import read_act_pkl
from tests.data_fixtures import act_annotations
from tests.fuzz.invariant import expect_ok_or_named_error, mutated_bytes, run_cli

ODD_VALUES = [None, "x", -1, 0, 10**30, float("nan"), float("inf"), [], {}, (1,), [[1, 2]], {"a": 1}, b"\xff",
              np.zeros((0, 5)), np.zeros((3, 4)), np.full((2, 5), np.nan), np.array(["a", "b"]), np.zeros((2, 5, 1)),
              np.array([[1, 5, 5, 2, 2]], np.float32), np.array([[1e9, 0, 0, 1, 1]]), np.array([[2.5, 0, 0, 9, 9]]),
              np.array([[3, 0, 0, 9, 9], [2, 0, 0, 9, 9]]), -5.5, True, np.int64(7), np.float32(3.0), (48, 64, 3)]


def _nodes(obj, path=()):
    """Every (path, value) reachable through dicts / lists / tuples (arrays are leaves)."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _set(obj, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        obj = list(obj)
    obj[head] = _set(obj[head], rest, value)
    return obj


@st.composite
def damaged_annotations(draw):
    ann = act_annotations()
    for _ in range(draw(st.integers(1, 3))):
        nodes = list(_nodes(ann))
        path, _ = draw(st.sampled_from(nodes))
        op = draw(st.sampled_from(["replace", "replace", "delete"]))
        if op == "delete" and path and isinstance(dict(_nodes(ann))[path[:-1]], (dict, list)):
            parent = dict(_nodes(ann))[path[:-1]]
            del parent[path[-1]]
        else:
            ann = _set(ann, path, copy.deepcopy(draw(st.sampled_from(ODD_VALUES))))  # no shared objects
    return ann


def _check(ann) -> None:
    assert ann.labels
    for v, tubes in ann.tubes.items():
        H, W = ann.resolution[v]
        for t in tubes:
            assert 0 <= t.label < len(ann.labels)
            assert t.frames.shape == (len(t.boxes),) and t.boxes.shape[1] == 4
            assert (t.frames >= 1).all() and (t.frames <= ann.nframes[v]).all() and (np.diff(t.frames) > 0).all()
            assert np.isfinite(t.boxes).all()
            assert (t.boxes[:, 0] < t.boxes[:, 2]).all() and (t.boxes[:, 1] < t.boxes[:, 3]).all()
            assert (t.boxes >= 0).all() and (t.boxes[:, [0, 2]] <= W).all() and (t.boxes[:, [1, 3]] <= H).all()
    for s in range(1, ann.num_splits + 1):
        for train in (True, False):
            assert set(ann.split_videos(s, train)) <= set(ann.tubes)


def test_fuzz_act_pickle_bytes(fuzz, tmp_path):
    path = tmp_path / "GT.pkl"
    valid = pickle.dumps(act_annotations(), protocol=2)

    def check(data):
        path.write_bytes(data)
        got, _ = expect_ok_or_named_error(lambda: read_act_pkl(path), [path])
        if got is not None:
            _check(got)

    fuzz.run(mutated_bytes(valid) | mutated_bytes(pickle.dumps(act_annotations(), protocol=4)), check,
             "ACT pickle (bytes)", 60)


def test_fuzz_act_pickle_structure(fuzz, tmp_path):
    path = tmp_path / "GT.pkl"

    def check(args):
        ann, on_error = args
        path.write_bytes(pickle.dumps(ann, protocol=2))
        got, _ = expect_ok_or_named_error(lambda: read_act_pkl(path, on_error=on_error), [path])
        if got is not None:
            _check(got)

    fuzz.run(st.tuples(damaged_annotations(), st.sampled_from(["error", "skip"])), check, "ACT pickle (structure)", 80)


def test_fuzz_prepare_act_gt_cli(fuzz, tmp_path):
    """``bmvit prepare act-gt`` on damaged pickles."""
    path = tmp_path / "JHMDB-GT.pkl"

    def check(ann):
        path.write_bytes(pickle.dumps(ann, protocol=2))
        run_cli(["prepare", "act-gt", "--pkl", path, "--out", tmp_path / "out"], [path])

    fuzz.run(damaged_annotations(), check, "bmvit prepare act-gt (CLI)", 20)
