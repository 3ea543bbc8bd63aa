"""The fast JPEG path (simplejpeg) decodes the same pixels as Pillow, at full size and with DCT scaling."""

import numpy as np
import pytest
from PIL import Image

from bmvit.data.sources import frame_folder as frames_mod
from bmvit.data.sources.frame_folder import FrameFolder
from bmvit.errors import DataError


@pytest.mark.skipif(frames_mod.simplejpeg is None, reason="simplejpeg not installed")
@pytest.mark.parametrize("draft", [None, (256, 256), (120, 100), (60, 40), (600, 400)])
def test_simplejpeg_equals_pillow(tmp_path, draft, monkeypatch):
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (36, 60, 3), dtype=np.uint8)).resize((568, 320), Image.BICUBIC)
    path = tmp_path / "f.jpg"
    im.save(path, quality=90)
    fast = FrameFolder._decode(path, draft, (320, 568))
    monkeypatch.setattr(frames_mod, "simplejpeg", None)
    slow = FrameFolder._decode(path, draft, (320, 568))
    assert fast.shape == slow.shape and np.array_equal(fast, slow)
    if draft == (120, 100):
        assert fast.shape == (160, 284, 3)  # scale 1/2: both sides stay >= the draft size


def test_fast_path_errors_are_pillows(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"bad\.jpg: cannot decode frame"):
        FrameFolder._decode(path, None, None)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"bad\.jpg: frame is 8x8 \(WxH\) but the annotations give 9x8"):
        FrameFolder._decode(path, None, (8, 9))
    with pytest.raises(DataError, match=r"missing\.jpg: frame not found"):
        FrameFolder._decode(tmp_path / "missing.jpg", None, None)


def test_read_decodes_in_place_and_checks_sizes(tmp_path):
    """A clip read (in-place decode into one buffer, clamped repeats, one resize) equals per-frame
    Pillow decodes through the same resize; a frame of another size is a DataError naming it."""
    from bmvit.data.transforms import resize_frames

    rng = np.random.default_rng(1)
    (tmp_path / "v").mkdir()
    for f in range(1, 4):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "v" / f"v_{f:06d}.jpg")
    folder = FrameFolder(tmp_path)
    got = folder.read("v", np.array([1, 1, 2, 3]), lambda x: resize_frames(x, (20, 30)))
    want = resize_frames(np.stack([np.asarray(Image.open(tmp_path / "v" / f"v_{f:06d}.jpg").convert("RGB"))
                                   for f in (1, 1, 2, 3)]), (20, 30)).numpy()
    assert got.shape == (4, 20, 30, 3) and np.array_equal(got, want)
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(tmp_path / "v" / "v_000003.jpg")
    with pytest.raises(DataError, match=r"v_000003\.jpg: frame decodes to \(40, 64, 3\), other frames of the clip"):
        folder.read("v", np.array([1, 3]), lambda x: resize_frames(x, (20, 30)))
