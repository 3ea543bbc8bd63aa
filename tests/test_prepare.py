"""``bmvit prepare``: frame extraction with the pinned recipe, its report, and the ACT GT export."""

import json

import numpy as np
import pytest
from data_fixtures import decode_frame_numbers, frame_image, write_act, write_mp4
from PIL import Image

from bmvit.cli.main import main
from bmvit.data.formats.act import read_act_pkl
from bmvit.data.formats.ava import read_label_map, read_rows
from bmvit.evaluation.frame_csv import read_classes, read_gt


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_mp4(d / "clipA.mp4", [frame_image(f) for f in range(1, 46)], fps=30)  # 1.5 s
    write_mp4(d / "clipB.mp4", [frame_image(f) for f in range(1, 26)], fps=25)  # 1.0 s
    (d / "notes.txt").write_text("not a video")
    return d


def _frames(folder, vid, ext="jpg"):
    return sorted(p.name for p in (folder / vid).glob(f"{vid}_*.{ext}"))


def test_prepare_frames_layout_report_and_timing(tmp_path, videos, capsys):
    out = tmp_path / "frames"
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clipA: 45 frames 64x48 from 64x48 @ 30 fps" in text and "clipB: 30 frames" in text
    assert "prepared 2 video(s)" in text and "2 written (75 frames)" in text
    assert _frames(out, "clipA") == [f"clipA_{i:06d}.jpg" for i in range(1, 46)]
    assert len(_frames(out, "clipB")) == 30  # 1 s of a 25 fps video on the 30 fps grid
    got = decode_frame_numbers(np.stack([np.asarray(Image.open(out / "clipB" / f"clipB_{i:06d}.jpg"))
                                         for i in range(1, 31)]))
    assert list(got) == [int(np.floor((i - 1) * 25 / 30)) + 1 for i in range(1, 31)]
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["recipe"]["fps"] == 30 and report["recipe"]["quality"] == 90 and report["written"] == 2
    assert {v["video"]: v["frames"] for v in report["videos"]} == {"clipA": 45, "clipB": 30}
    assert not list(out.glob(".*partial"))
    # a second run keeps what exists
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out)]) == 0
    assert "0 written (0 frames), 2 kept" in capsys.readouterr().out
    # kept folders of another recipe would make the report lie about them: refused, nothing touched
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out), "--fps", "10"]) == 2
    assert "were made with another recipe (fps 30 -> 10); pass --overwrite" in capsys.readouterr().err
    assert json.loads((out / "prepare_report.json").read_text())["recipe"]["fps"] == 30
    (out / "prepare_report.json").unlink()  # no report to compare: the frames' extension still tells
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out), "--ext", "png"]) == 2
    assert "holds no .png frames" in capsys.readouterr().err



def test_prepare_a_file_in_the_way_of_a_video_folder_is_one_line(tmp_path, videos, capsys):
    out = tmp_path / "frames"
    out.mkdir()
    (out / "clipB").write_text("not a folder")
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out)]) == 2
    assert f"error: {out / 'clipB'}: cannot write output" in capsys.readouterr().err
    assert not list(out.glob(".*partial")) and (out / "clipB").read_text() == "not a folder"

def test_prepare_trim_resize_png(tmp_path, videos):
    out = tmp_path / "f"
    args = ["prepare", "frames", "--videos", str(videos), "--out", str(out), "--start", "0.5", "--end", "1.2",
            "--short-side", "24", "--ext", "png"]
    assert main(args) == 0
    names = _frames(out, "clipA", "png")
    assert len(names) == 21  # t = 0.5 + (i-1)/30 < 1.2
    first = np.asarray(Image.open(out / "clipA" / names[0]))
    assert first.shape == (24, 32, 3)
    full = tmp_path / "full"
    main(["prepare", "frames", "--videos", str(videos), "--out", str(full), "--ext", "png"])
    assert list(decode_frame_numbers(np.asarray(Image.open(full / "clipA" / "clipA_000016.png"))[None])) == [16]
    # frame 1 of the trimmed run is frame 16 of the full one (0.5 s at 30 fps)
    want = np.asarray(Image.open(full / "clipA" / "clipA_000016.png").resize((32, 24), Image.BILINEAR))
    assert np.array_equal(first, want)


