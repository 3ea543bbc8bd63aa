"""``bmvit prepare ava`` end to end against an HTTP server on 127.0.0.1 (tests/ava_server.py).

Covers: annotations zip and file list, videos selected by the split CSVs, a connection dropped
mid-file and resumed with Range, a ``.part`` of a killed run resumed, a server ignoring Range, a
404, a corrupt video, a video absent from the file list, ``--on-error skip|error``, the report, a
re-run that downloads and writes nothing, ``--no-frames`` cuts read by the video reader, and a
different recipe on the same folder refused, and the result read by a paper AVA config.
"""

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from ava_server import AvaServer, annotations_zip, standard_mirror
from data_fixtures import decode_frame_numbers
from PIL import Image

from bmvit.cli.main import main
from bmvit.config import load_config
from bmvit.data.prepare.download import DownloadError, fetch
from bmvit.data.prepare.frames import Recipe, extract_frames
from bmvit.data.sources.video import VideoFrames
from bmvit.data.build import make_dataset
from bmvit.errors import DataError

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs/paper/ava/mvitv2s_16x224_out8x7.yaml"
START, END = 1, 2.5  # seconds of each 3 s movie kept: frames 31..75 of the source


pytestmark = pytest.mark.usefixtures("no_proxy")  # tests/conftest.py: the local servers are reached directly


@pytest.fixture
def server(tmp_path):
    with AvaServer() as s:
        standard_mirror(s, tmp_path / "src")
        yield s


def _args(server, out, *extra):
    return ["prepare", "ava", "--out", str(out), "--base-url", server.base,
            "--annotations-url", f"{server.base}/ava_v2.2.zip", "--start", str(START), "--end", str(END),
            "--backoff", "0.01", "--timeout", "10", "--no-progress", *extra]


def _tree(out):
    """{relative path: (size, mtime_ns)} of every file but the report."""
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file() and p.name != "prepare_ava_report.json"}


