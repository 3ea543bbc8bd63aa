"""Regular tests pinning the five cases of issue 14 and every bug the fuzz suite found.

Each test runs the failing input once, through the CLI (``main([...])``: exit status 2, one
``error:`` line naming the file / key, no traceback) or through the library call.
"""

from __future__ import annotations

import shutil

import pytest

from bmvit.config import load_config
from bmvit.data.formats.ava_checks import read_checked_rows
from bmvit.data.formats.ava import read_rows
from bmvit.errors import BmvitError, ConfigError, DataError


def _cli(capsys, argv, only_line: bool = True) -> str:
    """The one ``error:`` line of ``bmvit argv`` (exit status 2, no traceback; ``only_line``: nothing
    else on stderr, else other lines such as skip summaries may come before it)."""
    from bmvit.cli.main import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and (len(lines) == 1 or not only_line), err
    return errors[0]


def _dataset(tmp_path, small_synth, train_csv: bytes):
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "frames").symlink_to(small_synth / "frames")
    shutil.copy(small_synth / "annotations" / "label_map.pbtxt", root / "annotations")
    shutil.copy(small_synth / "annotations" / "val.csv", root / "annotations")
    (root / "annotations" / "train.csv").write_bytes(train_csv)
    return root


# --- the five cases of the issue ----------------------------------------------------------------

def test_binary_annotation_csv_names_file_and_line(tmp_path, small_synth, capsys):
    good = (small_synth / "annotations" / "train.csv").read_bytes()
    root = _dataset(tmp_path, small_synth, good[:200] + b"\xff\xfe\x00\x81binary" + good[200:])
    line = _cli(capsys, ["train", f"data.root={root}", f"train.out_dir={tmp_path / 'run'}"])
    assert "train.csv:" in line and "not UTF-8 text" in line


def test_synth_negative_videos(tmp_path, capsys):
    line = _cli(capsys, ["synth", "--out", tmp_path / "s", "--videos", "-3"])
    assert "--videos" in line and "≥ 1" in line


def test_empty_train_csv_says_empty_and_names_file(tmp_path, small_synth, capsys):
    root = _dataset(tmp_path, small_synth, b"")
    line = _cli(capsys, ["train", f"data.root={root}", f"train.out_dir={tmp_path / 'run'}"])
    assert str(root / "annotations" / "train.csv") in line and "the file is empty" in line


def test_all_rows_skipped_says_so(tmp_path, small_synth, capsys):
    root = _dataset(tmp_path, small_synth, b"v,1,x,0,1,1,1,0\n")
    line = _cli(capsys, ["train", f"data.root={root}", "data.on_error=skip", f"train.out_dir={tmp_path / 'run'}"],
                only_line=False)
    assert "train.csv" in line and "every row was skipped" in line


def test_negative_batch_size(capsys):
    line = _cli(capsys, ["train", "train.batch_size=-4"])
    assert "'train.batch_size'" in line and "must be ≥ 1" in line


def test_detect_threshold_outside_probability_range(tmp_path, capsys):
    line = _cli(capsys, ["detect", tmp_path / "clip.mp4", "--checkpoint", tmp_path / "m.safetensors", "--threshold", "-1"])
    assert "--threshold" in line and "[0, 1]" in line


# --- found by the fuzz suite (tests/fuzz) ------------------------------------------------------

@pytest.mark.parametrize("text, expect", [
    ("v1,0902,0.1,0.2,0.5,nan,1,0\n", "must be a finite number"),  # NaN box accepted silently
    ("v1,0902,0.1,0.2,0.5,0.9,1,inf\n", "must be a finite number"),  # inf score accepted silently
    ("v1,99999999999999999999,0.1,0.2,0.5,0.9,1,0\n", "out of range"),  # OverflowError (int64)
    ("\ufeffv1,0902,0.1,0.2,0.5,0.9,1,0\n", None),  # BOM became part of the video id
    ("v1,0902,0.1,0.2,0.5,0.9,1,\"" + "x" * 140000 + "\n", "not a readable CSV row"),  # csv.Error: field limit
])
def test_ava_csv_values(tmp_path, text, expect):
    path = tmp_path / "gt.csv"
    path.write_text(text, encoding="utf-8")
    if expect is None:
        assert read_rows(path).video_ids == ["v1"]
        assert read_checked_rows(path, [1])[0].video_ids == ["v1"]
        return
    with pytest.raises(DataError, match=rf"gt\.csv:1: .*{expect}"):
        read_rows(path)


