"""The real datasets' layouts (AVA v2.2, UCF101-24 / JHMDB51-21 ACT pickles) through the CLI verbs
and the dataset builder: what the real files hold that small hand-made fixtures tend not to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import decode_frame_numbers, unnormalize, write_act, write_ava

from bmvit.cli.main import main as bmvit
from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.errors import DataError

REPO = Path(__file__).resolve().parents[1]
JHMDB = REPO / "configs/paper/jhmdb/mvitv2s_16x256_out8x16_split1.yaml"


def _act_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", "data.annotations=GT.pkl", "data.frames_dir=rgb-images",
            "data.frame_template={video}/{frame:05d}.png", "data.num_frames=4", "data.stride=2", "data.size=32"]


def test_show_writes_act_video_ids_with_a_class_folder(tmp_path, capsys):
    """UCF/JHMDB video ids are '<Class>/<video>': `bmvit show` wrote OUT/<Class>/<video>_<frame>.png
    into a folder it had not made (FileNotFoundError traceback)."""
    root = write_act(tmp_path / "act")
    out = tmp_path / "show"
    assert bmvit(["show", "--config", str(JHMDB), "--out", str(out), "--num", "2", "--split", "train",
                  *_act_overrides(root)]) == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["Jump/v_jump_1_0020.png", "Run/v_run_1_0005.png"]
    assert "Run/v_run_1_0005.png: 1 ground-truth actors" in capsys.readouterr().out


def _ava_cfg(root: Path, *over: str):
    return load_config(None, [f"data.root={root}", "data.num_frames=4", "data.stride=4", "data.size=32", *over])


def test_ava_keyframe_outside_the_frames_on_disk_is_named_not_clamped(tmp_path, capsys):
    """A GT row whose key frame is not on disk (AVA: frames of the movie end early; own data: seconds
    counted from 0 with data.first_second left at 900) was read from the clamped last / first frame:
    silently the wrong picture for its boxes. Now an error naming the row, or a counted skip."""
    ok = "vidA,0902,0.1,0.2,0.4,0.9,1,0"
    root = write_ava(tmp_path / "ava", {"vidA": 100}, [ok, "vidA,0910,0.1,0.2,0.4,0.9,3,0"])  # frame 301 of 100
    with pytest.raises(DataError, match=r"val\.csv:2: timestamp 910 is past the end of video 'vidA': its 100 frames "
                                        r"\(.*vidA\) end at second 903\.33"):
        make_dataset(_ava_cfg(root), "val")
    ds = make_dataset(_ava_cfg(root, "data.on_error=skip"), "val")
    assert [(kf.video_id, kf.timestamp) for kf in ds.keyframes] == [("vidA", 902)]
    assert "1 bad input(s)" in capsys.readouterr().err
    own = write_ava(tmp_path / "own", {"vidA": 100}, ["vidA,2,0.1,0.2,0.4,0.9,1,0"])  # seconds from 0
    with pytest.raises(DataError, match=r"train\.csv:1: timestamp 2 is before the first frame of video 'vidA'.*"
                                        r"data\.first_second=0"):
        make_dataset(_ava_cfg(own), "train")
    assert make_dataset(_ava_cfg(own, "data.first_second=0"), "train").frame_indices("vidA", 2)[2] == 61
    # the video's end time itself reads the last frame (clamped by at most one frame)
    end = write_ava(tmp_path / "end", {"vidA": 90}, ["vidA,0903,0.1,0.2,0.4,0.9,1,0"])  # key frame 91
    assert list(make_dataset(_ava_cfg(end), "val").frame_indices("vidA", 903)) == [83, 87, 90, 90]


def test_ava_frames_folder_with_a_gap_clamps_to_its_last_frame(tmp_path):
    """A video's extent is its highest frame number, not its file count: with frames 50..60 missing the
    clip of frame 91 was clamped to file count 89 (the key frame slot read frame 89)."""
    root = write_ava(tmp_path / "ava", {"vidA": 100}, ["vidA,0903,0.1,0.2,0.4,0.9,1,0"])  # key frame 91
    for f in range(50, 61):
        (root / "frames" / "vidA" / f"vidA_{f:06d}.jpg").unlink()
    ds = make_dataset(_ava_cfg(root), "val")
    clip, _ = ds[0]
    assert list(decode_frame_numbers(unnormalize(clip))) == [83, 87, 91, 95]


def _bytes_strings(x):
    """What loading a Python 2 pickle with encoding='bytes' and dumping it again leaves: str -> bytes."""
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, dict):
        return {_bytes_strings(k): _bytes_strings(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_bytes_strings(v) for v in x)
    return x


def test_act_pickle_with_bytes_keys_and_names_reads_as_str(tmp_path):
    """An ACT pickle whose keys, class names and video names are bytes was 'missing key labels'
    (and bytes class names would have become "b'Run'")."""
    import pickle

    from data_fixtures import act_annotations

    root = write_act(tmp_path / "act")
    want = make_dataset(load_config(str(JHMDB), _act_overrides(root)), "train")
    (root / "GT.pkl").write_bytes(pickle.dumps(_bytes_strings(act_annotations()), protocol=2))
    got = make_dataset(load_config(str(JHMDB), _act_overrides(root)), "train")
    assert got.labels == want.labels == {1: "Jump", 2: "Run"}
    assert [(k.video_id, k.timestamp) for k in got.keyframes] == [(k.video_id, k.timestamp) for k in want.keyframes]
    assert np.array_equal(got.keyframes.boxes, want.keyframes.boxes)


def test_act_from_video_files_numbers_the_videos_own_frames(tmp_path):
    """UCF101-24's videos are 25 fps and the ACT annotations number their frames: with data.source=video
    frame f was read on the 30-fps grid (data.fps), i.e. the picture of frame ~0.83·f, silently."""
    from PIL import Image

    from data_fixtures import write_mp4

    root = write_act(tmp_path / "act")
    v = "Run/v_run_2"  # split 1's test video, 12 frames
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "rgb-images" / v).glob("*.png"))]
    write_mp4(root / "videos" / f"{v}.mp4", frames, fps=25)
    ds = make_dataset(load_config(str(JHMDB), [*_act_overrides(root), "data.source=video"]), "val")
    i = next(k for k, kf in enumerate(ds.keyframes) if kf.timestamp == 9)
    clip, target = ds[i]
    assert list(decode_frame_numbers(unnormalize(clip))) == [5, 7, 9, 11]
    assert ds.num_video_frames(v) == 12


def test_act_frames_folder_shorter_than_nframes_is_named_when_the_split_is_read(tmp_path):
    """nframes larger than the frames on disk failed only when a clip first needed a missing frame
    (after hours of training, or in the final evaluation); now when the split is read. Frames beyond
    nframes on disk are fine (the pickle decides)."""
    root = write_act(tmp_path / "act")
    (root / "rgb-images" / "Run" / "v_run_1" / "00030.png").unlink()
    from PIL import Image

    Image.new("RGB", (64, 48)).save(root / "rgb-images" / "Jump" / "v_jump_1" / "00021.png")  # one past nframes
    with pytest.raises(DataError, match=r"v_run_1: frames end at 00029\.png but GT\.pkl gives "
                                        r"nframes\['Run/v_run_1'\] = 30"):
        make_dataset(load_config(str(JHMDB), _act_overrides(root)), "train")
    assert len(make_dataset(load_config(str(JHMDB), [*_act_overrides(root), "data.on_error=skip"]), "train")) == 41


def test_ava_rows_without_person_id_keep_their_people_apart(tmp_path):
    """7-column GT rows (no person id, accepted as the official evaluator accepts them) all read as
    person 1: every actor of a key frame was merged into the first one's box with all their actions."""
    rows = ["vidA,0902,0.1,0.2,0.4,0.9,1", "vidA,0902,0.5,0.1,0.9,0.8,3", "vidA,0902,0.5,0.1,0.9,0.8,7",
            "vidA,0903,0.1,0.2,0.4,0.9,1,5", "vidA,0903,0.1,0.2,0.4,0.9,3,5"]  # with ids: merged as before
    ds = make_dataset(_ava_cfg(write_ava(tmp_path / "ava", {"vidA": 100}, rows)), "train")
    k0, k1 = ds.keyframes
    assert np.allclose(k0.boxes, [[0.1, 0.2, 0.4, 0.9], [0.5, 0.1, 0.9, 0.8]])
    assert k0.labels.tolist() == [[1, 0, 0], [0, 1, 1]]  # ids 1, 3, 7
    assert np.allclose(k1.boxes, [[0.1, 0.2, 0.4, 0.9]]) and k1.labels.tolist() == [[1, 1, 0]]


