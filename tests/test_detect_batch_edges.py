"""`bmvit detect` on many inputs, the cases a real collection brings: an --out inside the input folder,
a cover image next to sub-folders of videos, an input replaced since it was done, an empty folder
named explicitly, a resume from another working directory, signed URLs, @lists from Windows editors,
file names that clash with the merged files, a named pipe, a full disk, a WORLD_SIZE without torchrun."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
import torch
from inference_fixtures import make_checkpoint, write_video
from PIL import Image

from bmvit.cli.main import main as bmvit
from bmvit.errors import OutputError
from bmvit.inference.batch import BatchRun
from bmvit.inference.batch_inputs import VideoInput, expand_inputs, input_key

torch.set_num_threads(1)


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


def _detect(ckpt, *args):
    return bmvit(["detect", *map(str, args), "--checkpoint", str(ckpt), "--no-progress"])


def test_an_out_inside_the_input_folder_is_not_read_back(tmp_path, ckpt):
    vids = tmp_path / "vids"
    vids.mkdir()
    for name in "ab":
        write_video(vids / f"{name}.mp4", n=12, width=48, height=32)
    for _ in range(2):  # the first run writes out/a/annotated.mp4 ...: the second must not take them as inputs
        assert _detect(ckpt, vids, "--out", vids / "out") == 0
        assert [e["id"] for e in _index(vids / "out")] == ["a", "b"]
    assert [e["status"] for e in _index(vids / "out")] == ["skipped", "skipped"]


def test_a_cover_image_next_to_folders_of_videos_is_a_collection(tmp_path):
    show = tmp_path / "show"
    (show / "clips").mkdir(parents=True)
    for name in "ab":
        write_video(show / "clips" / f"{name}.mp4", n=6, width=32, height=32)
    Image.new("RGB", (8, 8)).save(show / "cover.jpg")
    assert [i.id for i in expand_inputs([str(show)])] == ["a", "b"]
    frames = tmp_path / "frames"  # a frames folder stays one input, even with an empty sub-folder
    (frames / "thumbs").mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (8, 8)).save(frames / f"{k:06d}.jpg")
    assert [i.path for i in expand_inputs([str(frames)])] == [str(frames)]


def test_an_input_replaced_since_is_redone_and_the_path_may_be_spelled_otherwise(tmp_path, ckpt, monkeypatch):
    vids = tmp_path / "vids"
    vids.mkdir()
    write_video(vids / "a.mp4", n=30, width=48, height=32)
    write_video(vids / "b.mp4", n=12, width=48, height=32)
    out = tmp_path / "out"
    assert _detect(ckpt, vids, "--out", out, "--no-video") == 0
    assert [e["keyframes"] for e in _index(out)] == [3, 2]
    time.sleep(0.01)
    write_video(vids / "a.mp4", n=12, width=48, height=32)  # a shorter recording under the same name
    monkeypatch.chdir(tmp_path)  # and the inputs named relative to another working directory
    assert _detect(ckpt, "vids", "--out", out, "--no-video") == 0
    assert [(e["status"], e["keyframes"]) for e in _index(out)] == [("ok", 2), ("skipped", 2)]


def test_an_empty_folder_named_explicitly_is_a_failed_input(tmp_path, ckpt, capsys):
    write_video(tmp_path / "one.mp4", n=12, width=48, height=32)
    (tmp_path / "emptycam").mkdir()
    out = tmp_path / "out"
    assert _detect(ckpt, tmp_path / "one.mp4", tmp_path / "emptycam", "--out", out, "--no-video") == 1
    index = _index(out)
    assert [(e["id"], e["status"]) for e in index] == [("one", "ok"), ("emptycam", "failed")]
    assert str(tmp_path / "emptycam") in index[1]["error"]


def test_one_input_into_a_batch_out_is_refused(tmp_path, ckpt, capsys):
    write_video(tmp_path / "one.mp4", n=12, width=48, height=32)
    out = tmp_path / "out"
    assert _detect(ckpt, tmp_path / "one.mp4", tmp_path / "one.mp4", "--out", out, "--no-video") == 0  # a batch of one
    merged = (out / "detections.csv").read_text()
    capsys.readouterr()
    assert _detect(ckpt, tmp_path / "one.mp4", "--out", out, "--no-video") == 2
    assert "holds the outputs of a batch (index.jsonl)" in capsys.readouterr().err
    assert (out / "detections.csv").read_text() == merged


def test_signed_urls_are_one_input_across_runs():
    assert input_key("https://h/v/clip.mp4?sig=1&exp=2") == input_key("https://h/v/clip.mp4?sig=9") \
        == "https://h/v/clip.mp4"


def test_lists_with_a_byte_order_mark_or_not_in_utf8(tmp_path, ckpt, capsys):
    write_video(tmp_path / "one.mp4", n=6, width=32, height=32)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfone.mp4\r\n# comment\r\n")
    assert [(i.id, i.path) for i in expand_inputs([f"@{bom}"])] == [("one", str(tmp_path / "one.mp4"))]
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"one.mp4\ncaf\xe9.mp4\n")
    assert _detect(ckpt, f"@{latin}", "--out", tmp_path / "o") == 2
    assert f"error: {latin}:2: not UTF-8 text" in capsys.readouterr().err


def test_names_of_the_merged_files_are_not_video_ids(tmp_path):
    for name in ("index.jsonl", "detections.csv", "ok"):
        write_video(tmp_path / f"{name}.mp4", n=6, width=32, height=32)
    assert sorted(i.id for i in expand_inputs([str(tmp_path)])) == ["detections.csv_video", "index.jsonl_video", "ok"]


def test_a_named_pipe_in_a_folder_is_not_an_input(tmp_path):
    write_video(tmp_path / "ok.mp4", n=6, width=32, height=32)
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it for reading would block for ever
    assert [i.id for i in expand_inputs([str(tmp_path)])] == ["ok"]


def test_a_full_disk_stops_the_batch_instead_of_failing_inputs(tmp_path):
    inputs = [VideoInput("a", "a.mp4"), VideoInput("b", "b.mp4")]
    done = []

    def process(inp, folder, on_frame):
        done.append(inp.id)
        raise OutputError(f"{folder}/annotated.mp4: cannot write output (No space left on device)")

    with pytest.raises(OutputError, match="No space left"):
        BatchRun(tmp_path / "out", inputs, {}, ["detections.csv"]).run(process, progress=False)
    assert done == ["a"]


def test_write_mp4_says_the_disk_is_full(tmp_path, monkeypatch):
    import numpy as np

    from bmvit.inference import render

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render.av, "open", full)
    with pytest.raises(OutputError, match=r"clip.mp4: cannot write output \(No space left on device\)"):
        render.write_mp4(tmp_path / "clip.mp4", [np.zeros((8, 8, 3), np.uint8)], fps=10)


@pytest.mark.parametrize("env, what", [({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not"),
                                       ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected a whole number")])
def test_a_world_size_without_torchrun_is_one_line(tmp_path, ckpt, capsys, monkeypatch, env, what):
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    write_video(tmp_path / "one.mp4", n=6, width=32, height=32)
    assert _detect(ckpt, tmp_path / "one.mp4", "--out", tmp_path / "o") == 2
    assert what in capsys.readouterr().err
    assert bmvit(["train", "--config", "configs/synthetic/tiny.yaml", f"train.out_dir={tmp_path / 'run'}"]) == 2
    assert what in capsys.readouterr().err