def test_prepare_ava_skip_resume_report_and_rerun(tmp_path, server, capsys):
    out = tmp_path / "ava"
    server.drop_once.add("/trainval/vidA.mp4")
    assert main(_args(server, out, "--workers", "2", "--on-error", "skip")) == 1
    text = capsys.readouterr()
    # the dropped connection was resumed with a Range request from where it stopped
    gets_a = [r for p, r in server.requests if p == "/trainval/vidA.mp4"]
    assert len(gets_a) == 2 and gets_a[0] is None and gets_a[1].startswith("bytes=") and gets_a[1] != "bytes=0-"
    # frames of the kept seconds, in the paper layout; frame 1 is second START of the movie
    for vid in ("vidA", "vidB"):
        names = sorted(os.listdir(out / "frames" / vid))
        assert names == [f"{vid}_{i:06d}.jpg" for i in range(1, 46)]
        got = decode_frame_numbers(np.stack([np.asarray(Image.open(out / "frames" / vid / n)) for n in names[::11]]))
        want = np.array([31 + i for i in range(0, 45, 11)])
        # vidB is Matroska: its 1 ms timestamps put some 30 fps frames up to 0.5 ms after their grid time,
        # so the grid rule (last frame shown at or before t) takes the previous one there
        assert np.array_equal(got, want) if vid == "vidA" else np.all((got == want) | (got == want - 1))
    assert sorted(os.listdir(out / "annotations")) == [
        "ava_action_list_v2.2.pbtxt", "ava_file_names_trainval_v2.1.txt", "ava_train_v2.2.csv",
        "ava_val_excluded_timestamps_v2.2.csv", "ava_val_v2.2.csv"]
    assert not list(out.rglob("*.part")) and not (out / "downloads" / "videos").exists() or \
        not list((out / "downloads" / "videos").iterdir())
    # console: one line per video, failures named with their URL / file and the way out
    assert "vidA: 45 frames 64x48" in text.out and "vidB: 45 frames 64x48" in text.out
    assert f"vidC: FAILED: {server.base}/trainval/vidC.mp4: HTTP 404 Not Found (left out; a re-run" in text.out
    assert "vidD: FAILED: " in text.out and "cannot open video" in text.out and "a re-run fetches it again" in text.out
    assert "vidE: FAILED: " in text.out and "not in the file list" in text.out
    assert "videos: 5 expected, 2 present (2 written, 0 kept), 3 failed" in text.out
    assert "failed: vidC, vidD, vidE" in text.err
    rep = json.loads((out / "prepare_ava_report.json").read_text())
    assert rep["videos"] == {"expected": 5, "present": 2, "failed": 3, "written": 2, "kept": 0}
    # train: vidA 1, 2 on disk, vidA 3 past END, vidB 1, 2, vidC 2 failed; val: vidA 2 only
    assert rep["keyframes"]["train"] == {"keyframes": 6, "present": 4, "videos": 3, "videos_present": 2}
    assert rep["keyframes"]["val"] == {"keyframes": 3, "present": 1, "videos": 3, "videos_present": 1}
    assert rep["disk_bytes"]["outputs"] == sum(p.stat().st_size for p in (out / "frames").rglob("*.jpg"))
    assert rep["recipe"]["fps"] == 30 and rep["recipe"]["quality"] == 90 and "libavcodec" in rep["recipe"]["ffmpeg"]
    assert rep["layout"]["data.train_csv"] == "annotations/ava_train_v2.2.csv"

    # the mirror gets fixed: a re-run fetches only the two missing movies, touches nothing done
    server.files["/trainval/vidC.mp4"] = server.files["/trainval/vidA.mp4"]
    server.files["/trainval/vidD.webm"] = server.files["/trainval/vidB.mkv"]
    server.requests.clear()
    before = {k: v for k, v in _tree(out).items() if k.startswith(("frames/vidA/", "frames/vidB/"))}
    assert main(_args(server, out, "--on-error", "skip")) == 1  # vidE is still not in the file list
    assert sorted(server.paths_requested()) == ["/trainval/vidC.mp4", "/trainval/vidD.webm"]
    assert all(_tree(out)[k] == v for k, v in before.items())
    assert "vidA: complete (45 frames 64x48), kept" in capsys.readouterr().out
    # a third run requests nothing and writes nothing but the report
    server.requests.clear()
    snap = _tree(out)
    assert main(_args(server, out, "--on-error", "skip")) == 1
    assert server.requests == [] and _tree(out) == snap
    rep = json.loads((out / "prepare_ava_report.json").read_text())
    assert rep["videos"]["present"] == 4 and rep["videos"]["kept"] == 4 and rep["downloaded_bytes"] == 0
    # the folder is what the paper configs read (only the movie seconds differ: frame 1 is second START);
    # vidA's second 3 lies after the prepared range (--end 2.5): its row is named, or left out with skip
    over = [f"data.root={out}", f"data.first_second={START}", "data.keyframe_range=null"]
    with pytest.raises(DataError, match=r"ava_train_v2\.2\.csv:3: timestamp 3 is past the end of video 'vidA'"):
        make_dataset(load_config(PAPER_CONFIG, over), "train")
    train = make_dataset(load_config(PAPER_CONFIG, [*over, "data.on_error=skip"]), "train")
    assert len(train) == 5 and tuple(train[0][0].shape) == (3, 16, 224, 224)
    # another recipe on the same folder is refused
    assert main(_args(server, out, "--short-side", "24")) == 2
    assert "was prepared with" in capsys.readouterr().err