def test_training_names_missing_evaluation_files_before_it_trains(tmp_path):
    """The AVA paper configs evaluate with eval.label_map (the 60-class file) and data.exclusions; a
    missing one was found by the first evaluation, i.e. after the whole training (25 epochs)."""
    from bmvit.engine.train import train

    root = write_ava(tmp_path / "ava", {"vidA": 100}, ["vidA,0902,0.1,0.2,0.4,0.9,1,0"])
    tiny = ["model.backbone=mvit_tiny", "model.head_hidden=16", "train.batch_size=1", "train.max_steps=1",
            "train.threads=1", f"train.out_dir={tmp_path / 'run'}"]
    for over, missing in ((["eval.label_map=annotations/ava_60.pbtxt"], r"ava_60\.pbtxt: label map not found"),
                          (["data.exclusions=annotations/excluded.csv"], r"excluded\.csv: exclusions file not found")):
        with pytest.raises(DataError, match=missing):
            train(_ava_cfg(root, *tiny, *over), progress=False, overwrite=True)
        assert not (tmp_path / "run" / "model.safetensors").exists()


def test_eval_frame_given_the_ava_style_detections_of_bmvit_eval_says_so(tmp_path, capsys):
    """`bmvit eval` on UCF/JHMDB writes detections_<split>.csv in the AVA layout; given to eval-frame /
    eval-video it said only "unknown class '0'"."""
    (tmp_path / "classes.txt").write_text("Jump\nRun\n")
    (tmp_path / "gt.csv").write_text("Run/v_run_2,3,Run,0,4,4,30,30\n")
    (tmp_path / "det.csv").write_text("Run/v_run_2,3,0.0625,0.083,0.47,0.625,2,0.9\n")
    for verb in ("eval-frame", "eval-video"):
        assert bmvit([verb, "--classes", str(tmp_path / "classes.txt"), "--gt", str(tmp_path / "gt.csv"),
                      "--pred", str(tmp_path / "det.csv")]) == 2
        err = capsys.readouterr().err
        assert "det.csv:1: unknown class '0.0625'" in err and "looks like the AVA layout" in err
        assert "video,frame,class_name,score,x1,y1,x2,y2 (boxes in pixels)" in err and len(err.splitlines()) == 1