def test_ava_csv_not_utf8(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_bytes("v1,0902,0.1,0.2,0.5,0.9,1,0\ncafé,0902,0.1,0.2,0.5,0.9,1,0\n".encode("latin-1"))
    for read in (read_rows, lambda p: read_checked_rows(p, [1])):
        with pytest.raises(DataError, match=r"gt\.csv:2: annotation file is not UTF-8 text"):
            read(path)


@pytest.mark.parametrize("text, expect", [
    (b"data:\n  size: 96\n  s", r"cfg\.yaml:3:\d+: invalid YAML \("),  # multi-line YAML error message
    (b"\t", r"cfg\.yaml:1:1: invalid YAML"),
    (b"data:\n  root: caf\xe9\n", r"cfg\.yaml: not UTF-8 text"),  # UnicodeDecodeError
    (b"train:\n  seed: " + b"9" * 5000 + b"\n", r"cfg\.yaml: invalid YAML value"),  # ValueError (int digits limit)
])
def test_config_file_errors_are_one_line(tmp_path, text, expect):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=expect) as e:
        load_config(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("item, expect", [
    ("train.seed=" + "9" * 5000, "'train.seed': expected int"),  # ValueError from YAML int parsing
    ("train.lr.x=nan", "override 'train.lr.x=nan': 'train.lr': expected float"),  # message named 'train.lr' only
    (".x=1", "override '.x=1': unknown key ''"),
    ("train.lr=nan", "'train.lr': expected a finite number"),
    ("train.epochs=1e400", "'train.epochs': expected a finite number"),
    ("eval.threshold=2", "'eval.threshold': 2.0 must be in [0, 1]"),
    ("train.seed=-1", "'train.seed': -1 must be in [0, 4294967295]"),
])
def test_override_errors_name_the_override(item, expect):
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_bmvit_error_family():
    assert issubclass(DataError, BmvitError) and issubclass(ConfigError, BmvitError)


def test_override_key_with_newline_is_one_line():
    with pytest.raises(ConfigError, match=r"unknown key '0\\n0'") as e:
        load_config(None, ["0\n0=nan"])
    assert "\n" not in str(e.value)


def test_act_pickle_corrupt_length_and_odd_values(tmp_path):
    import pickle

    import numpy as np

    from bmvit.data.formats.act import read_act_pkl
    from tests.data_fixtures import act_annotations

    path = tmp_path / "GT.pkl"
    path.write_bytes(b"\x80\x04\x8d" + b"\xff" * 8 + b".")  # BINUNICODE8 with a huge length: OverflowError
    with pytest.raises(DataError, match=r"GT\.pkl: not a readable pickle \(OverflowError"):
        read_act_pkl(path)
    ann = act_annotations()
    ann["nframes"]["Run/v_run_1"] = float("inf")  # int(inf): OverflowError
    path.write_bytes(pickle.dumps(ann, protocol=2))
    with pytest.raises(DataError, match=r"nframes\['Run/v_run_1'\]: expected an integer, got inf"):
        read_act_pkl(path)
    ann = act_annotations()
    ann["resolution"]["Run/v_run_1"] = np.zeros((3, 4))  # the array's repr spanned several lines
    path.write_bytes(pickle.dumps(ann, protocol=2))
    with pytest.raises(DataError, match=r"should be \(H, W\), got an array of shape \(3, 4\)") as e:
        read_act_pkl(path)
    assert "\n" not in str(e.value)


def test_act_pickle_split_that_is_not_a_list(tmp_path):
    import pickle

    from bmvit.data.formats.act import read_act_pkl
    from tests.data_fixtures import act_annotations

    path = tmp_path / "GT.pkl"
    ann = act_annotations()
    ann["train_videos"][1] = None  # TypeError: 'NoneType' object is not iterable
    path.write_bytes(pickle.dumps(ann, protocol=2))
    with pytest.raises(DataError, match=r"GT\.pkl: train_videos\[1\] should be a list of video names, got None"):
        read_act_pkl(path)


@pytest.mark.parametrize("offset, xor", [(0, 1), (26, 255), (124, 1), (173, 1), (184, 1)])
def test_damaged_torch_checkpoint(tmp_path, offset, xor):
    """One flipped byte made torch.load raise IndexError / KeyError / TypeError / AttributeError /
    AssertionError, which escaped as tracebacks."""
    import warnings

    from bmvit.errors import CheckpointError
    from bmvit.models.checkpoints.files import read_weights
    from tests.fuzz.test_fuzz_checkpoint import TORCH_FILES

    data = bytearray(TORCH_FILES[0])
    data[offset] ^= xor
    path = tmp_path / "ref.pth"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_weights(path)
        except CheckpointError as e:
            assert str(path) in str(e) and "\n" not in str(e)


@pytest.mark.parametrize("config, match", [("{'a'", "is not valid JSON"), ("[1, 2]", "is not a mapping"),
                                           ('{"train": {"batch_size": -4}}', r"'train.batch_size': -4 must be ≥ 1")])
def test_checkpoint_embedded_config_damaged(tmp_path, config, match):
    """json.loads of a damaged embedded config raised JSONDecodeError."""
    from safetensors.torch import save as st_save

    import torch

    from bmvit.engine.checkpoint import load_weights
    from bmvit.errors import CheckpointError

    path = tmp_path / "model.safetensors"
    path.write_bytes(st_save({"w": torch.ones(2)}, metadata={"config": config, "note": "not json"}))
    with pytest.raises((CheckpointError, ConfigError), match=match):
        load_weights(path)


def test_eval_frame_csvs_not_utf8(tmp_path):
    """UnicodeDecodeError escaped from the class list and the eval-frame CSV readers."""
    from bmvit.evaluation.frame_csv import read_classes, read_gt

    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"Jump\nRun\xe9\n")
    with pytest.raises(DataError, match=r"classes\.txt:2: class list is not UTF-8 text"):
        read_classes(classes)
    gt = tmp_path / "gt.csv"
    gt.write_bytes(b"v1,1,Run,10,10,40,60\nv\xff1,2,Run,10,10,40,60\n")
    with pytest.raises(DataError, match=r"gt\.csv:2: .*not UTF-8 text"):
        read_gt(gt, ["Jump", "Run"])


