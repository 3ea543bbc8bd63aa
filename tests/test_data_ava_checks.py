"""AVA layout reader: exact samples, key-frame arithmetic on the pixels, and every bad input named."""

import numpy as np
import pytest
import torch
from data_fixtures import decode_frame_numbers, unnormalize, write_ava

from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.errors import DataError


@pytest.fixture(scope="module")
def ava_root(tmp_path_factory):
    return write_ava(tmp_path_factory.mktemp("ava"))


def _cfg(root, **kw):
    over = [f"data.root={root}", "data.train_csv=annotations/train.csv", "data.val_csv=annotations/val.csv",
            "data.label_map=annotations/label_map.pbtxt", "data.num_frames=8", "data.stride=4",
            "data.size=32"] + [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, over)


def test_samples_merged_labels_and_frame_indices(ava_root):
    ds = make_dataset(_cfg(ava_root), "train")
    assert [(k.video_id, k.timestamp) for k in ds.keyframes] == [("vidA", 901), ("vidA", 902), ("vidB", 900), ("vidB", 902)]
    kf = ds.keyframes[0]  # two people; person 0 has actions 1 and 7 -> one box, multi-hot over ids (1, 3, 7)
    assert kf.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
    np.testing.assert_allclose(kf.boxes, [[0.1, 0.2, 0.4, 0.9], [0.5, 0.1, 0.9, 0.8]], atol=1e-6)
    # key frame of second s is file (s - 900) * 30 + 1; slots k read key + (k - 4) * 4, clamped to the video
    for i, n in [(0, 100), (1, 100), (2, 70), (3, 70)]:
        k = ds.keyframes[i]
        want = np.clip((k.timestamp - 900) * 30 + 1 + (np.arange(8) - 4) * 4, 1, n)
        assert list(ds.frame_indices(k.video_id, k.timestamp)) == list(want)
        clip, target = ds[i]
        assert list(decode_frame_numbers(unnormalize(clip))) == list(want)
        assert target["orig_size"] == (48, 64) and target["timestamp"] == k.timestamp


@pytest.mark.parametrize("row, message", [
    ("vidA,0901,0.1,0.2,0.4", r"train\.csv:2: expected 7 or 8 comma-separated columns"),
    ("vidA,0901,0.1,zero,0.4,0.9,1,0", r"train\.csv:2: column 'y1' must be a number, got 'zero'"),
    ("vidA,09x1,0.1,0.2,0.4,0.9,1,0", r"train\.csv:2: column 'timestamp' must be an integer"),
    ("vidA,0901,0.1,0.2,1.4,0.9,1,0", r"train\.csv:2: column 'x2' = 1.4 is outside \[0, 1\]"),
    ("vidA,0901,-0.1,0.2,0.4,0.9,1,0", r"train\.csv:2: column 'x1' = -0.1 is outside \[0, 1\]"),
    ("vidA,0901,0.5,0.2,0.4,0.9,1,0", r"train\.csv:2: empty box: need x1 < x2 and y1 < y2"),
    ("vidA,0901,0.1,0.9,0.4,0.9,1,0", r"train\.csv:2: empty box"),
    ("vidA,0901,0.1,0.2,0.4,0.9,5,0", r"train\.csv:2: action id 5 is not in the label map"),
    ("vidA,0901,0.1,0.2,0.4,nan,1,0", r"train\.csv:2: column 'y2' must be finite"),
    ("ghost,0901,0.1,0.2,0.4,0.9,1,0", r"train\.csv:2: video 'ghost' is listed but absent on disk \(.*frames/ghost not found\)"),
])
def test_each_bad_row_is_one_named_error_or_a_counted_skip(tmp_path, ava_root, row, message, capsys):
    root = tmp_path / "r"
    (root / "annotations").mkdir(parents=True)
    (root / "frames").symlink_to(ava_root / "frames")
    (root / "annotations" / "label_map.pbtxt").write_text((ava_root / "annotations" / "label_map.pbtxt").read_text())
    good = "vidA,0901,0.1,0.2,0.4,0.9,1,0"
    (root / "annotations" / "train.csv").write_text(f"{good}\n{row}\n{good.replace('0901', '0902')}\n")
    with pytest.raises(DataError, match=message):
        make_dataset(_cfg(root), "train")
    capsys.readouterr()
    ds = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "train")
    assert [(k.video_id, k.timestamp) for k in ds.keyframes] == [("vidA", 901), ("vidA", 902)]
    assert "1 bad input(s)" in capsys.readouterr().err


def test_unknown_actions_ignored_on_request_and_keyframe_range(tmp_path, ava_root, capsys):
    root = tmp_path / "r"
    (root / "annotations").mkdir(parents=True)
    (root / "frames").symlink_to(ava_root / "frames")
    (root / "annotations" / "label_map.pbtxt").write_text((ava_root / "annotations" / "label_map.pbtxt").read_text())
    rows = ["vidA,0901,0.1,0.2,0.4,0.9,1,0", "vidA,0901,0.1,0.2,0.4,0.9,2,0", "vidA,0902,0.1,0.2,0.4,0.9,2,1",
            "vidA,0902,0.1,0.2,0.4,0.9,80,1"]
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    ds = make_dataset(_cfg(root, **{"data.unknown_actions": "ignore"}), "train")
    assert [(k.video_id, k.timestamp) for k in ds.keyframes] == [("vidA", 901)]
    assert "ignored 3 row(s) whose action id is not in the label map" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"train\.csv:1: timestamp 901 outside the key-frame range 902\.\.1798"):
        make_dataset(_cfg(root, **{"data.keyframe_range": "[902,1798]"}), "train")


def test_missing_and_corrupt_frames(tmp_path):
    root = write_ava(tmp_path / "d", videos={"vidA": 100}, rows=["vidA,0901,0.1,0.2,0.4,0.9,1,0",
                                                                 "vidA,0902,0.1,0.2,0.4,0.9,1,0"])
    frame = root / "frames" / "vidA" / "vidA_000023.jpg"  # read by the clip of 901 (key frame 31)
    frame.unlink()
    ds = make_dataset(_cfg(root), "train")
    with pytest.raises(DataError, match=r"vidA_000023\.jpg: frame not found"):
        ds[0]
    frame.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"vidA_000023\.jpg: cannot decode frame"):
        ds[0]
    ds = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "train", augment=True)
    clip, t = ds[(0, 1)]
    assert t["timestamp"] == 902 and ds.take_count() == 1  # the next sample stood in
    val = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "val")
    clip, t = val[0]
    assert t["skipped"] and t["timestamp"] == 901 and len(t["boxes"]) == 1 and bool((clip == 115).all())  # mean colour
