"""Frames of a video stored as one image file per frame (JPEG or PNG).

Contract: :class:`FrameFolder` maps ``(video_id, 1-based frame numbers)`` to a ``(T, h, w, 3)``
uint8 array of decoded frames, each passed through a resize callable (the clip transform's
``decode_resize``). File names come from a template with the fields ``{video}`` and ``{frame}``,
relative to ``root``:

=======================  =====================================  =================
dataset                  template                               example
=======================  =====================================  =================
AVA layout (own data)    ``{video}/{video}_{frame:06d}.jpg``    ``v1/v1_000031.jpg``
UCF101-24 (ACT / MOC)    ``{video}/{frame:05d}.jpg``            ``Basketball/v_Basketball_g01_c01/00001.jpg``
JHMDB51-21 (ACT / MOC)   ``{video}/{frame:05d}.png``            ``brush_hair/<clip>/00001.png``
=======================  =====================================  =================

A frame number that repeats in one request (indices clamped at a video edge) is decoded once.
JPEGs are decoded at reduced size when the target is at most half the stored size (Pillow
``draft``: DCT scaling, no quality loss beyond the resize). Errors name the file: a missing
frame, an undecodable (corrupt or truncated) frame, or a frame whose size differs from the size
the annotations were made for.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bmvit.errors import DataError

__all__ = ["ACT_TEMPLATE", "AVA_TEMPLATE", "FrameFolder"]

AVA_TEMPLATE = "{video}/{video}_{frame:06d}.jpg"
ACT_TEMPLATE = "{video}/{frame:05d}.jpg"

Resize = Callable[[Image.Image], Image.Image]


def _check_template(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if "frame" not in fields or not fields <= {"video", "frame"}:
        raise DataError(f"frame template {template!r}: must contain '{{frame...}}' and only the fields "
                        "'{video}' and '{frame}' (e.g. '{video}/{frame:05d}.jpg')")


class FrameFolder:
    """Per-frame image files under ``root`` named by ``template`` (module docstring)."""

    def __init__(self, root: str | Path, template: str = AVA_TEMPLATE, cache: bool = False) -> None:
        """``cache``: keep every decoded, resized frame in memory (small datasets; one resize per folder)."""
        _check_template(template)
        self.root = Path(root)
        self.template = template
        self._counts: dict[str, int] = {}
        self._cache: dict[tuple[str, int], np.ndarray] | None = {} if cache else None

    def path(self, video: str, frame: int) -> Path:
        return self.root / self.template.format(video=video, frame=int(frame))

    def folder(self, video: str) -> Path:
        return self.path(video, 1).parent

    def has_video(self, video: str) -> bool:
        return self.folder(video).is_dir()

    def num_frames(self, video: str) -> int:
        """Number of files of ``video`` that match the template (one directory listing, cached)."""
        n = self._counts.get(video)
        if n is None:
            folder = self.folder(video)
            if not folder.is_dir():
                raise DataError(f"{folder}: frames folder of video '{video}' not found")
            sentinel = 987654321  # longer than any zero padding: formats to exactly these digits
            rx = re.compile(re.escape(self.path(video, sentinel).name).replace(str(sentinel), r"\d+") + r"\Z")
            n = sum(1 for name in os.listdir(folder) if rx.match(name))
            if n == 0:
                raise DataError(f"{folder}: no frames named like {self.path(video, 1).name}")
            self._counts[video] = n
        return n

    def frame_size(self, video: str, frame: int = 1) -> tuple[int, int]:
        """``(H, W)`` of a stored frame (header only)."""
        path = self.path(video, frame)
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0]
        except FileNotFoundError:
            raise DataError(f"{path}: frame not found") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read frame ({e})") from None

    def read(self, video: str, frames: np.ndarray, resize: Resize, draft: tuple[int, int] | None = None,
             expect_size: tuple[int, int] | None = None) -> np.ndarray:
        """``frames (T,)`` 1-based numbers -> ``(T, h, w, 3)`` uint8, each frame through ``resize``.

        ``draft`` ``(w, h)`` allows JPEG DCT-domain downscaling to at least that size;
        ``expect_size`` ``(H, W)`` checks the stored size (annotations are in its pixels).
        """
        out: np.ndarray | None = None
        done: dict[int, int] = {}
        for k, f in enumerate(frames.tolist()):
            if f in done:
                out[k] = out[done[f]]
                continue
            arr = self._cache.get((video, f)) if self._cache is not None else None
            if arr is None:
                arr = self._decode(self.path(video, f), resize, draft, expect_size)
                if self._cache is not None:
                    self._cache[(video, f)] = arr
            if out is None:
                out = np.empty((len(frames),) + arr.shape, np.uint8)
            elif arr.shape != out.shape[1:]:
                raise DataError(f"{self.path(video, f)}: frame decodes to {arr.shape}, other frames of the clip "
                                f"to {out.shape[1:]} (frames of one video must share one size)")
            out[k] = arr
            done[f] = k
        assert out is not None  # frames is never empty (T >= 1)
        return out

    @staticmethod
    def _decode(path: Path, resize: Resize, draft: tuple[int, int] | None,
                expect_size: tuple[int, int] | None) -> np.ndarray:
        try:
            with Image.open(path) as im:
                if expect_size is not None and (im.size[1], im.size[0]) != tuple(expect_size):
                    raise DataError(f"{path}: frame is {im.size[0]}x{im.size[1]} (WxH) but the annotations give "
                                    f"{expect_size[1]}x{expect_size[0]}")
                if draft is not None and im.format == "JPEG":
                    im.draft("RGB", draft)
                if im.mode != "RGB":
                    im = im.convert("RGB")
                return np.asarray(resize(im))
        except FileNotFoundError:
            raise DataError(f"{path}: frame not found") from None
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated / corrupt image data
            raise DataError(f"{path}: cannot decode frame ({e})") from None
