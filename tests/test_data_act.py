"""UCF101-24 / JHMDB51-21 reader (ACT pkl + frame folders): sample lists, frame arithmetic, targets, errors."""

import pickle

import numpy as np
import pytest
import torch
from data_fixtures import (
    ACT_LABELS,
    H,
    W,
    act_annotations,
    decode_frame_numbers,
    unnormalize,
    write_act,
)

from bmvit.boxes import cxcywh_to_xyxy
from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.data.formats.act import read_act_pkl
from bmvit.errors import DataError

T, TAU = 8, 3


@pytest.fixture(scope="module")
def act_root(tmp_path_factory):
    return write_act(tmp_path_factory.mktemp("act"))


def _cfg(root, **kw):
    over = [f"data.root={root}", "data.format=act", "data.annotations=GT.pkl", "data.frames_dir=rgb-images",
            "data.frame_template={video}/{frame:05d}.png", f"data.num_frames={T}", f"data.stride={TAU}",
            "data.size=32"] + [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, over)


def test_sample_lists_train_and_test(act_root):
    train = make_dataset(_cfg(act_root), "train")
    got = [(kf.video_id, kf.timestamp) for kf in train.keyframes]
    # training: frames some tube covers, videos in split order
    want = [("Run/v_run_1", f) for f in range(5, 26)] + [("Jump/v_jump_1", f) for f in range(1, 21)]
    assert got == want
    test = make_dataset(_cfg(act_root), "val")
    assert [(kf.video_id, kf.timestamp) for kf in test.keyframes] == [("Run/v_run_2", f) for f in range(1, 13)]
    # key-frame step, and the other splits (JHMDB has three)
    step = make_dataset(_cfg(act_root, **{"data.keyframe_step": 4}), "train")
    assert [(kf.video_id, kf.timestamp) for kf in step.keyframes] == [(v, f) for v, f in want if (f - 1) % 4 == 0]
    s3 = make_dataset(_cfg(act_root, **{"data.split": 3}), "val")
    assert [kf.video_id for kf in s3.keyframes] == ["Run/v_run_1"] * 30 + ["Run/v_run_2"] * 12
    with pytest.raises(DataError, match=r"GT\.pkl: split 4 requested, the file has splits 1\.\.3"):
        make_dataset(_cfg(act_root, **{"data.split": 4}), "train")
    assert train.labels == {1: "Jump", 2: "Run"} and len(train) == len(want)