@pytest.mark.parametrize("backbone, over, match", [
    ("mvit_tiny", ["data.num_frames=1", "data.size=64"], r"too small for the mvit_tiny backbone"),  # RuntimeError
    ("mvit_tiny", ["data.num_frames=2", "data.size=16"], r"2\(c\+t\) needs at least 2 output time slices"),  # ValueError
    ("hiera_tiny", ["data.num_frames=2", "data.size=48"], r"2\(c\+t\) needs at least 2 output time slices"),
    ("vit_tiny", ["data.num_frames=8", "data.size=40"], r"multiple of the tubelet"),
])
def test_clip_too_small_for_backbone(backbone, over, match):
    """Clip sizes the backbone cannot take were a RuntimeError at construction or a ValueError in forward."""
    from bmvit.models.build import build_detector

    cfg = load_config(None, [f"model.backbone={backbone}", "model.head_hidden=8", *over])
    with pytest.raises(ConfigError, match=match):
        build_detector(cfg.model, cfg.data, 3, load_pretrained=False)


def _video_without_duration(path) -> None:
    """A Matroska file written to a pipe-like (non-seekable) output: no duration in its metadata,
    like a browser's MediaRecorder webm."""
    import io

    import av
    import numpy as np

    class NoSeek(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def seekable(self):
            return False

        def write(self, b):
            self.buf += bytes(b)
            return len(b)

    w = NoSeek()
    with av.open(w, "w", format="matroska") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    path.write_bytes(bytes(w.buf))


def test_prepare_frames_video_without_duration(tmp_path):
    """No end in the metadata made the frame grid a list of ~3e10 times (memory blow-up, never ends)."""
    import signal

    from bmvit.data.prepare.frames import Recipe, prepare_frames

    (tmp_path / "in").mkdir()
    _video_without_duration(tmp_path / "in" / "live.mkv")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("prepare_frames did not finish")))
    signal.alarm(60)
    try:
        reports = prepare_frames(tmp_path / "in", tmp_path / "out", Recipe(fps=10), log=lambda *_: None)
    finally:
        signal.alarm(0)
    assert reports[0].status == "written" and reports[0].frames == 7  # 20 frames at 30 fps = 0.67 s -> 7 at 10 fps
    assert len(list((tmp_path / "out" / "live").glob("*.jpg"))) == 7


