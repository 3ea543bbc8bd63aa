"""Fuzz: frames folders — missing, extra, corrupt, odd-sized and odd-mode frame files
(tests/fuzz/invariant.py). Through ``FrameFolder`` and, end to end, ``bmvit show`` (ground truth
rendered from a damaged AVA-layout dataset).
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image

from bmvit.data.sources.frame_folder import FrameFolder
from tests.data_fixtures import H, W, write_ava
from tests.fuzz.invariant import expect_ok_or_named_error, mutated_bytes, run_cli

N = 32  # frames of the fixture video (30 fps, frame 1 = second 900; key frame 901 = frame 31)
CONFIG = str(__import__("pathlib").Path(__file__).parents[2] / "configs" / "synthetic" / "tiny.yaml")
ROWS = ["vidA,0901,0.100,0.200,0.400,0.900,1,0", "vidA,0901,0.500,0.100,0.900,0.800,3,1"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return write_ava(tmp_path_factory.mktemp("frames_template"), videos={"vidA": N}, rows=ROWS)


def _image_bytes(size: tuple[int, int], mode: str, fmt: str) -> bytes:
    im = Image.new(mode, size)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def folder_damage(draw):
    """A list of (operation, frame number, payload) edits of the frames folder."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "corrupt", "odd_size", "odd_mode", "extra", "dir", "empty", "gap", "huge"]))
        f = draw(st.integers(1, N + 2))
        payload = None
        if op == "corrupt":
            payload = draw(st.integers(0, 2**32 - 1))
        elif op == "odd_size":
            payload = (draw(st.integers(1, 90)), draw(st.integers(1, 90)))
        elif op == "odd_mode":
            payload = draw(st.sampled_from([("L", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"),
                                            ("P", "PNG"), ("1", "PNG"), ("F", "TIFF"), ("RGB", "GIF")]))
        elif op == "huge":  # a header claiming a huge picture (Pillow's decompression-bomb guard)
            payload = draw(st.sampled_from([(30000, 30000), (200000, 1000)]))
        elif op == "extra":
            payload = draw(st.sampled_from(["notes.txt", "vidA_00001.jpg", "vidA_000001.jpeg", ".hidden.jpg",
                                            "vidA_9999999.jpg", "Thumbs.db"]))
        ops.append((op, f, payload))
    return ops


def _remove(path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _apply(folder, ops, rng_bytes) -> None:
    for op, f, payload in ops:
        path = folder / f"vidA_{f:06d}.jpg"
        if op in ("odd_size", "odd_mode", "empty", "huge"):
            _remove(path)
        if op == "delete":
            _remove(path)
        elif op == "corrupt" and path.is_file():
            path.write_bytes(rng_bytes(path.read_bytes(), payload))
        elif op == "odd_size":
            path.write_bytes(_image_bytes(payload, "RGB", "JPEG"))
        elif op == "odd_mode":
            mode, fmt = payload
            path.write_bytes(_image_bytes((W, H), mode, fmt))
        elif op == "extra":
            _remove(folder / payload)
            (folder / payload).write_bytes(b"x")
        elif op == "dir":
            _remove(path)
            path.mkdir()
        elif op == "empty":
            path.write_bytes(b"")
        elif op == "huge":
            from tests.fuzz.test_found_cases import _png_header

            path.write_bytes(_png_header(*payload))
        elif op == "gap":
            if path.is_file():
                path.rename(folder / f"vidA_{f + 100:06d}.jpg")


def _damage_bytes(data: bytes, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = bytearray(data)
    kind = seed % 3
    if kind == 0:
        return bytes(data[: int(rng.integers(0, len(data)))])  # truncated
    if kind == 1:
        for i in rng.integers(0, len(data), 4):  # flipped bytes (header or entropy data)
            data[i] ^= int(rng.integers(1, 256))
        return bytes(data)
    return bytes(rng.integers(0, 256, 64, dtype=np.uint8))  # garbage


def _resize(frames):
    """The clip transform's frame resize to 32 x 32 (frames (n, H, W, 3) uint8)."""
    from bmvit.data.transforms import resize_frames

    return resize_frames(frames, (32, 32))


def test_fuzz_frame_folder(fuzz, template, tmp_path):
    root = tmp_path / "frames"

    def check(args):
        ops, frames = args
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template / "frames", root)
        _apply(root / "vidA", ops, _damage_bytes)
        ff = FrameFolder(root)
        folder = root / "vidA"
        n, _ = expect_ok_or_named_error(lambda: ff.num_frames("vidA"), [folder])
        clip, _ = expect_ok_or_named_error(
            lambda: ff.read("vidA", np.asarray(frames), _resize, draft=(32, 32), expect_size=(H, W)), [folder])
        if clip is not None:
            clip = np.asarray(clip)
            assert clip.shape == (len(frames), 32, 32, 3) and clip.dtype == np.uint8
        if n is not None:  # the video's extent: the highest frame number present (a gap inside is read as missing)
            assert 0 < n and (folder / f"vidA_{n:06d}.jpg").exists()
            assert not any((folder / f"vidA_{f:06d}.jpg").exists() for f in range(n + 1, n + 200))

    frames = st.lists(st.integers(1, N), min_size=1, max_size=8)
    fuzz.run(st.tuples(folder_damage(), frames), check, "frames folder (FrameFolder)", 60)


def test_fuzz_frame_file_bytes(fuzz, template, tmp_path):
    """Byte-level damage to one JPEG frame."""
    good = (template / "frames" / "vidA" / "vidA_000031.jpg").read_bytes()
    folder = tmp_path / "frames" / "vidA"
    folder.mkdir(parents=True)
    path = folder / "vidA_000001.jpg"

    def check(data):
        path.write_bytes(data)
        clip, _ = expect_ok_or_named_error(
            lambda: FrameFolder(tmp_path / "frames").read("vidA", np.array([1]), _resize, expect_size=(H, W)), [path])
        if clip is not None:
            assert np.asarray(clip).shape == (1, 32, 32, 3)

    fuzz.run(mutated_bytes(good) | st.just(_image_bytes((8, 8), "RGB", "PNG")), check, "frame file bytes (JPEG)", 60)


def test_fuzz_show_cli_on_damaged_frames(fuzz, template, tmp_path):
    root = tmp_path / "data"

    def check(ops):
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root)
        _apply(root / "frames" / "vidA", ops, _damage_bytes)
        run_cli(["show", "--config", CONFIG, "--split", "train", "--num", "1", "--out", tmp_path / "show", f"data.root={root}",
                 "data.num_frames=4", "data.stride=8", "data.size=32", "data.val_csv=annotations/train.csv",
                 "data.hflip_swap=[]"],
                [root / "frames" / "vidA"])

    fuzz.run(folder_damage(), check, "bmvit show on frames (CLI)", 10)