def test_key_frame_to_frame_indices(act_root):
    ds = make_dataset(_cfg(act_root), "train")
    for i, kf in enumerate(ds.keyframes):
        if kf.timestamp not in (1, 5, 13, 20, 25):
            continue
        n = 30 if kf.video_id == "Run/v_run_1" else 20
        want = np.clip(kf.timestamp + (np.arange(T) - T // 2) * TAU, 1, n)
        assert list(ds.frame_indices(kf.video_id, kf.timestamp)) == list(want)
        clip, target = ds[i]
        assert clip.shape == (3, T, 32, 32)
        assert list(decode_frame_numbers(unnormalize(clip))) == list(want)  # the pixels are those frames
        assert target["timestamp"] == kf.timestamp and target["orig_size"] == (H, W)


def test_boxes_labels_and_merged_tubes(act_root):
    ds = make_dataset(_cfg(act_root), "train")
    by_key = {(kf.video_id, kf.timestamp): i for i, kf in enumerate(ds.keyframes)}
    # Run/v_run_1 frame 16: two tubes (Run, then Jump), boxes normalized by W, H
    _, t = ds[by_key[("Run/v_run_1", 16)]]
    boxes = cxcywh_to_xyxy(t["boxes"]) * torch.tensor([W, H, W, H])
    order = torch.argsort(boxes[:, 0])
    torch.testing.assert_close(boxes[order], torch.tensor([[8.0, 8, 24, 40], [34, 10, 60, 44]]))
    assert t["labels"][order].tolist() == [[0, 1], [1, 0]]
    # Jump/v_jump_1 frames 1-3: a Jump tube and a Run tube with the same box -> one multi-hot box
    _, t = ds[by_key[("Jump/v_jump_1", 2)]]
    assert t["labels"].tolist() == [[1.0, 1.0]] and t["boxes"].shape == (1, 4)
    _, t = ds[by_key[("Jump/v_jump_1", 4)]]
    assert t["labels"].tolist() == [[1.0, 0.0]]
    # test split: frames without tubes are samples with no boxes
    test = make_dataset(_cfg(act_root), "val")
    _, t = test[0]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0, 2)


def test_white_box_under_target_box_with_flip(act_root):
    cfg = _cfg(act_root, **{"data.hflip_prob": 1.0, "data.size": 48})
    ds = make_dataset(cfg, "train", augment=True)
    i = next(k for k, kf in enumerate(ds.keyframes) if (kf.video_id, kf.timestamp) == ("Run/v_run_1", 10))
    clip, t = ds[(i, 123)]
    key = unnormalize(clip)[T // 2, :, :, 0]  # (48, 48) key frame after resize + flip
    x1, y1, x2, y2 = (cxcywh_to_xyxy(t["boxes"])[0] * 48).round().int().tolist()
    assert key[y1 + 1:y2 - 1, x1 + 1:x2 - 1].min() > 230  # inside the box: white
    white = key > 230
    assert white.sum() <= (x2 - x1 + 2) * (y2 - y1 + 2)  # and nothing white elsewhere
    assert x1 == round(48 * (1 - 24 / W))  # the box was mirrored


def test_jpeg_frames_default_template_and_paper_configs(tmp_path):
    root = write_act(tmp_path / "ucf", ext="jpg", pkl_name="UCF101v2-GT.pkl")
    cfg = load_config("configs/paper/ucf24/mvitv2s_16x256_out8x16.yaml", [f"data.root={root}", "data.size=32"])
    assert cfg.data.format == "act" and cfg.data.num_frames == 16 and cfg.data.stride == 4
    ds = make_dataset(cfg, "train", augment=True)
    clip, t = ds[(3, 7)]
    assert clip.shape == (3, 16, 32, 32) and t["labels"].shape[1] == len(ACT_LABELS)
    for s in (1, 2, 3):
        c = load_config(f"configs/paper/jhmdb/mvitv2s_16x256_out8x16_split{s}.yaml")
        assert c.data.split == s and c.data.annotations == "JHMDB-GT.pkl" and c.data.frame_template.endswith(".png")


# --- bad inputs: one DataError naming the file and key -------------------------------------------

def _bad(tmp_path, mutate, match, **kw):
    ann = act_annotations()
    mutate(ann)
    root = write_act(tmp_path / "bad", ann)
    with pytest.raises(DataError, match=match):
        make_dataset(_cfg(root, **kw), "train")
    return root


def test_bad_pickles_name_file_and_key(tmp_path):
    _bad(tmp_path, lambda a: a.pop("resolution"), r"GT\.pkl: missing key 'resolution'")
    _bad(tmp_path, lambda a: a["gttubes"]["Run/v_run_1"].update({5: []}),
         r"GT\.pkl: gttubes\['Run/v_run_1'\]\[5\]: class index 5 outside 'labels' \(0\.\.1\)")
    _bad(tmp_path, lambda a: a["gttubes"]["Jump/v_jump_1"][0][0].__setitem__((3, 0), 99),
         r"gttubes\['Jump/v_jump_1'\]\[0\]\[0\] row 3 \(frame 99\): frame 99 is not a frame number in 1\.\.20")
    _bad(tmp_path, lambda a: a["gttubes"]["Jump/v_jump_1"][0][0].__setitem__((2, 3), 10),
         r"gttubes\['Jump/v_jump_1'\]\[0\]\[0\] row 2 \(frame 3\): box .* is empty")
    _bad(tmp_path, lambda a: a["gttubes"]["Run/v_run_1"][1].__setitem__(0, np.zeros((4, 3))),
         r"gttubes\['Run/v_run_1'\]\[1\]\[0\]: expected a non-empty \(M, 5\) numeric array")


def test_video_in_split_but_not_in_pickle_tables(tmp_path):
    def drop(a):
        a["train_videos"][0].append("Run/v_ghost")
    _bad(tmp_path, drop, r"GT\.pkl: video 'Run/v_ghost' is in a split list but has no entry in 'nframes'")


def test_video_absent_on_disk_error_and_skip(tmp_path, capsys):
    root = write_act(tmp_path / "d")
    import shutil

    shutil.rmtree(root / "rgb-images" / "Jump" / "v_jump_1")
    with pytest.raises(DataError, match=r"GT\.pkl: video 'Jump/v_jump_1' \(train_videos\[0\]\) is absent on disk: "
                                        r".*rgb-images/Jump/v_jump_1 not found"):
        make_dataset(_cfg(root), "train")
    ds = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "train")
    assert {kf.video_id for kf in ds.keyframes} == {"Run/v_run_1"}
    assert "1 bad input(s)" in capsys.readouterr().err


def test_bad_tube_row_skipped_and_counted(tmp_path, capsys):
    ann = act_annotations()
    ann["gttubes"]["Jump/v_jump_1"][0][0][3, 0] = 99  # frame 4 -> 99: that row goes
    root = write_act(tmp_path / "s", ann)
    ds = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "train")
    assert ("Jump/v_jump_1", 4) not in {(kf.video_id, kf.timestamp) for kf in ds.keyframes}
    assert "1 bad tube row(s)/tube(s)" in capsys.readouterr().err