def test_prepare_act_gt_to_an_unwritable_folder_is_one_line(tmp_path, capsys):
    """`bmvit prepare act-gt --out` on a file (or a folder that cannot be made) was a FileExistsError
    traceback; its files were also written in place, half-written when interrupted."""
    root = write_act(tmp_path / "act")
    (tmp_path / "taken").write_text("")
    assert bmvit(["prepare", "act-gt", "--pkl", str(root / "GT.pkl"), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "taken/ucf24_classes.txt: cannot write output" in err and len(err.splitlines()) == 1


def test_show_to_an_unwritable_folder_is_one_line(tmp_path, capsys):
    """`bmvit show --out FILE` was a FileExistsError traceback."""
    root = write_act(tmp_path / "act")
    (tmp_path / "taken").write_text("")
    assert bmvit(["show", "--config", str(JHMDB), "--out", str(tmp_path / "taken"), "--num", "1",
                  *_act_overrides(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tmp_path / 'taken'}: cannot write output" in err


def test_render_names_a_frame_missing_inside_the_video(tmp_path):
    """`eval --render` over a frames folder with a hole said "could not write mp4: [Errno 2] No such
    file ..." (an output problem, it seemed); it is a missing input frame."""
    from bmvit.data.formats.ava import AvaRows
    from bmvit.inference.render_split import render_split_video

    root = write_ava(tmp_path / "ava", {"vidA": 100}, ["vidA,0902,0.1,0.2,0.4,0.9,1,0"])
    (root / "frames" / "vidA" / "vidA_000090.jpg").unlink()
    ds = make_dataset(_ava_cfg(root), "val")
    none = AvaRows([], np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    with pytest.raises(DataError, match=r"vidA_000090\.jpg: frame not found \(rendering video 'vidA', frames 1\.\.100\)"):
        render_split_video(ds, none, "vidA", tmp_path / "out" / "vidA.mp4")
    assert not (tmp_path / "out" / "vidA.mp4").exists()


def test_overrides_on_both_sides_of_an_option(tmp_path, capsys):
    """`bmvit show --config C data.root=R --out O data.split=3` was "unrecognized arguments:
    data.split=3" (argparse fills a positional list from one run of words); other words still are."""
    root = write_act(tmp_path / "act")
    out = tmp_path / "show"
    first, *rest = _act_overrides(root)
    assert bmvit(["show", "--config", str(JHMDB), first, "--out", str(out), "--num", "1", *rest, "data.split=3"]) == 0
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.png")] == ["Run/v_run_1_0001.png"]  # split 3's test
    with pytest.raises(SystemExit) as e:  # usage errors exit from the parser
        bmvit(["show", "--config", str(JHMDB), first, "--out", str(out), "stray"])
    assert e.value.code == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_show_video_option_takes_an_ava_id_beginning_with_a_dash(tmp_path, capsys):
    """AVA ids such as '-5KQ66BBWC4' (the first movie of the train list) given as `--video ID` were
    "argument --video: expected one argument" (argparse read the id as an option)."""
    root = write_ava(tmp_path / "ava", {"-5KQ66BBWC4": 70, "053oq2xB3oU": 70},
                     ["-5KQ66BBWC4,0902,0.1,0.2,0.4,0.9,1,0", "053oq2xB3oU,0902,0.1,0.2,0.4,0.9,3,0"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {root}\n  size: 32\n  num_frames: 4\n")
    out = tmp_path / "show"
    assert bmvit(["show", "--config", str(cfg), "--video", "-5KQ66BBWC4", "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*.png")] == ["-5KQ66BBWC4_0902.png"]


def test_eval_of_a_checkpoint_with_another_class_count_is_one_line(tmp_path, capsys):
    """`bmvit eval` of a checkpoint on data with another number of classes (a UCF model on JHMDB, the
    60-class AVA label map as data.label_map for an 80-class model) was a RuntimeError traceback."""
    from inference_fixtures import make_checkpoint, write_dataset

    root = write_dataset(tmp_path / "ds")
    ck = make_checkpoint(tmp_path / "model.safetensors", root=root)
    (root / "annotations" / "one.pbtxt").write_text('item {\n  name: "walk"\n  id: 1\n}\n')
    assert bmvit(["eval", "--checkpoint", str(ck), "--no-progress", "data.label_map=annotations/one.pbtxt",
                  "data.unknown_actions=ignore", "data.hflip_swap=[]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {ck}: its weights do not fit the model of this config and data (1 classes): "
                          "size mismatch for heads.action.")
