"""The fast clip path equals the reference path pixel for pixel (tolerance: max difference 0).

Reference (the loader before issue 15's work): every frame decoded by Pillow (with its JPEG draft
rule), one :func:`resize_frames` of the stack, then :class:`ClipTransform` flips the resized frames
itself. Fast path (:class:`KeyFrameClips` with a seed): simplejpeg decodes straight into one buffer,
and a clip the seed flips is decoded as BGR and mirrored by reversing each resized row's bytes
(``FrameFolder.read(mirror=True)``). Frames are generated textured noise (worst case for rounding).
"""

import pickle

import numpy as np
import pytest
import torch
from data_fixtures import AVA_LABEL_MAP, write_mp4
from PIL import Image

from bmvit.data.clips import AvaClips
from bmvit.data.sources import frame_folder as frames_mod
from bmvit.data.sources.frame_folder import FrameFolder
from bmvit.data.sources.video import VideoFrames
from bmvit.data.transforms import ClipTransform, resize_frames

W, H, N = 120, 68, 24  # not multiples of 8/16: partial JPEG blocks and chroma at the edges


def _texture(rng: np.random.Generator, f: int) -> np.ndarray:
    base = rng.integers(0, 255, (H // 4 + 2, W // 4 + 2, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((W, H), Image.BICUBIC)).astype(np.int16)
    return np.clip(big + rng.integers(-20, 20, (H, W, 3)) + f, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    """AVA layout: ``v1`` of N JPEG frames (frame 5 with junk bytes between two markers: simplejpeg's
    strict mode refuses it, Pillow decodes it, inside a fast clip), ``v2`` of N PNG frames, one CSV
    row per second."""
    root = tmp_path_factory.mktemp("ava_eq")
    rng = np.random.default_rng(0)
    for vid in ("v1", "v2"):
        (root / "frames" / vid).mkdir(parents=True)
        for f in range(1, N + 1):
            im, path = Image.fromarray(_texture(rng, f)), root / "frames" / vid / f"{vid}_{f:06d}.jpg"
            if vid == "v1":
                im.save(path, quality=90)
            else:  # a .jpg name Pillow reads as PNG: the Pillow path for the whole clip
                im.save(path, format="PNG")
    bad = root / "frames" / "v1" / "v1_000005.jpg"
    data = bad.read_bytes()
    sos = data.index(b"\xff\xda")
    bad.write_bytes(data[:sos] + b"\x00\x11" + data[sos:])  # libjpeg: "2 extraneous bytes", a warning
    assert FrameFolder._decode(bad, None, None).shape == (H, W, 3)  # Pillow decodes it
    (root / "annotations").mkdir()
    rows = [f"{v},{t:04d},0.1,0.2,0.5,0.9,1,0\n{v},{t:04d},0.4,0.1,0.9,0.7,3,1"
            for v in ("v1", "v2") for t in (900, 901, 902)]
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "annotations" / "label_map.pbtxt").write_text(AVA_LABEL_MAP)
    return root


def _pillow(path, draft) -> np.ndarray:
    with Image.open(path) as im:
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", draft)
        return np.asarray(im.convert("RGB"))


def _reference(ds: AvaClips, i: int, seed: int):
    """The pre-issue-15 clip of sample ``i``: Pillow decode, one resize, the transform's own flip."""
    kf = ds.table[i]
    idx = ds.frame_indices(kf.video_id, kf.timestamp)
    t = ds.transform
    stack = np.stack([_pillow(ds.source.path(kf.video_id, f), t.decode_size()) for f in idx.tolist()])
    small = resize_frames(stack, t.decode_hw(stack.shape[1:3]))
    return t(small, torch.from_numpy(kf.boxes), torch.from_numpy(kf.labels), seed)


@pytest.mark.parametrize("resize, size", [("square", 32), ("square", 16), ("keep_aspect", 24)])
def test_fast_clips_equal_reference_clips(ava, resize, size):
    """size 16 < half of 68: JPEGs DCT-scaled (draft) on both paths; keep_aspect resizes again after the flip."""
    t = ClipTransform(size=size, train=True, hflip_prob=0.5, color_jitter=0.4, box_jitter=0.05, resize=resize,
                      short_side=(20, 28))
    ds = AvaClips(ava / "frames", ava / "annotations" / "train.csv", ava / "annotations" / "label_map.pbtxt",
                  num_frames=8, stride=2, transform=t)  # clamped at both ends; key 1 reads frame 5
    flipped = 0
    for i in range(len(ds)):
        for seed in range(4):
            clip, target = ds[(i, seed)]
            want, boxes, labels, colour = _reference(ds, i, seed)
            assert clip.shape == want.shape
            assert int((clip.int() - want.int()).abs().max()) == 0  # the stated tolerance: none
            assert torch.equal(target["colour"], colour) and torch.equal(target["labels"], labels)
            flipped += t.flips(seed)
    assert 0 < flipped < 4 * len(ds)  # both paths (mirrored decode and plain) were compared


@pytest.mark.parametrize("fast", [True, False])
def test_every_read_path_mirrors_like_flip(ava, fast, monkeypatch):
    """BGR decode (simplejpeg), Pillow decode + flip (no simplejpeg), cached frames + flip."""
    if not fast:
        monkeypatch.setattr(frames_mod, "simplejpeg", None)
    t = ClipTransform(size=32)
    plain, cached = FrameFolder(ava / "frames"), FrameFolder(ava / "frames", cache=True)
    idx = np.array([1, 1, 4, 5, 9])
    want = torch.from_numpy(plain.read("v1", idx, t.decode_resize)).flip(2)
    for src in (plain, cached, cached):  # cached twice: the second read comes from the cache
        assert torch.equal(torch.from_numpy(src.read("v1", idx, t.decode_resize, mirror=True)), want)


def test_flips_is_the_draw_of_call():
    frames = torch.arange(2 * 4 * 6 * 3, dtype=torch.uint8).view(2, 4, 6, 3)
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    for resize in ("square", "keep_aspect"):
        t = ClipTransform(size=4, train=True, hflip_prob=0.5, resize=resize, short_side=(4, 4))
        seen = set()
        for seed in range(40):
            _, boxes, _, _ = t(frames, box, torch.ones(1, 2), seed)
            did = not torch.equal(boxes, box)
            assert t.flips(seed) == did
            seen.add(did)
            if not did:
                with pytest.raises(ValueError, match="mirrored"):
                    t(frames, box, torch.ones(1, 2), seed, mirrored=True)
        assert seen == {True, False}
    assert not ClipTransform(size=4).flips(0)  # evaluation never flips


def test_video_mirror_is_flip_and_the_reader_pickles(tmp_path):
    rng = np.random.default_rng(3)
    write_mp4(tmp_path / "v.mp4", [_texture(rng, f)[:64, :112] for f in range(12)], fps=30)
    src, t = VideoFrames(tmp_path), ClipTransform(size=32)
    idx = np.array([1, 3, 3, 7])
    want = torch.from_numpy(src.read("v", idx, t.decode_resize)).flip(2)
    assert torch.equal(torch.from_numpy(src.read("v", idx, t.decode_resize, mirror=True)), want)
    copy = pickle.loads(pickle.dumps(src))  # as DataLoader workers get it (spawn), after a read
    assert torch.equal(torch.from_numpy(copy.read("v", idx, t.decode_resize, mirror=True)), want)
