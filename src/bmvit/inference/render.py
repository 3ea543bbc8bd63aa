"""Draw boxes and action captions onto video frames and write them as an H.264 mp4.

Drawing uses Pillow's ``ImageDraw`` and encoding uses PyAV (libx264, yuv420p); frames are
``(H, W, 3)`` uint8 RGB numpy arrays throughout.
"""

from __future__ import annotations

import colorsys
import errno
import itertools
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bmvit.atomic import output_error
from bmvit.errors import BmvitError

Color = tuple[int, int, int]
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
_GOLDEN = 0.618033988749895


@dataclass
class FrameBoxes:
    """What to draw on one frame."""

    boxes: np.ndarray  # (N, 4) absolute pixel x1, y1, x2, y2 in the frame being drawn
    labels: list[str]  # N captions, e.g. "walk left 0.91, wave 0.55"
    colors: list[Color] | None = None  # per box; default: stable colour per index
    style: list[str] | None = None  # per box "solid" (prediction) or "dashed" (ground truth); default solid


def color_for(key: int) -> Color:
    """A stable, distinct, bright colour for a track/box id (golden-ratio hue stepping)."""
    r, g, b = colorsys.hsv_to_rgb((key * _GOLDEN) % 1.0, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _dashed_line(draw: ImageDraw.ImageDraw, p: np.ndarray, q: np.ndarray, color: Color, width: int) -> None:
    """Dashes (gap = dash length) from point ``p`` (2,) to ``q`` (2,)."""
    length = max(float(np.hypot(*(q - p))), 1e-6)
    dash = max(4.0, 3.0 * width)
    for s in np.arange(0.0, length, 2 * dash):
        a, b = p + (q - p) * (s / length), p + (q - p) * (min(s + dash, length) / length)
        draw.line([tuple(a), tuple(b)], fill=color, width=width)


def display_scale(width: int, height: int, min_width: int = 480, max_side: int = 1920) -> float:
    """How much a rendered ``width × height`` frame is enlarged: up to ``min_width`` wide (small
    inputs stay legible), but not past ``max_side`` on the long side (a 16×1200 frame at 480 wide
    would be taller than H.264 encodes); never shrunk."""
    w, h = max(width, 1), max(height, 1)
    return max(1.0, min(min_width / w, max_side / max(w, h)))


def draw_frame(frame: np.ndarray, fb: FrameBoxes, scale: float = 1.0, pixel_aspect: float = 1.0) -> np.ndarray:
    """Draw ``fb`` on ``frame`` ``(H, W, 3)`` uint8 RGB; returns a new ``(H*scale, W*scale*pixel_aspect, 3)``
    uint8 array: an anamorphic frame (``pixel_aspect`` ≠ 1, a video's sample aspect ratio) is drawn
    with square pixels, as players show it, so that captions are not stretched.

    Boxes are in input-frame pixels and are scaled with the frame. Each caption sits on a filled
    background in the box colour just above its box, moved inside the box when there is no room above
    and clamped inside the image. The font is Pillow's default font, sized for small frames.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise BmvitError(f"draw_frame expects an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    out_w, out_h = max(1, round(w * scale * pixel_aspect)), max(1, round(h * scale))
    img = Image.fromarray(frame)
    if (out_w, out_h) != (w, h):
        img = img.resize((out_w, out_h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, round(min(out_w, out_h) / 24)))
    width = max(1, round(min(out_w, out_h) / 160))  # box line width

    sx, sy = out_w / w, out_h / h
    boxes = np.asarray(fb.boxes, dtype=np.float64).reshape(-1, 4) * (sx, sy, sx, sy)  # (N, 4) output pixels
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        color = tuple(int(c) for c in fb.colors[i]) if fb.colors is not None else color_for(i)
        if fb.style is not None and fb.style[i] == "dashed":
            corners = np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)])  # (4, 2)
            for k in range(4):
                _dashed_line(draw, corners[k], corners[(k + 1) % 4], color, width)
        else:
            draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        label = fb.labels[i] if i < len(fb.labels) else ""
        if not label:
            continue
        l, t, r, b = draw.textbbox((0, 0), label, font=font)
        pad = 2
        tw, th = r - l + 2 * pad, b - t + 2 * pad
        tx = min(max(x1, 0.0), max(out_w - tw, 0))
        ty = y1 - th if y1 - th >= 0 else y1  # above the box, or just inside it at the top edge
        ty = min(max(ty, 0.0), max(out_h - th, 0))
        draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=color)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luma > 128 else (255, 255, 255)
        draw.text((tx + pad - l, ty + pad - t), label, fill=ink, font=font)
    return np.asarray(img, dtype=np.uint8).copy()


def write_mp4(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float, crf: int = 23) -> Path:
    """Write ``frames`` (each ``(H, W, 3)`` uint8 RGB, all the same size) as an H.264 (libx264, yuv420p) mp4.

    Odd widths/heights are padded to even by repeating the last row/column. The video is written to a
    temporary file in the same folder and renamed into place, so a half-written file is never left at
    ``path``. Raises :class:`BmvitError` naming ``path`` if there are no frames or encoding fails.
    """
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise BmvitError(f"{path}: no frames to write")
    if fps <= 0:
        raise BmvitError(f"{path}: fps must be positive, got {fps}")
    shape = np.shape(first)  # (H, W, 3)
    if len(shape) != 3 or shape[2] != 3:
        raise BmvitError(f"{path}: frames must be (H, W, 3) RGB, got {shape}")
    pad = ((0, shape[0] % 2), (0, shape[1] % 2), (0, 0))  # yuv420p needs even dims
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same folder: atomic rename
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            rate = Fraction(fps).limit_denominator(1001)
            stream = container.add_stream("libx264", rate=rate)
            stream.height, stream.width = shape[0] + pad[0][1], shape[1] + pad[1][1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for n, frame in enumerate(itertools.chain([first], it)):
                frame = np.asarray(frame)
                if frame.shape != shape or frame.dtype != np.uint8:
                    got = f"{frame.shape} {frame.dtype}"
                    raise BmvitError(f"{path}: frame {n} is {got}, expected {shape} uint8")
                frame = np.pad(frame, pad, mode="edge")  # (H even, W even, 3)
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts, vf.time_base = n, 1 / rate
                container.mux(stream.encode(vf))
            container.mux(stream.encode(None))  # flush the encoder
        os.replace(tmp, path)
    except BmvitError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # encoder or I/O failure
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS:  # the disk, not the frames: an OutputError
            raise output_error(path, e) from None
        raise BmvitError(f"{path}: could not write mp4: {e}") from e
    return path