def test_frame_errors_at_read_time(tmp_path):
    root = write_act(tmp_path / "r")
    ds = make_dataset(_cfg(root), "train")
    first = ds.keyframes[0]  # Run/v_run_1, frame 5: reads frames 1..14
    (root / "rgb-images" / "Run" / "v_run_1" / "00002.png").unlink()
    with pytest.raises(DataError, match=r"rgb-images/Run/v_run_1/00002\.png: frame not found"):
        ds[0]
    (root / "rgb-images" / "Run" / "v_run_1" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"00002\.png: cannot decode frame"):
        ds[0]
    from PIL import Image

    Image.new("RGB", (W + 2, H)).save(root / "rgb-images" / "Run" / "v_run_1" / "00002.png")
    with pytest.raises(DataError, match=r"00002\.png: frame is 66x48 \(WxH\) but the annotations give 64x48"):
        ds[0]
    # skip policy: training substitutes the next sample, evaluation returns a blank flagged clip
    train = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "train", augment=True)
    clip, t = train[(0, 5)]
    assert (t["video_id"], t["timestamp"]) != (first.video_id, first.timestamp)
    assert train.take_count() >= 1 and train.take_count() == 0
    ann = act_annotations()
    ann["test_videos"][0] = ["Run/v_run_1"]
    with open(root / "GT.pkl", "wb") as f:
        pickle.dump(ann, f, protocol=2)
    val = make_dataset(_cfg(root, **{"data.on_error": "skip"}), "val")
    clip, t = val[1]  # frame 2 of Run/v_run_1: its clip reads the bad frame
    assert t.get("skipped") is True and t["timestamp"] == 2 and bool((clip == 115).all())  # mean colour
    assert val[0][1].get("skipped") is None  # frame 1's clip does not
    assert read_act_pkl(root / "GT.pkl").labels == ACT_LABELS


def test_in_training_evaluation_is_act_frame_map(act_root, tmp_path):
    """``data.format=act``: evaluate_split's metric is eval-frame's (ACT) frame-mAP on the pickle's boxes."""
    from bmvit.data.formats.act_export import write_act_gt
    from bmvit.data.formats.ava import AvaRows
    from bmvit.evaluation.evaluators import act_frame_map
    from bmvit.evaluation.frame_map import evaluate_frame_map_files

    ds = make_dataset(_cfg(act_root, **{"data.split": 3}), "val")  # two videos, both classes
    vids, ts, boxes, acts = [], [], [], []
    for kf in ds.keyframes:  # oracle: every GT box with its classes, score 1
        for b, lab in zip(kf.boxes, kf.labels):
            for k in np.flatnonzero(lab):
                vids.append(kf.video_id)
                ts.append(kf.timestamp)
                boxes.append(b)
                acts.append(ds.class_ids[k])
    oracle = AvaRows(vids, np.asarray(ts), np.asarray(boxes, np.float64), np.asarray(acts), np.ones(len(vids)))
    assert act_frame_map(ds, oracle).mean_ap == pytest.approx(1.0)
    # noisy detections: same number as eval-frame on the files `bmvit prepare act-gt` writes
    rng = np.random.default_rng(0)
    n = len(vids)
    noisy = AvaRows(vids + vids, np.r_[ts, ts], np.r_[np.clip(np.asarray(boxes) + rng.normal(0, 0.05, (n, 4)), 0, 1),
                                                       rng.uniform(0, 1, (n, 4)).cumsum(1).clip(0, 1)],
                    np.r_[acts, rng.integers(1, 3, n)], rng.uniform(0, 1, 2 * n))
    ours = act_frame_map(ds, noisy)
    paths = write_act_gt(ds.annotations, 3, tmp_path, "t")
    with open(tmp_path / "det.csv", "w") as f:
        for v, t, b, a, s in zip(noisy.video_ids, noisy.timestamps, noisy.boxes, noisy.actions, noisy.person_or_score):
            x1, y1, x2, y2 = b * np.array([W, H, W, H])
            f.write(f"{v},{t},{ACT_LABELS[a - 1]},{float(s)!r},{float(x1)!r},{float(y1)!r},{float(x2)!r},{float(y2)!r}\n")
    ref = evaluate_frame_map_files(paths["classes"], paths["tubes"], tmp_path / "det.csv")
    assert 0.05 < ours.mean_ap < 0.95
    assert ours.per_class_ap == pytest.approx(ref.per_class_ap, abs=1e-12)


