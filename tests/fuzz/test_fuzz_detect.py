"""Fuzz: ``bmvit detect`` on damaged inputs (video files, frames folders) with a tiny untrained
checkpoint (tests/fuzz/invariant.py). The verb either writes its outputs or prints one error
line naming the input.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import strategies as st

from bmvit.config import load_config
from bmvit.engine.checkpoint import save_weights
from bmvit.models.build import build_detector
from tests.fuzz.invariant import mutated_bytes, run_cli
from tests.fuzz.test_fuzz_video import VARIANTS, _encode


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect_ckpt")
    cfg = load_config(None, ["model.backbone=mvit_tiny", "model.head_hidden=16", "data.num_frames=4", "data.stride=2",
                             "data.size=32", f"data.label_map={root / 'labels.pbtxt'}", "model.kv_stride=[1, 4, 4]"])
    (root / "labels.pbtxt").write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n')
    model = build_detector(cfg.model, cfg.data, 2, load_pretrained=False)
    path = save_weights(root / "model.safetensors", model, cfg, {"labels": {"1": "a", "2": "b"}})
    video = _encode(root / "clip.mp4", *VARIANTS[0][1:])
    return path, video


def _detect_ok_or_named_error(tmp_path, src, ckpt, named) -> None:
    """``bmvit detect SRC`` into a fresh ``tmp_path/out``: exit 0 with the outputs written, or one error
    line naming one of ``named`` (checked by ``run_cli``)."""
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    rc, _, err = run_cli(["detect", src, "--checkpoint", ckpt, "--out", out, "--no-video", "--no-progress",
                          "--threads", "1"], named)
    if rc == 0:
        assert (out / "detections.json").is_file() and (out / "detections.csv").is_file(), err


def test_fuzz_detect_video_cli(fuzz, tiny_checkpoint, tmp_path):
    ckpt, video = tiny_checkpoint

    def check(data):
        src = tmp_path / "clip.mp4"
        src.write_bytes(data)
        _detect_ok_or_named_error(tmp_path, src, ckpt, [src])

    fuzz.run(st.just(video) | mutated_bytes(video), check, "bmvit detect on video files (CLI)", 8)


def test_fuzz_detect_frames_folder_cli(fuzz, tiny_checkpoint, tmp_path):
    """``bmvit detect`` on a damaged frames folder (missing, extra, corrupt, odd-sized, odd-mode files)."""
    from tests.data_fixtures import frame_image
    from tests.fuzz.test_fuzz_frames import _apply, _damage_bytes, folder_damage

    ckpt, _ = tiny_checkpoint
    template = tmp_path / "template" / "vidA"
    template.mkdir(parents=True)
    from PIL import Image

    for f in range(1, 41):
        Image.fromarray(frame_image(f)).save(template / f"vidA_{f:06d}.jpg", quality=90)

    def check(ops):
        folder = tmp_path / "vidA"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(template, folder)
        _apply(folder, ops, _damage_bytes)
        _detect_ok_or_named_error(tmp_path, folder, ckpt, [folder])

    fuzz.run(folder_damage(), check, "bmvit detect on frames folders (CLI)", 8)


def test_fuzz_detect_damaged_checkpoint_cli(fuzz, tiny_checkpoint, tmp_path):
    """``bmvit detect`` with a damaged ``model.safetensors``."""
    ckpt, video = tiny_checkpoint
    src = tmp_path / "clip.mp4"
    src.write_bytes(video)
    good = ckpt.read_bytes()

    def check(data):
        bad = tmp_path / "model.safetensors"
        bad.write_bytes(data)
        _detect_ok_or_named_error(tmp_path, src, bad, [bad])

    fuzz.run(mutated_bytes(good, max_ops=2), check, "bmvit detect with damaged checkpoints (CLI)", 10)
