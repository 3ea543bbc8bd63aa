import numpy as np
import pytest
import torch

from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.data.formats.ava import read_label_map, read_rows, write_label_map
from bmvit.errors import DataError


def _cfg(root, **kw):
    over = [f"data.root={root}", "data.num_frames=8", "data.stride=4", "data.size=48"] + [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, over)


def test_clip_and_targets(small_synth):
    ds = make_dataset(_cfg(small_synth), "train")
    clip, target = ds[0]
    assert clip.shape == (3, 8, 48, 48) and clip.dtype == torch.uint8  # normalized on the device
    n = len(target["boxes"])
    assert target["labels"].shape == (n, 6) and target["boxes"].shape == (n, 4)
    assert target["orig_size"] == (72, 96)
    # rows of one person are merged: each box appears once with a multi-hot vector
    rows = read_rows(small_synth / "annotations" / "train.csv")
    kf = ds.keyframes[0]
    sel = [i for i, (v, t) in enumerate(zip(rows.video_ids, rows.timestamps)) if v == kf.video_id and t == kf.timestamp]
    assert len(kf.boxes) == len({rows.person_or_score[i] for i in sel})
    assert kf.labels.sum() == len(sel)


def test_frame_indices_centred_and_clamped(small_synth):
    ds = make_dataset(_cfg(small_synth), "train")
    vid = ds.keyframes[0].video_id
    idx = ds.frame_indices(vid, 901)  # key frame = file 31
    assert idx[4] == 31 and list(np.diff(idx)) == [4] * 7
    assert ds.frame_indices(vid, 900)[0] == 1  # clamped at the start
    n = ds.num_video_frames(vid)
    assert ds.frame_indices(vid, 903)[-1] <= n


def test_hflip_swaps_direction_labels(small_synth):
    cfg = _cfg(small_synth, **{"data.hflip_prob": 1.0, "data.hflip_swap": "[[1,2]]"})
    flipped = make_dataset(cfg, "train", augment=True)
    plain = make_dataset(_cfg(small_synth), "train")
    for i in range(len(plain)):
        if plain.keyframes[i].labels[:, :2].sum() > 0:
            break
    c0, t0 = plain[i]
    c1, t1 = flipped[i]
    assert torch.equal(c1, c0.flip(-1))
    assert torch.equal(t1["labels"][:, 0], t0["labels"][:, 1]) and torch.equal(t1["labels"][:, 1], t0["labels"][:, 0])
    assert torch.allclose(t1["boxes"][:, 0], 1 - t0["boxes"][:, 0], atol=1e-6)


def test_missing_frames_folder(tmp_path, small_synth):
    cfg = _cfg(small_synth, **{"data.frames_dir": "nope"})
    with pytest.raises(DataError, match="nope: frames folder not found"):
        make_dataset(cfg, "train")


def test_malformed_csv_row_names_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("v,0902,0.1,0.1,0.5,0.5,1,0\nv,0903,0.1,abc,0.5,0.5,1,0\n")
    with pytest.raises(DataError, match=r"bad.csv:2: column 'y1' must be a number"):
        read_rows(p)
    p.write_text("v,0902,0.1,0.1,0.5\n")
    with pytest.raises(DataError, match=r"bad.csv:1: expected 7 or 8"):
        read_rows(p)


def test_label_map_errors(tmp_path):
    p = tmp_path / "lm.pbtxt"
    p.write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n}\n')
    with pytest.raises(DataError, match=r"lm.pbtxt:5: label-map item needs"):
        read_label_map(p)


def test_label_map_ava_v22_layout_and_tricky_names(tmp_path):
    """ava_action_list_v2.2.pbtxt writes `label { name label_id label_type }`; names may hold quotes,
    braces and '#'; comments may hold braces."""
    p = tmp_path / "ava_action_list_v2.2.pbtxt"
    p.write_text('label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
                 'label {\n  name: "crawl"\n  label_id: 2\n  label_type: PERSON_MOVEMENT\n}\n')
    assert read_label_map(p) == {1: "bend/bow (at the waist)", 2: "crawl"}
    p.write_text("# labels { mine }\nitem {\n  name: \"don't move\"  # it's a comment\n  id: 1\n}\n"
                 "item { id: 2, name: 'a {b} #c' }\n")
    assert read_label_map(p) == {1: "don't move", 2: "a {b} #c"}
    write_label_map(p, {3: 'say "hi"', 4: "back\\slash"})
    assert read_label_map(p) == {3: 'say "hi"', 4: "back\\slash"}
    p.write_text('item {\n  name: "a"\n  id: 1\n')
    with pytest.raises(DataError, match=r"pbtxt:3: label map ends early"):
        read_label_map(p)


def test_csv_header_line_is_named_as_such(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("video_id,timestamp,x1,y1,x2,y2,action_id,person_id\nv,0902,0.1,0.1,0.5,0.5,1,0\n")
    with pytest.raises(DataError, match=r"gt.csv:1: column 'timestamp' .* \(AVA CSVs have no header line"):
        read_rows(p)
    p.write_text("v,0902,0.1,0.1,0.5,0.5,1,0\nv,x,0.1,0.1,0.5,0.5,1,0\n")
    with pytest.raises(DataError, match=r"gt.csv:2: column 'timestamp' must be an integer, got 'x'$"):
        read_rows(p)
