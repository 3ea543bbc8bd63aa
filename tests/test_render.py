"""Rendering boxes/captions with Pillow and writing H.264 mp4s with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest

from bmvit.errors import BmvitError
from bmvit.inference.render import FrameBoxes, color_for, draw_frame, write_mp4

RED = (255, 0, 0)


def test_draw_frame_scales_output_and_boxes():
    frame = np.zeros((40, 60, 3), np.uint8)
    fb = FrameBoxes(boxes=np.array([[10.0, 20.0, 30.0, 35.0]]), labels=[""], colors=[RED])
    out = draw_frame(frame, fb, scale=2.0)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    assert tuple(out[50, 20]) == RED  # left edge x1 = 10 -> 20, mid-height
    assert tuple(out[40, 40]) == RED  # top edge y1 = 20 -> 40
    assert not out[50, 40].any()  # inside the box stays black
    assert frame.sum() == 0  # input untouched


def test_draw_frame_default_colours_and_dashed_style():
    frame = np.zeros((64, 64, 3), np.uint8)
    boxes = np.array([[5, 30, 25, 60], [35, 30, 60, 60]], dtype=np.float32)
    out = draw_frame(frame, FrameBoxes(boxes, ["", ""], style=["solid", "dashed"]))
    assert tuple(out[45, 5]) == color_for(0)
    edge = out[30:61, 35]  # left edge of the dashed box: some pixels drawn, some gaps
    drawn = (edge == color_for(1)).all(axis=1)
    assert drawn.any() and not drawn.all()


def test_caption_is_inside_image_for_box_touching_top():
    frame = np.zeros((48, 64, 3), np.uint8)
    fb = FrameBoxes(np.array([[40.0, 0.0, 64.0, 30.0]]), ["walk left 0.91, wave 0.55"], colors=[RED])
    out = draw_frame(frame, fb)
    caption = (out == RED).all(axis=2)  # filled caption background (and box outline)
    assert caption[0].all()  # band's top padding row: caption wider than the image is clamped to x = 0
    assert caption[:, 0].sum() > 8  # a filled band at the top, not just the box outline
    text = out.any(axis=2) & ~caption  # glyph pixels in another colour on the band
    assert text[:16].any() and not text[20:].any()


def test_color_for_is_stable_and_distinct():
    colours = [color_for(i) for i in range(10)]
    assert colours == [color_for(i) for i in range(10)]
    assert len(set(colours)) == 10
    assert all(all(0 <= c <= 255 for c in col) and max(col) == 255 for col in colours)


@pytest.mark.parametrize("w, h", [(66, 50), (65, 49)])
def test_write_mp4_round_trip(tmp_path, w, h):
    rgb = np.array([200, 60, 30], np.uint8)
    frames = [np.broadcast_to(rgb, (h, w, 3)).copy() for _ in range(12)]
    path = write_mp4(tmp_path / "sub" / "out.mp4", iter(frames), fps=12.5, crf=18)
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["out.mp4"]  # no temp file left
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 12
    assert decoded[0].shape == (50, 66, 3)  # odd sizes padded to even
    assert np.abs(decoded[5].reshape(-1, 3).mean(0) - rgb).max() < 8


def test_write_mp4_errors_name_the_path(tmp_path):
    with pytest.raises(BmvitError, match="empty.mp4"):
        write_mp4(tmp_path / "empty.mp4", iter([]), fps=25)
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8)]
    with pytest.raises(BmvitError, match="mixed.mp4"):
        write_mp4(tmp_path / "mixed.mp4", frames, fps=25)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
