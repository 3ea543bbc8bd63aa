"""Videos with a display rotation (phones filming upright) are read upright by every reader.

The fixture stores 64x48 landscape frames whose top-left quadrant is white, with a display
matrix that says "turn 90° clockwise" (what an iPhone writes for portrait video; PyAV reports
-90). Players show a 48x64 portrait picture with the white quadrant at the top right; `detect`,
`data.source=video`, `prepare frames` and the cut of `prepare ava --no-frames` must all see that.
"""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from bmvit.data.prepare.cut_video import cut_video  # noqa: E402
from bmvit.data.prepare.frames import Recipe, extract_frames  # noqa: E402
from bmvit.data.sources.video import VideoFrames, display_turns, upright  # noqa: E402
from bmvit.inference.video_source import open_source  # noqa: E402

W, H = 64, 48


def _write_rotated(path, degrees: int, n: int = 12) -> None:
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("PyAV too old to write a display matrix")
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "10"}
        s.set_display_rotation(degrees)
        for _ in range(n):
            a = np.full((H, W, 3), 20, np.uint8)
            a[: H // 2, : W // 2] = 235
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _bright_corner(img: np.ndarray) -> str:
    h, w = img.shape[:2]
    quads = {"top-left": img[: h // 2, : w // 2], "top-right": img[: h // 2, w // 2:],
             "bottom-left": img[h // 2:, : w // 2], "bottom-right": img[h // 2:, w // 2:]}
    return max(quads, key=lambda k: float(quads[k].mean()))


# PyAV's rotation (degrees counter-clockwise) -> shown size (H, W) and where the white quadrant lands
CASES = [(-90, (W, H), "top-right"), (90, (W, H), "bottom-left"), (180, (H, W), "bottom-right"), (0, (H, W), "top-left")]


def test_upright_turns_like_players():
    a = np.zeros((2, 3, 1), np.uint8)
    a[0, 0] = 1  # top-left
    assert upright(a, 3).shape == (3, 2, 1) and upright(a, 3)[0, 1, 0] == 1  # one turn clockwise: top-right
    assert upright(a, 1)[2, 0, 0] == 1  # counter-clockwise: bottom-left
    assert upright(a, 0) is a


@pytest.mark.parametrize("degrees,shape,corner", CASES)
def test_detect_source_is_upright(tmp_path, degrees, shape, corner):
    path = tmp_path / "phone.mp4"
    _write_rotated(path, degrees)
    with av.open(str(path)) as c:
        assert display_turns(next(c.decode(video=0))) == round(degrees / 90) % 4
    src = open_source(path)
    frames = list(src)
    assert len(frames) == 12
    assert frames[0].shape == (*shape, 3)
    assert (src.info.height, src.info.width) == shape
    assert _bright_corner(frames[5]) == corner


@pytest.mark.parametrize("degrees,shape,corner", CASES[:2])
def test_video_reader_is_upright(tmp_path, degrees, shape, corner):
    _write_rotated(tmp_path / "v.mp4", degrees)
    vf = VideoFrames(tmp_path, fps=30)
    assert vf.frame_size("v") == shape
    clip = vf.read("v", np.array([1, 3, 5]), resize=lambda x: x)
    assert clip.shape == (3, *shape, 3)
    assert _bright_corner(clip[1]) == corner


def test_prepare_frames_and_cut_are_upright(tmp_path):
    _write_rotated(tmp_path / "phone.mp4", -90)
    rep = extract_frames(tmp_path / "phone.mp4", tmp_path / "frames", Recipe(ext="png"))
    assert rep.frames == 12 and rep.size == [W, H] and rep.source_size == [W, H]
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "frames" / "phone" / "phone_000001.png"))
    assert first.shape == (W, H, 3) and _bright_corner(first) == "top-right"

    n, (h, w) = cut_video(tmp_path / "phone.mp4", tmp_path / "cut", Recipe(), "phone")
    assert (n, h, w) == (12, W, H)
    with av.open(str(tmp_path / "cut" / "phone.mp4")) as c:
        frame = next(c.decode(video=0))
        assert display_turns(frame) == 0  # the pixels are turned; no rotation left in the file
        assert _bright_corner(frame.to_ndarray(format="rgb24")) == "top-right"


def test_cut_with_a_folder_in_the_way_is_one_line(tmp_path):
    from bmvit.errors import OutputError

    _write_rotated(tmp_path / "phone.mp4", 0)
    (tmp_path / "cut" / "phone.mp4").mkdir(parents=True)
    with pytest.raises(OutputError, match="phone.mp4: cannot write output"):
        cut_video(tmp_path / "phone.mp4", tmp_path / "cut", Recipe(), "phone")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["phone.mp4"]  # no partial left


def test_a_quarter_turn_turns_the_sample_aspect_too(tmp_path):
    """An anamorphic (SAR 2:1) landscape video with a 90° display turn: shown 48 wide x 128 tall,
    so after the turn a pixel is shown half as wide as tall."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("PyAV too old to write a display matrix")
    from fractions import Fraction

    path = tmp_path / "turned_wide.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        s.set_display_rotation(-90)
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((H, W, 3), 90, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    src = open_source(str(path))
    frames = list(src)
    assert frames[0].shape == (W, H, 3) and (src.info.width, src.info.height) == (H, W)
    assert src.info.sample_aspect == 0.5
