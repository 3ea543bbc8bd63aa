"""`bmvit detect` on many inputs: folders, @lists, index.jsonl and the merged CSV, --on-error,
resuming after SIGKILL, --overwrite, and a 2-process torchrun (gloo) run equal to one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from inference_fixtures import REPO, make_checkpoint, write_video
from PIL import Image

from bmvit.cli.main import main as bmvit
from bmvit.errors import ConfigError
from bmvit.inference.batch import Entry, shard, write_merged
from bmvit.inference.batch_inputs import VideoInput, expand_inputs, is_collection

torch.set_num_threads(1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three small videos, a corrupt .mp4 and a non-video file."""
    d = tmp_path_factory.mktemp("videos")
    for name, n in (("a", 20), ("b", 35), ("c", 12)):
        write_video(d / f"{name}.mp4", n=n, width=64, height=48)
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (d / "notes.txt").write_text("not a video\n")
    return d


@pytest.fixture(scope="module")
def batch_out(folder, ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    rc = bmvit(["detect", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress"])
    assert rc == 1  # something failed
    return out


def test_folder_index_statuses_and_merged_csv(batch_out, folder, ckpt, tmp_path):
    index = _index(batch_out)
    assert [(e["id"], e["status"]) for e in index] == [("a", "ok"), ("b", "ok"), ("broken", "failed"), ("c", "ok")]
    assert set(index[0]) == {"id", "path", "status", "error", "keyframes", "actors", "seconds"}
    assert [e["keyframes"] for e in index if e["status"] == "ok"] == [2, 4, 2]  # 1/s at 10 fps
    bad = index[2]
    assert str(folder / "broken.mp4") in bad["error"] and bad["keyframes"] is None
    per_video = "".join((batch_out / v / "detections.csv").read_text() for v in "abc")
    merged = (batch_out / "detections.csv").read_text()
    assert merged == per_video and merged.count("\n") == 3 * sum(e["actors"] for e in index if e["actors"])
    assert {row.split(",")[0] for row in merged.splitlines()} == {"a", "b", "c"}
    # each video's outputs are those of a single-video run
    single = tmp_path / "single"
    assert bmvit(["detect", str(folder / "b.mp4"), "--checkpoint", str(ckpt), "--out", str(single),
                  "--no-video", "--no-progress"]) == 0
    assert (single / "detections.csv").read_text() == (batch_out / "b" / "detections.csv").read_text()
    one = json.loads((single / "detections.json").read_text())
    many = json.loads((batch_out / "b" / "detections.json").read_text())
    assert one["keyframes"] == many["keyframes"] and one["video"] == many["video"]


def test_explicit_non_video_and_list_file(folder, ckpt, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my videos\n{folder / 'c.mp4'}\n\nmissing.mp4\n")
    out = tmp_path / "out"
    rc = bmvit(["detect", f"@{lst}", str(folder / "notes.txt"), "--checkpoint", str(ckpt), "--out", str(out),
                "--no-video", "--no-progress"])
    assert rc == 1
    index = _index(out)
    assert [(e["id"], e["status"]) for e in index] == [("c", "ok"), ("missing", "failed"), ("notes", "failed")]
    assert "not found" in index[1]["error"] and str(tmp_path / "missing.mp4") in index[1]["error"]  # relative to the list
    assert "cannot open video" in index[2]["error"]
    err = capsys.readouterr().err
    assert "failed [notes]" in err and "Traceback" not in err


def test_on_error_stops_the_run(folder, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    rc = bmvit(["detect", str(folder / "a.mp4"), str(folder / "broken.mp4"), str(folder / "c.mp4"), "--checkpoint",
                str(ckpt), "--out", str(out), "--no-video", "--no-progress", "--on-error", "error"])
    assert rc == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and str(folder / "broken.mp4") in err[0]
    assert json.loads((out / "a" / "status.json").read_text())["status"] == "ok"
    assert not (out / "c").exists()  # stopped before it


def test_rerun_skips_complete_videos_and_checks_settings(batch_out, folder, ckpt, tmp_path):
    out = tmp_path / "out"
    args = ["detect", str(folder / "a.mp4"), str(folder / "c.mp4"), "--checkpoint", str(ckpt), "--out", str(out),
            "--no-progress"]
    assert bmvit(args) == 0
    assert (out / "a" / "annotated.mp4").exists()
    mtime = (out / "a" / "detections.json").stat().st_mtime_ns
    assert bmvit(args) == 0
    assert [e["status"] for e in _index(out)] == ["skipped", "skipped"]
    assert (out / "a" / "detections.json").stat().st_mtime_ns == mtime
    assert (out / "detections.csv").read_text() == "".join((batch_out / v / "detections.csv").read_text() for v in "ac")
    (out / "c" / "annotated.mp4").unlink()  # incomplete outputs: redone
    assert bmvit(args) == 0
    assert [e["status"] for e in _index(out)] == ["skipped", "ok"]
    assert bmvit(args + ["--threshold", "0.5"]) == 2  # other settings: not silently mixed
    assert bmvit(args + ["--threshold", "0.5", "--overwrite"]) == 0
    assert [e["status"] for e in _index(out)] == ["ok", "ok"]
    # a redo without the video removes the older annotated.mp4 (no file of other settings is left next to the
    # new detections); a run that wants the video then redoes it
    assert bmvit(args + ["--threshold", "0.5", "--overwrite", "--no-video"]) == 0
    assert not (out / "a" / "annotated.mp4").exists()
    assert bmvit(args + ["--threshold", "0.5"]) == 0
    assert (out / "a" / "annotated.mp4").exists()
    assert [e["status"] for e in _index(out)] == ["ok", "ok"]
    # the same inputs named by another path of the same files: still complete
    assert bmvit([str(p).replace(str(folder), str(folder) + "/.") for p in args] + ["--threshold", "0.5"]) == 0
    assert [e["status"] for e in _index(out)] == ["skipped", "skipped"]


def test_killed_run_resumes(folder, ckpt, tmp_path, batch_out):
    """SIGKILL once the first video is complete; the re-run skips it and finishes the rest."""
    d = tmp_path / "videos"
    d.mkdir()
    (d / "a.mp4").symlink_to(folder / "a.mp4")
    for name in ("b", "c"):  # long enough that the run is still going when killed
        write_video(d / f"{name}.mp4", n=150, width=64, height=48)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bmvit", "detect", str(d), "--checkpoint", str(ckpt), "--out", str(out),
           "--no-video", "--no-progress", "--fps-keyframes", "4"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "a" / "status.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "index.jsonl").exists() and not (out / "c" / "status.json").exists()  # killed mid-run
    assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
    assert [(e["id"], e["status"]) for e in _index(out)] == [("a", "skipped"), ("b", "ok"), ("c", "ok")]
    fresh = tmp_path / "fresh"
    assert bmvit(cmd[3:cmd.index("--out")] + ["--out", str(fresh)] + cmd[cmd.index("--out") + 2:]) == 0
    assert (out / "detections.csv").read_text() == (fresh / "detections.csv").read_text()
    assert not list(out.rglob("*.tmp"))


def test_torchrun_two_processes_equal_one(folder, ckpt, tmp_path, batch_out):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bmvit",
           "detect", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress"]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0  # the broken input: exit status 1 on each rank (torchrun reports it)
    assert (out / "index.jsonl").exists(), f"rank 0 wrote no index; torchrun said:\n{run.stderr[-4000:]}"
    strip = lambda index: [{k: v for k, v in e.items() if k != "seconds"} for e in index]  # noqa: E731
    assert strip(_index(out)) == strip(_index(batch_out))
    assert (out / "detections.csv").read_text() == (batch_out / "detections.csv").read_text()
    for v in "abc":
        assert (out / v / "detections.json").read_text() == (batch_out / v / "detections.json").read_text()
    assert "(2 ranks)" in run.stderr


def test_torchrun_on_error_error_stops_with_one_line(folder, ckpt, tmp_path):
    """--on-error error under torchrun: the rank with the bad input stops with its one-line error; the
    other rank does not crash waiting for it (it died in all_gather_object with a traceback) and
    finishes its share (inputs a, b, broken, c: rank 0 takes a, broken; rank 1 b, c)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bmvit",
           "detect", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress",
           "--on-error", "error"]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode != 0 and len(lines) == 1 and str(folder / "broken.mp4") in lines[0], run.stderr[-4000:]
    assert "[rank" not in run.stderr and not (out / "index.jsonl").exists()  # no index under 'error'
    assert all(json.loads((out / v / "status.json").read_text())["status"] == "ok" for v in "abc")


def test_expand_inputs_rules(tmp_path):
    (tmp_path / "x" / "deep").mkdir(parents=True)
    (tmp_path / "x" / "clip.MP4").write_bytes(b"")
    (tmp_path / "x" / "deep" / "clip.mkv").write_bytes(b"")
    (tmp_path / "x" / "readme.md").write_text("")
    frames = tmp_path / "x" / "cam1"
    frames.mkdir()
    Image.new("RGB", (8, 8)).save(frames / "000001.jpg")
    assert not is_collection(str(frames)) and is_collection(str(tmp_path / "x"))
    assert not is_collection(str(tmp_path / "x" / "deep" / "nothing")) and is_collection("@l.txt")
    got = expand_inputs([str(tmp_path / "x"), str(frames), str(tmp_path / "x" / "clip.MP4")])
    assert got == [VideoInput("cam1", str(frames)), VideoInput("clip", str(tmp_path / "x" / "clip.MP4")),
                   VideoInput("deep__clip", str(tmp_path / "x" / "deep" / "clip.mkv"))]
    assert shard(list(range(7)), 1, 3) == [1, 4]


@pytest.fixture()
def http_server(folder):
    """A local HTTP server for `folder` (the videos above) that answers byte ranges, as web servers
    and object stores do (FFmpeg seeks to an mp4's index at its end); yields its base URL."""
    import http.server
    import re
    import threading

    class Ranges(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = folder / self.path.split("?", 1)[0].lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            start = int(m.group(1)) if m else 0
            end = min(int(m.group(2)) if m and m.group(2) else len(data) - 1, len(data) - 1)
            self.send_response(206 if m else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if m:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            self.wfile.write(data[start:end + 1])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ranges)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_remote_files_are_read_like_local_files(http_server, batch_out, folder, ckpt, tmp_path):
    """An http URL of a video file is a file (every key frame, rendered), not a live stream; in a
    batch, remote files are inputs like paths (a 404 fails that input only)."""
    from bmvit.inference.video_source import is_remote_file, is_stream

    assert is_remote_file(f"{http_server}/b.mp4?sig=x%2F1") and not is_stream(f"{http_server}/b.mp4")
    assert is_stream(f"{http_server}/live") and is_stream("rtsp://127.0.0.1/cam.mp4")
    single = tmp_path / "single"
    assert bmvit(["detect", f"{http_server}/b.mp4?sig=1", "--checkpoint", str(ckpt), "--out", str(single),
                  "--no-progress"]) == 0
    assert (single / "detections.csv").read_text() == (batch_out / "b" / "detections.csv").read_text()
    assert (single / "annotated.mp4").stat().st_size > 0
    lst = tmp_path / "urls.txt"
    lst.write_text(f"{http_server}/a.mp4\n{http_server}/nothere.mp4\n{folder / 'c.mp4'}\n")
    out = tmp_path / "out"
    assert bmvit(["detect", f"@{lst}", "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress"]) == 1
    index = _index(out)
    assert [(e["id"], e["status"]) for e in index] == [("a", "ok"), ("nothere", "failed"), ("c", "ok")]
    assert "404" in index[1]["error"] and index[1]["path"] == f"{http_server}/nothere.mp4"
    assert (out / "a" / "detections.csv").read_text() == (batch_out / "a" / "detections.csv").read_text()
    # a re-run skips the remote file done before
    assert bmvit(["detect", f"@{lst}", "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress"]) == 1
    assert [e["status"] for e in _index(out)] == ["skipped", "failed", "skipped"]
    lst.write_text(f"file://{folder / 'c.mp4'}\nrtsp://127.0.0.1:9/live\n")  # a live stream in a list
    with pytest.raises(ConfigError, match=r"rtsp://127\.0\.0\.1:9/live: a live stream .* cannot be part of a batch"):
        expand_inputs([f"@{lst}"])
    assert expand_inputs([f"file://{folder / 'c.mp4'}", str(folder / "a.mp4")])[0] == VideoInput("c", str(folder / "c.mp4"))


def test_an_out_that_cannot_be_a_folder_is_one_line(folder, ckpt, tmp_path, capsys):
    """--out an existing file (batch and single input), or a file where a video's sub-folder goes."""
    (tmp_path / "file").write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "b").write_text("")
    for inputs, out, bad in (([str(folder)], tmp_path / "file", tmp_path / "file"),
                             ([str(folder / "a.mp4")], tmp_path / "file" / "x", tmp_path / "file" / "x"),
                             ([str(folder / "a.mp4"), str(folder / "b.mp4")], tmp_path / "run", tmp_path / "run" / "b")):
        rc = bmvit(["detect", *inputs, "--checkpoint", str(ckpt), "--out", str(out), "--no-video", "--no-progress"])
        assert rc == 2
        assert f"error: {bad}: cannot write output" in capsys.readouterr().err


def test_merged_files_clear_what_a_kill_mid_write_left(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "detections.csv").write_text("a,0900,0.1,0.1,0.5,0.5,1,0.9\n")
    stale = [tmp_path / ".index.jsonl.4242.0f07b064.tmp", tmp_path / ".detections.csv.4242.0f07b064.tmp"]
    for p in stale:
        p.write_text("half")
    write_merged(tmp_path, [VideoInput("a", "a.mp4")], [Entry("a", "a.mp4", "ok", None, 1, 1, 0.1)])
    assert not any(p.exists() for p in stale)
    assert (tmp_path / "detections.csv").read_text() == "a,0900,0.1,0.1,0.5,0.5,1,0.9\n"


def test_ids_of_non_latin_file_names(tmp_path):
    """Names in other scripts keep their letters (a folder of 会议.mp4, 走路.mp4 is not refused as two
    inputs mapping to one output folder); names without letters or digits get distinct ids."""
    names = ["会议.mp4", "走路.mp4", "Ωμέγα 2.mkv", "cafe\u0301.mov", "😀.mp4", "😎.mp4"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    got = {Path(v.path).name: v.id for v in expand_inputs([str(tmp_path)])}
    assert [got[n] for n in names[:4]] == ["会议", "走路", "Ωμέγα_2", "café"]
    assert len(set(got.values())) == len(names) and all(got[n].startswith("input_") for n in names[4:])
    assert expand_inputs([str(tmp_path)]) == expand_inputs([str(tmp_path)])  # stable across runs (resume)


def test_folder_of_videos_with_a_thumbnail_is_a_batch(tmp_path):
    """A folder of videos that also holds an image (a thumbnail, a poster) is a folder of videos,
    the image an ignored other file — not a one-frame 'frames folder' with the videos ignored."""
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.MKV").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "thumbnail.jpg")
    sub = tmp_path / "day2"
    sub.mkdir()
    (sub / "c.mp4").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(sub / "cover.png")
    logged = []
    assert is_collection(str(tmp_path))
    got = expand_inputs([str(tmp_path)], log=logged.append)
    assert [v.id for v in got] == ["a", "b", "c"] and "2 file(s)" in logged[0]