def test_prepare_ava_error_stops_with_one_line_and_part_resumes(tmp_path, server, capsys):
    out = tmp_path / "ava"
    movie = server.files["/trainval/vidA.mp4"]
    part = out / "downloads" / "videos" / "vidA.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(movie[:1000])  # what a killed run leaves
    assert main(_args(server, out, "--splits", "train", "--workers", "1")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: {server.base}/trainval/vidC.mp4: HTTP 404 Not Found")
    assert "--on-error skip" in err[0] and "re-run to resume" in err[0]
    assert ("/trainval/vidA.mp4", "bytes=1000-") in server.requests
    assert len(os.listdir(out / "frames" / "vidA")) == 45  # finished before the failure: kept for the re-run
    # the corrupt video stops a val run with its own one-line error
    assert main(_args(server, out, "--splits", "val", "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "vidD.webm: cannot open video" in err and "--on-error skip" in err
    assert main(_args(server, tmp_path / "x", "--splits", "test")) == 2
    assert "--splits: expected a comma-separated subset of train,val, got 'test'" in capsys.readouterr().err


def test_prepare_ava_no_frames_cuts_match_frames(tmp_path, server, capsys):
    out = tmp_path / "cuts"
    server.ignore_range.add("/trainval/vidB.mkv")
    server.drop_once.add("/trainval/vidB.mkv")  # resumed from zero: the server sends the whole file again
    assert main(_args(server, out, "--splits", "train", "--no-frames", "--on-error", "skip")) == 1
    assert [r for p, r in server.requests if p == "/trainval/vidB.mkv"][1].startswith("bytes=")
    assert "use: data.root=" in capsys.readouterr().out
    reader = VideoFrames(out / "videos", fps=30, offset=0)
    recipe = Recipe(start=START, end=END, ext="png")
    for vid, name in (("vidA", "vidA.mp4"), ("vidB", "vidB.mkv")):
        assert reader.num_frames(vid) == 45 and reader.frame_size(vid) == (48, 64)
        clip = reader.read(vid, np.array([1, 2, 30, 45]), resize=lambda im: im)
        # the cut holds the frames `prepare frames` writes from the same movie with the same recipe
        (tmp_path / name).write_bytes(server.files[f"/trainval/{name}"])
        extract_frames(tmp_path / name, tmp_path / "png", recipe)
        want = [decode_frame_numbers(np.asarray(Image.open(tmp_path / "png" / vid / f"{vid}_{i:06d}.png"))[None])[0]
                for i in (1, 2, 30, 45)]
        assert list(decode_frame_numbers(clip)) == want
    assert want[0] == 31 and want[-1] in (74, 75)  # frame 1 = second START (mkv: see the first test)
    assert not (out / "frames").exists()


def test_fetch_416_complete_part_and_retries_exhausted(tmp_path, server):
    data = server.files["/trainval/vidA.mp4"]
    dest = tmp_path / "a.mp4"
    dest.with_name("a.mp4.part").write_bytes(data)  # complete .part of a run killed before the rename
    assert fetch(f"{server.base}/trainval/vidA.mp4", dest, backoff=0) == len(data) and dest.read_bytes() == data
    assert fetch("http://127.0.0.1:9/nothing", dest, expected_size=len(data)) == len(data)  # no request
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1:9/x: .*gave up after 2 retries \(re-run to resume\)"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x", retries=2, backoff=0.001, timeout=2)


def test_html_or_corrupt_annotations_are_fetched_again_once_fixed(tmp_path, server, capsys):
    """An error page served with 200 where the zip or file list is expected, or a zip with a damaged
    member: one line naming the URL, the download forgotten, so that a re-run (the mirror fixed)
    fetches it again instead of failing the same way for ever."""
    out = tmp_path / "ava"
    good_zip, good_list = server.files["/ava_v2.2.zip"], server.files["/annotations/ava_file_names_trainval_v2.1.txt"]
    damaged = bytearray(good_zip)
    at = damaged.index(b"ava_v2.2/ava_train_v2.2.csv") + 40  # inside the member's compressed bytes
    damaged[at:at + 8] = bytes(b ^ 0x55 for b in damaged[at:at + 8])
    html = b"<html><body>Service temporarily unavailable</body></html>\n"
    for zip_bytes, list_bytes, url, what in (
            (html, good_list, "/ava_v2.2.zip", "not a readable zip"),
            (bytes(damaged), good_list, "/ava_v2.2.zip", "not a readable zip"),
            (good_zip, html, "/annotations/ava_file_names_trainval_v2.1.txt", "expected a video file name")):
        server.files["/ava_v2.2.zip"], server.files["/annotations/ava_file_names_trainval_v2.1.txt"] = zip_bytes, list_bytes
        assert main(_args(server, out, "--splits", "train", "--on-error", "skip")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and what in err, err
        assert f"from {server.base}{url}; the download was deleted, a re-run fetches it again" in err
        assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
    server.files["/annotations/ava_file_names_trainval_v2.1.txt"] = good_list
    server.requests.clear()
    assert main(_args(server, out, "--splits", "train", "--on-error", "skip")) == 1  # vidC: 404
    assert "/annotations/ava_file_names_trainval_v2.1.txt" in server.paths_requested()
    assert len(os.listdir(out / "frames" / "vidA")) == 45


def test_another_annotations_url_is_fetched_not_the_recorded_download(tmp_path, server, capsys):
    """A zip of the same file name from a corrected --annotations-url is downloaded, not taken for
    the one recorded from the wrong URL."""
    out = tmp_path / "ava"
    server.files["/old/ava_v2.2.zip"] = annotations_zip({"ava_train_v2.2.csv": "vidA,1,0.1,0.1,0.5,0.9,1,0\n"})
    args = _args(server, out, "--splits", "val")
    wrong = [a.replace("/ava_v2.2.zip", "/old/ava_v2.2.zip") for a in args]
    assert main(wrong) == 2
    assert "expected one ava_val_v*.csv from the annotations zip, found none" in capsys.readouterr().err
    assert main(args + ["--on-error", "skip"]) == 1  # vidD corrupt, vidE not listed
    assert "/ava_v2.2.zip" in server.paths_requested() and len(os.listdir(out / "frames" / "vidA")) == 45


def test_first_failure_stops_a_running_download_at_once(tmp_path, server, capsys):
    """--on-error error with 2 workers: vidC's 404 stops vidA's slow download (its .part kept for the
    re-run), instead of being noticed only once vidA, earlier in the list, is done. The 404 is sent
    only once vidA's first bytes are on disk (no race), and vidA alone would take ~25 s."""
    movie = server.files["/trainval/vidA.mp4"] + b"\0" * 60_000  # trailing bytes: FFmpeg ignores them
    out = tmp_path / "ava"
    part = out / "downloads" / "videos" / "vidA.mp4.part"

    def slow(h, data):  # 500 bytes every 0.2 s, honouring Range
        start = int(re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "bytes=0-").group(1))
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        for i in range(start, len(data), 500):
            try:
                h.wfile.write(data[i:i + 500])
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.2 if slow.on else 0)

    def not_found_once_vid_a_started(h, data):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (part.is_file() and part.stat().st_size > 0):
            time.sleep(0.01)
        h.send_error(404, "Not Found")

    slow.on = True
    server.files["/trainval/vidA.mp4"] = movie
    server.custom["/trainval/vidA.mp4"] = slow
    server.custom["/trainval/vidC.mp4"] = not_found_once_vid_a_started
    t0 = time.monotonic()
    assert main(_args(server, out, "--splits", "train", "--workers", "2")) == 2
    assert time.monotonic() - t0 < 15  # stopped at the 404, not after vidA's ~25 s
    assert "vidC.mp4: HTTP 404" in capsys.readouterr().err
    kept = part.stat().st_size
    assert 0 < kept < len(movie)
    del server.custom["/trainval/vidC.mp4"]
    slow.on = False
    server.requests.clear()
    assert main(_args(server, out, "--splits", "train", "--on-error", "skip")) == 1
    assert ("/trainval/vidA.mp4", f"bytes={kept}-") in server.requests
    assert len(os.listdir(out / "frames" / "vidA")) == 45


def test_damaged_lists_states_and_folders_are_one_line(tmp_path):
    import zipfile

    from bmvit.data.prepare.ava import _extract_zip, _read_file_list, _State
    from bmvit.errors import DataError, OutputError

    cut = tmp_path / "list.txt"
    cut.write_text("vidA.mkv\nvidB.mp4\nvidC.")  # a list cut short mid-name by a server that sent no length
    with pytest.raises(DataError, match=r"list.txt:3: expected a video file name like abc123.mkv, got 'vidC.'"):
        _read_file_list(cut)
    state = tmp_path / "prepare_ava_state.json"
    state.write_text("[]")
    with pytest.raises(DataError, match="unreadable state file .*delete it to start over"):
        _State(state)
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ava_train_v2.2.csv", "")
    (tmp_path / "annotations").write_text("a file where the folder goes")
    with pytest.raises(OutputError, match="annotations: cannot write output"):
        _extract_zip(z, tmp_path / "annotations")


def test_a_file_list_sent_without_a_length_and_cut_short_is_fetched_again(server, tmp_path, capsys):
    path = "/annotations/ava_file_names_trainval_v2.1.txt"

    def cut(handler, data):  # no Content-Length, the connection closed after the first line: looks complete
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(data.split(b"\n")[0] + b"\n")
        handler.close_connection = True

    server.custom[path] = cut
    out = tmp_path / "out"
    assert main(_args(server, out, "--on-error", "skip")) == 1
    assert "came without a length and lacks" in capsys.readouterr().out
    assert not (out / "annotations" / "ava_file_names_trainval_v2.1.txt").exists()
    del server.custom[path]  # the server is healthy again: the next run fetches the whole list
    server.requests.clear()
    main(_args(server, out, "--on-error", "skip"))
    assert path in server.paths_requested()
    assert "vidB: 45 frames" in capsys.readouterr().out