def test_prepare_bad_video_error_and_skip(tmp_path, videos, capsys):
    bad = tmp_path / "v"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a movie")
    (bad / "good.mp4").symlink_to(videos / "clipA.mp4")
    assert main(["prepare", "frames", "--videos", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "broken.mp4: cannot open video" in err[0]
    assert err[0].endswith("(pass --on-error skip to leave such videos out, counted)")  # this verb's option
    assert main(["prepare", "frames", "--videos", str(bad), "--out", str(tmp_path / "o"), "--on-error", "skip"]) == 1
    out = capsys.readouterr()
    assert "1 written (45 frames), 0 kept, 1 failed" in out.out and "--on-error skip: 1 bad input(s)" in out.err
    assert not (tmp_path / "o" / "broken").exists()
    assert main(["prepare", "frames", "--videos", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "videos folder not found" in capsys.readouterr().err


def test_prepare_act_gt(tmp_path, capsys):
    root = write_act(tmp_path / "jh", pkl_name="JHMDB-GT.pkl")
    assert main(["prepare", "act-gt", "--pkl", str(root / "JHMDB-GT.pkl"), "--split", "3",
                 "--out", str(root / "annotations")]) == 0
    ann = read_act_pkl(root / "JHMDB-GT.pkl")
    classes = read_classes(root / "annotations" / "jhmdb_classes.txt")
    assert classes == ann.labels
    gt = read_gt(root / "annotations" / "jhmdb_split3_test_tubes.csv", classes, tubes=True)
    n_boxes = sum(len(t.frames) for v in ann.split_videos(3, False) for t in ann.tubes[v])
    assert len(gt.frames) == n_boxes
    rows = read_rows(root / "annotations" / "jhmdb_split3_test.csv")
    assert len(rows) == n_boxes and set(rows.actions.tolist()) <= {1, 2}
    assert rows.boxes.max() <= 1.0 and read_label_map(root / "annotations" / "jhmdb_label_map.pbtxt") == {1: "Jump", 2: "Run"}


def test_prepare_start_past_the_end_is_one_error_or_a_skip(tmp_path, videos, capsys):
    """--start after a video's end gives no grid time at all: one error naming the file (a skip
    with --on-error skip, the other videos written), not an IndexError from the empty grid."""
    out = tmp_path / "o"
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out), "--start", "1.2"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "clipB.mp4: no frame at or after 1.2 s" in err[0] and "ends at 1.000 s" in err[0], err
    assert main(["prepare", "frames", "--videos", str(videos), "--out", str(out), "--start", "1.2", "--on-error", "skip",
                 "--overwrite"]) == 1
    report = json.loads((out / "prepare_report.json").read_text())
    assert [(v["video"], v["status"], v["frames"]) for v in report["videos"]] == [("clipA", "written", 9), ("clipB", "failed", 0)]
    assert not (out / "clipB").exists() and not list(out.glob(".*partial"))


def test_prepare_and_video_reader_take_camera_and_phone_extensions(tmp_path, videos):
    """Camcorders write .MTS (MPEG-TS), iTunes .m4v, phones .3gp: ``prepare frames`` and
    ``data.source=video`` take every extension ``bmvit detect`` takes, not only mp4/mkv/webm/avi/mov."""
    import av

    from bmvit.data.sources.video import VideoFrames

    src = tmp_path / "v"
    src.mkdir()
    (src / "phone.m4v").symlink_to(videos / "clipB.mp4")
    with av.open(str(src / "cam.MTS"), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in range(1, 26):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame_image(f), format="rgb24")))
        c.mux(s.encode())
    assert main(["prepare", "frames", "--videos", str(src), "--out", str(tmp_path / "o"), "--fps", "25"]) == 0
    assert len(_frames(tmp_path / "o", "phone")) == 25 and len(_frames(tmp_path / "o", "cam")) == 25
    vf = VideoFrames(src, fps=25)
    assert vf.num_frames("cam") == 25
    for f in ([1, 2], [12, 20], [25]):  # the start, the middle (a seek: MPEG-TS seeks by byte estimates), the end
        assert list(decode_frame_numbers(vf.read("cam", np.array(f), lambda im: im))) == f


def test_prepare_names_an_empty_file_plainly(tmp_path, capsys):
    """A 0-byte .mp4 (an interrupted copy) is 'empty file (0 bytes)', as in ``bmvit detect``, and
    FFmpeg's error numbers stay out of the line."""
    src = tmp_path / "v"
    src.mkdir()
    (src / "copy.mp4").write_bytes(b"")
    (src / "junk.mkv").write_text("not a video\n")
    assert main(["prepare", "frames", "--videos", str(src), "--out", str(tmp_path / "o"), "--on-error", "skip"]) == 1
    failed = {v["video"]: v["message"] for v in json.loads((tmp_path / "o" / "prepare_report.json").read_text())["videos"]}
    assert failed["copy"].endswith("copy.mp4: empty file (0 bytes), not a video")
    assert "junk.mkv: cannot open video (Invalid data found" in failed["junk"] and "Errno" not in failed["junk"]


def test_prepare_reports_a_broken_link(tmp_path, videos, capsys):
    """A video that is a symbolic link to a file gone (an unmounted disk) is a failed video in the
    report, not silently absent from it."""
    src = tmp_path / "v"
    src.mkdir()
    (src / "ok.mp4").symlink_to(videos / "clipB.mp4")
    (src / "gone.mp4").symlink_to(tmp_path / "unmounted" / "gone.mp4")
    assert main(["prepare", "frames", "--videos", str(src), "--out", str(tmp_path / "o"), "--on-error", "skip"]) == 1
    report = json.loads((tmp_path / "o" / "prepare_report.json").read_text())
    assert [(v["video"], v["status"]) for v in report["videos"]] == [("gone", "failed"), ("ok", "written")]
    assert "gone.mp4: video not found" in report["videos"][0]["message"]