def test_training_reports_skipped_samples_per_epoch_and_evaluates_with_act_rules(tmp_path):
    import json

    from bmvit.engine.train import train

    root = write_act(tmp_path / "act")
    (root / "rgb-images" / "Run" / "v_run_1" / "00007.png").write_bytes(b"not a png")
    over = {"data.on_error": "skip", "model.backbone": "mvit_tiny", "model.head_hidden": 16,
            "model.kv_stride": "[1,4,4]", "model.remove_last_pool": False,  # 2x2 cells: some overlap a GT box
            "train.out_dir": tmp_path / "run", "train.batch_size": 8,
            "train.epochs": 2, "train.threads": 1, "train.log_every": 100, "eval.threshold": 0.0}
    cfg = _cfg(root, **over)
    train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in records if "skipped_samples" in r]
    # frame 7 lies in the clips of many key frames of that video: some of them are drawn in each epoch
    assert [r["epoch"] for r in skipped] == [0, 1] and all(r["skipped_samples"] >= 1 for r in skipped)
    final = records[-1]
    assert final["final"] and 0.0 <= final["val_frame_map"] <= 1.0
    # "with ACT rules": the logged figure is ACT's frame-mAP of the final weights' detections, as the
    # reference evaluator (`bmvit eval-frame` on the files `bmvit prepare act-gt` writes) computes it
    from bmvit.data.formats.act_export import write_act_gt
    from bmvit.engine.checkpoint import load_weights
    from bmvit.data.skips import reader_of
    from bmvit.engine.evaluate import predict_rows
    from bmvit.evaluation.frame_map import evaluate_frame_map_files
    from bmvit.models.build import build_detector

    state, saved_cfg, _ = load_weights(tmp_path / "run" / "model.safetensors")
    val = make_dataset(saved_cfg, "val")
    model = build_detector(saved_cfg.model, saved_cfg.data, len(val.labels), load_pretrained=False)
    model.load_state_dict(state)
    dets = predict_rows(model, val, saved_cfg, torch.device("cpu"), progress=False)
    assert len(dets.boxes) > 0
    paths = write_act_gt(reader_of(val).annotations, 1, tmp_path / "gt", "t")  # the ACT reader under the skip wrapper
    with open(tmp_path / "det.csv", "w") as f:
        for v, t, b, a, s in zip(dets.video_ids, dets.timestamps, dets.boxes, dets.actions, dets.person_or_score):
            x1, y1, x2, y2 = b * np.array([W, H, W, H])
            f.write(f"{v},{t},{ACT_LABELS[a - 1]},{float(s)!r},{float(x1)!r},{float(y1)!r},{float(x2)!r},{float(y2)!r}\n")
    ref = evaluate_frame_map_files(paths["classes"], paths["tubes"], tmp_path / "det.csv")
    assert ref.mean_ap > 0  # a non-trivial figure (0.117 when written) so that the comparison can fail
    assert final["val_frame_map"] == pytest.approx(ref.mean_ap, abs=1e-9)
