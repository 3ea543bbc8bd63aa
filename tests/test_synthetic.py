import hashlib
from dataclasses import replace

import numpy as np

from bmvit.data.formats.ava import read_label_map, read_rows
from bmvit.data.synthetic import ACTIONS, SynthSpec, _make_people, generate
from tests.conftest import SMALL

TINY = replace(SMALL, train_videos=3, val_videos=1, seconds=3)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted((root / "frames").rglob("*.jpg"))[::7]:
        h.update(p.read_bytes())
    for p in sorted((root / "annotations").iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    a = generate(tmp_path / "a", TINY, workers=1)
    b = generate(tmp_path / "b", TINY, workers=2)  # worker count must not matter
    c = generate(tmp_path / "c", replace(TINY, seed=TINY.seed + 10), workers=1)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_layout_and_labels(small_synth):
    labels = read_label_map(small_synth / "annotations" / "label_map.pbtxt")
    assert labels == ACTIONS and len(labels) >= 5
    rows = read_rows(small_synth / "annotations" / "train.csv")
    assert len(rows) > 0
    vid, ts = rows.video_ids[0], int(rows.timestamps[0])
    frame = (ts - 900) * 30 + 1
    assert (small_synth / "frames" / vid / f"{vid}_{frame:06d}.jpg").is_file()
    assert (rows.boxes[:, :2] < rows.boxes[:, 2:]).all() and (rows.boxes >= 0).all() and (rows.boxes <= 1).all()
    # multi-label: some (video, timestamp, person) has two or more actions
    keys = [(v, t, p) for v, t, p in zip(rows.video_ids, rows.timestamps, rows.person_or_score)]
    _, counts = np.unique(np.array([f"{k}" for k in keys]), return_counts=True)
    assert counts.max() >= 2
    # val comes from a different seed: no identical video content ids shared with train
    val = read_rows(small_synth / "annotations" / "val.csv")
    assert not set(val.video_ids) & set(rows.video_ids)


def test_population_requirements():
    spec = SynthSpec()
    rng = np.random.default_rng(0)
    actors, distractors, heights, empty_clips = 0, 0, [], 0
    for _ in range(300):
        people = _make_people(rng, spec)
        n_act = sum(p.actor for p in people)
        actors += n_act
        empty_clips += n_act == 0
        distractors += sum(not p.actor for p in people)
        heights += [p.height / spec.height for p in people]
        assert n_act <= 4
        for p in people:
            if not p.actor:
                assert all(not s.labels() for s in p.segments)  # distractors never act
    assert distractors > 100 and empty_clips > 0
    assert min(heights) < 0.3 and max(heights) > 0.55  # varied scales


def test_a_folder_of_someone_elses_frames_is_never_deleted(tmp_path):
    import pytest

    from bmvit.data.synthetic import INCOMPLETE
    from bmvit.errors import OutputError

    mine = tmp_path / "ava"
    (mine / "frames" / "v1").mkdir(parents=True)
    (mine / "frames" / "v1" / "v1_000001.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match=r"ava: holds frames/ that bmvit synth did not write"):
        generate(mine, TINY, workers=1)
    assert (mine / "frames" / "v1" / "v1_000001.jpg").read_bytes() == b"precious"
    # a generation that was killed (its marker left behind) is redone, and the marker goes with its end
    killed = tmp_path / "killed"
    (killed / "frames" / "syn_train_0000").mkdir(parents=True)
    (killed / INCOMPLETE).touch()
    generate(killed, TINY, workers=1)
    assert (killed / "manifest.json").is_file() and not (killed / INCOMPLETE).exists()
    assert _digest(killed) == _digest(generate(tmp_path / "fresh", TINY, workers=1))


def test_synth_warns_of_a_split_without_annotations(tmp_path, capsys):
    from bmvit.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--videos", "8", "--val-videos", "2", "--seconds", "4",
                 "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "val.csv: the val split has no annotated key frame (2 video(s) of 4 s)" in err