@pytest.mark.parametrize("offset", [299, 300, 301])
def test_video_with_damaged_metadata_text(tmp_path, offset):
    """A flipped bit in a webm's metadata text made PyAV raise UnicodeDecodeError at open."""
    from bmvit.data.sources.video import VideoFrames
    from tests.fuzz.test_fuzz_video import VARIANTS, _encode

    data = bytearray(_encode(tmp_path / "vp9.webm", *VARIANTS[3][1:]))
    data[offset] ^= 0x80
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.webm").write_bytes(bytes(data))
    try:
        VideoFrames(tmp_path / "v").num_frames("a")
    except DataError as e:
        assert "a.webm" in str(e)


def test_act_split_without_videos(tmp_path, capsys):
    """An empty ACT split gave the batch-size message instead of naming the pickle and the split."""
    from tests.data_fixtures import act_annotations, write_act

    ann = act_annotations()
    ann["train_videos"][0] = []
    write_act(tmp_path, ann)
    line = _cli(capsys, ["train", f"data.root={tmp_path}", "data.format=act", "data.annotations=GT.pkl",
                         "data.frames_dir=rgb-images", "data.frame_template={video}/{frame:05d}.png", "data.num_frames=4",
                         "data.size=32", "model.backbone=mvit_tiny", f"train.out_dir={tmp_path / 'run'}"])
    assert "GT.pkl: split 1 has no train key frames" in line


def test_video_with_unknown_codec_tag(tmp_path, capsys):
    """A damaged codec tag left the stream without a codec context: AttributeError in prepare frames."""
    from tests.fuzz.test_fuzz_video import VARIANTS, _encode

    data = _encode(tmp_path / "h264.mp4", *VARIANTS[0][1:])
    i = data.rfind(b"avc1")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(data[:i] + b"zzz1" + data[i + 4:])
    line = _cli(capsys, ["prepare", "frames", "--videos", tmp_path / "in", "--out", tmp_path / "out"], only_line=False)
    assert "a.mp4: the video stream has no decodable codec" in line


def test_detect_video_with_unknown_codec_tag(tmp_path):
    """The same damaged codec tag in bmvit detect's video reader (AttributeError)."""
    from bmvit.inference.video_source import open_source
    from tests.fuzz.test_fuzz_video import VARIANTS, _encode

    data = _encode(tmp_path / "h264.mp4", *VARIANTS[0][1:])
    i = data.rfind(b"avc1")
    (tmp_path / "a.mp4").write_bytes(data[:i] + b"zzz1" + data[i + 4:])
    with pytest.raises(DataError, match=r"a\.mp4: the video stream has no decodable codec"):
        open_source(str(tmp_path / "a.mp4"))


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, template", [("00001.png", "{video}/{frame:05d}.png"), ("00001.jpg", "{video}/{frame:05d}.jpg")])
def test_frame_claiming_a_huge_size(tmp_path, name, template):
    """Pillow's DecompressionBombError (a header claiming 30000 x 30000 pixels) escaped every frame reader."""
    import numpy as np

    from bmvit.data.sources.frame_folder import FrameFolder
    from bmvit.data.transforms import resize_frames
    from bmvit.inference.video_source import open_source

    (tmp_path / "v").mkdir()
    path = tmp_path / "v" / name
    path.write_bytes(_png_header(30000, 30000))
    ff = FrameFolder(tmp_path, template)
    with pytest.raises(DataError, match=rf"{name}: cannot decode frame .*decompression bomb"):
        ff.read("v", np.array([1]), lambda f: resize_frames(f, (16, 16)))
    with pytest.raises(DataError, match=rf"{name}: cannot read frame"):
        ff.frame_size("v")
    with pytest.raises(DataError, match=rf"{name}: cannot read frame"):
        open_source(str(tmp_path / "v"))
