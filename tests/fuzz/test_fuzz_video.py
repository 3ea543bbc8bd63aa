"""Fuzz: video files — truncated, bytes flipped, garbage, zero-length, duplicated chunks, over
several codecs / containers / frame rates / sizes (tests/fuzz/invariant.py). Through
``VideoFrames`` and ``bmvit prepare frames``.
"""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
from hypothesis import strategies as st

from bmvit.data.transforms import resize_frames
from bmvit.data.sources.video import VideoFrames
from tests.fuzz.invariant import expect_ok_or_named_error, mutated_bytes, run_cli

# (file name, codec, pix_fmt, frame rate, (W, H), frames)
VARIANTS = [("h264.mp4", "libx264", "yuv420p", 30, (64, 48), 36), ("mpeg4.avi", "mpeg4", "yuv420p", 25, (48, 32), 30),
            ("mjpeg.mkv", "mjpeg", "yuvj444p", 24, (33, 21), 20), ("vp9.webm", "libvpx-vp9", "yuv420p", 15, (32, 32), 15),
            ("ffv1.mkv", "ffv1", "yuv444p", 60, (17, 9), 40)]


def _encode(path, codec, pix_fmt, fps, size, n) -> bytes:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = size
        s.pix_fmt = pix_fmt
        if codec == "libx264":
            s.options = {"g": "8", "bf": "2"}
        for i in range(n):
            im = np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8) + rng.integers(0, 20, (size[1], size[0], 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path.read_bytes()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_variants")
    return {name: _encode(root / name, *spec) for name, *spec in VARIANTS}


def _resize(frames):
    return resize_frames(frames, (16, 16))


def test_fuzz_video_files(fuzz, videos, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()

    def check(args):
        name, data, frames = args
        for p in root.iterdir():
            p.unlink()
        stem, ext = name.split(".")
        path = root / name
        path.write_bytes(data)
        vf = VideoFrames(root, fps=30)
        n, _ = expect_ok_or_named_error(lambda: vf.num_frames(stem), [path])
        clip, _ = expect_ok_or_named_error(lambda: vf.read(stem, np.asarray(frames), _resize), [path, f"'{stem}'"])
        if clip is not None:
            assert n is not None and max(frames) <= n
            assert np.asarray(clip).shape == (len(frames), 16, 16, 3)

    variant = st.sampled_from(sorted(videos))
    strategy = variant.flatmap(lambda name: st.tuples(
        st.just(name), st.just(videos[name]) | mutated_bytes(videos[name]) | st.just(b""),
        st.lists(st.integers(1, 45), min_size=1, max_size=6)))
    fuzz.run(strategy, check, "video files (VideoFrames)", 60)


def test_fuzz_prepare_frames_cli(fuzz, videos, tmp_path):
    src = tmp_path / "in"

    def check(args):
        name, data = args
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        (src / name).write_bytes(data)
        out = tmp_path / "frames"
        shutil.rmtree(out, ignore_errors=True)
        rc, _, _ = run_cli(["prepare", "frames", "--videos", src, "--out", out, "--fps", "10"], [src / name])
        if rc == 0:
            assert any(out.rglob("*.jpg"))

    variant = st.sampled_from(sorted(videos))
    fuzz.run(variant.flatmap(lambda name: st.tuples(st.just(name), mutated_bytes(videos[name]))), check,
             "bmvit prepare frames (CLI)", 15)
