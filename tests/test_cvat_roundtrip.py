"""Pre-annotations round trip: `bmvit detect --export cvat` -> cvat_annotations.xml -> `bmvit prepare
import-cvat` gives back the same boxes (<= 1 px) and actions, track gaps included."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from inference_fixtures import make_checkpoint, write_video

from bmvit.cli.main import main as bmvit
from bmvit.data.formats.ava import read_label_map, read_rows
from bmvit.data.formats.cvat import read_cvat
from bmvit.inference.cvat_export import detections_to_cvat, export_cvat
from bmvit.inference.detector import Action, Actor, KeyFrameResult, VideoResult
from bmvit.inference.video_source import VideoInfo

W, H = 80, 60
NAMES = {1: "walk", 2: "wave", 3: "jump"}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("rt_video") / "clip.mp4", n=40, fps=10, width=W, height=H)


def imported(root, video_id="clip"):
    """{(second, person id): (box in pixels (4,), {action names})} of the imported train split."""
    names = read_label_map(root / "annotations" / "label_map.pbtxt")
    r = read_rows(root / "annotations" / "train.csv")
    out: dict = defaultdict(lambda: [None, set()])
    for v, t, b, a, p in zip(r.video_ids, r.timestamps, r.boxes, r.actions, r.person_or_score):
        assert v == video_id
        entry = out[(int(t), int(p))]
        entry[0] = b * [W, H, W, H]
        entry[1].add(names[int(a)])
    return {k: (v[0], v[1]) for k, v in out.items()}


def _actor(box_norm, scores, track):
    box = [float(v) for v in np.asarray(box_norm) * [W, H, W, H]]
    return Actor(box, list(box_norm), 0.9, [Action(k, NAMES[k], s) for k, s in zip(NAMES, scores)], track, 0, list(scores))


def test_export_then_import_same_boxes_and_actions(tmp_path, video):
    # track 0 at seconds 0, 1, 3 (a gap at 2); track 4 at second 2 only; an untracked actor at second 3
    a = _actor([0.1012, 0.2034, 0.4056, 0.9078], [0.9, 0.05, 0.6], 0)
    keys = [KeyFrameResult(0, 0.0, [a]),
            KeyFrameResult(10, 1.0, [_actor([0.2, 0.2, 0.5, 0.9], [0.1, 0.3, 0.2], 0)]),  # none >= 0.5: the best
            KeyFrameResult(20, 2.0, [_actor([0.6, 0.1, 0.95, 0.7], [0.7, 0.8, 0.0], 4)]),
            KeyFrameResult(30, 3.0, [_actor([0.15, 0.2, 0.45, 0.9], [0.0, 0.0, 0.9], 0),
                                     _actor([0.7, 0.0, 1.0, 0.5], [0.5, 0.1, 0.1], -1)])]
    result = VideoResult(VideoInfo(str(video), "file", 10.0, W, H, 40), keys, NAMES, {"keyframes_per_second": 1.0})
    task = detections_to_cvat(result, threshold=0.5)
    track0 = next(t for t in task.tracks if t.id == 0)
    assert [(s.frame, s.outside) for s in track0.shapes] == [(0, False), (10, False), (20, True), (30, False)]
    assert {t.id for t in task.tracks} == {0, 4, 5}  # the untracked actor gets a fresh id
    xml = export_cvat(tmp_path / "det", result, threshold=0.5)
    assert xml.name == "cvat_annotations.xml" and read_cvat(xml).labels["person"][0].input_type == "checkbox"
    assert bmvit(["prepare", "import-cvat", str(xml), "--video", str(video), "--root", str(tmp_path / "root")]) == 0
    got = imported(tmp_path / "root")
    want = {(0, 0): ({"walk", "jump"}, keys[0].actors[0]), (1, 0): ({"wave"}, keys[1].actors[0]),
            (2, 4): ({"walk", "wave"}, keys[2].actors[0]), (3, 0): ({"jump"}, keys[3].actors[0]),
            (3, 5): ({"walk"}, keys[3].actors[1])}
    assert set(got) == set(want)  # track 0 is absent at second 2 (outside), track 4 only at second 2
    for k, (acts, actor) in want.items():
        assert got[k][1] == acts, k
        assert np.abs(got[k][0] - np.asarray(actor.box)).max() <= 1.0, k
    assert read_label_map(tmp_path / "root" / "annotations" / "label_map.pbtxt") == NAMES  # same ids on a fresh root


def test_detect_export_cvat_round_trip(tmp_path, video, capsys):
    ckpt = make_checkpoint(tmp_path / "model.safetensors")
    out = tmp_path / "det"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress",
                  "--threshold", "0.5", "--export", "cvat"]) == 0
    assert "CVAT pre-annotations -> " in capsys.readouterr().out
    doc = json.loads((out / "detections.json").read_text())
    actors = [(kf, a) for kf in doc["keyframes"] for a in kf["actors"]]
    assert actors, "the random checkpoint should detect someone at θ=0.5"
    root = tmp_path / "root"
    assert bmvit(["prepare", "import-cvat", str(out / "cvat_annotations.xml"), "--video", str(video),
                  "--root", str(root)]) == 0
    got = imported(root)
    labels = doc["labels"]
    for kf, a in actors:
        box, acts = got[(round(kf["time"]), a["track_id"])]
        assert np.abs(box - np.asarray(a["box"])).max() <= 1.0
        # the JSON keeps the top-k; the best action is always checked, the others when >= θ
        assert a["actions"][0]["name"] in acts
        assert {x["name"] for x in a["actions"] if x["score"] >= 0.5} <= acts
    assert len(got) == len(actors)
    assert set(read_label_map(root / "annotations" / "label_map.pbtxt").values()) == set(labels.values())
    # streams cannot be exported (no silent no-op)
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "s"), "--stream",
                  "--no-video", "--no-progress", "--export", "cvat"]) == 2
    assert "--export cvat works on files" in capsys.readouterr().err


def test_export_of_a_hairline_box_reads_back(tmp_path, video):
    """A detection thinner than CVAT's 2 decimals must not become xtl == xbr, which the reader refuses."""
    thin = Actor([10.0, 10.0, 10.003, 20.0], [0.125, 0.167, 0.125, 0.333], 0.9,
                 [Action(1, "walk", 0.9)], 0, 0, [0.9, 0.1, 0.1])
    result = VideoResult(VideoInfo(str(video), "file", 10.0, W, H, 40), [KeyFrameResult(0, 0.0, [thin])], NAMES,
                         {"keyframes_per_second": 1.0})
    task = read_cvat(export_cvat(tmp_path / "det", result, threshold=0.5))
    (x1, y1, x2, y2), = [s.box for s in task.tracks[0].shapes]
    assert x1 < x2 and abs(x1 - 10.0) < 0.01 and abs(x2 - 10.003) < 0.01 and (y1, y2) == (10.0, 20.0)
