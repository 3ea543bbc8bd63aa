"""Frames of a video stored as one image file per frame (JPEG or PNG).

Contract: :class:`FrameFolder` maps ``(video_id, 1-based frame numbers)`` to a ``(T, h, w, 3)``
uint8 array of decoded frames passed through a clip-level resize callable (the clip transform's
``decode_resize``: ``(n, H, W, 3)`` -> ``(n, h, w, 3)``, one vectorized resize per clip). File names come from a template with the fields ``{video}`` and ``{frame}``,
relative to ``root``:

=======================  =====================================  =================
dataset                  template                               example
=======================  =====================================  =================
AVA layout (own data)    ``{video}/{video}_{frame:06d}.jpg``    ``v1/v1_000031.jpg``
UCF101-24 (ACT / MOC)    ``{video}/{frame:05d}.jpg``            ``Basketball/v_Basketball_g01_c01/00001.jpg``
JHMDB51-21 (ACT / MOC)   ``{video}/{frame:05d}.png``            ``brush_hair/<clip>/00001.png``
=======================  =====================================  =================

A frame number that repeats in one request (indices clamped at a video edge) is decoded once.
Frames are decoded into one uint8 buffer and resized together; no float copy is made. JPEGs are
decoded by ``simplejpeg`` when it is installed (libjpeg-turbo straight into the clip buffer: about
3x less CPU than Pillow's open + decode + copy) with the same pixels as Pillow, which is the
fallback (and the decoder of PNGs and of anything simplejpeg refuses). A clip read with
``mirror=True`` (the transform flips it) is decoded as BGR and each resized row's bytes reversed:
the pixels of a flip after the resize, for half a flip's CPU (``tests/test_loader_equality.py``).
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
import torch
from PIL import Image

from bmvit.errors import DataError

try:  # optional fast JPEG decoder; identical pixels to Pillow's (tests/test_frames_decode.py)
    import simplejpeg
except ImportError:  # pragma: no cover - e.g. a machine with only the base image
    simplejpeg = None

__all__ = ["ACT_TEMPLATE", "AVA_TEMPLATE", "FrameFolder"]

AVA_TEMPLATE = "{video}/{video}_{frame:06d}.jpg"
ACT_TEMPLATE = "{video}/{frame:05d}.jpg"

Resize = Callable[[np.ndarray], "np.ndarray | object"]  # (n, H, W, 3) uint8 -> (n, h, w, 3) uint8


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
        self._root_str = str(self.root)
        self._jpeg = template.lower().endswith((".jpg", ".jpeg"))
        self._counts: dict[str, int] = {}
        self._cache: dict[tuple[str, int], np.ndarray] | None = {} if cache else None

    def path(self, video: str, frame: int) -> Path:
        return self.root / self.template.format(video=video, frame=int(frame))

    def _path_str(self, video: str, frame: int) -> str:
        """:meth:`path` as a string, without ``Path`` objects (the per-frame hot path of :meth:`read`)."""
        return os.path.join(self._root_str, self.template.format(video=video, frame=frame))

    def folder(self, video: str) -> Path:
        return self.path(video, 1).parent

    def has_video(self, video: str) -> bool:
        return self.folder(video).is_dir()

    def num_frames(self, video: str) -> int:
        """The highest frame number among the files of ``video`` that match the template (one
        directory listing, cached): the video's extent, which clips are clamped to. It is the number
        of files when they run 1..n; a frame missing inside that range is an error when read."""
        n = self._counts.get(video)
        if n is None:
            folder = self.folder(video)
            if not folder.is_dir():
                raise DataError(f"{folder}: frames folder of video '{video}' not found")
            sentinel = 987654321  # longer than any zero padding: formats to exactly these digits
            rx = re.compile(re.escape(self.path(video, sentinel).name).replace(str(sentinel), r"(\d+)") + r"\Z")
            n = max((int(m.group(1)) for m in map(rx.match, os.listdir(folder)) if m), default=0)
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
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: cannot read frame ({e})") from None

    def read(self, video: str, frames: np.ndarray, resize: Resize, draft: tuple[int, int] | None = None,
             expect_size: tuple[int, int] | None = None, mirror: bool = False) -> np.ndarray:
        """``frames (T,)`` 1-based numbers -> ``(T, h, w, 3)`` uint8 through ``resize`` (per clip).

        ``draft`` ``(w, h)`` allows JPEG DCT-domain downscaling to at least that size;
        ``expect_size`` ``(H, W)`` checks the stored size (annotations are in its pixels);
        ``mirror``: the frames flipped left-right (the pixels of ``flip`` after ``resize``: JPEGs are
        decoded as BGR and each resized row's bytes reversed, one cheap pass).
        With ``cache`` each frame is resized alone and kept (the same pixels as a clip-level resize).
        """
        nums = [int(f) for f in frames.tolist()]
        uniq = list(dict.fromkeys(nums))  # first-seen order; clamped repeats decoded once
        if self._cache is not None:
            parts = []
            for f in uniq:
                arr = self._cache.get((video, f))
                if arr is None:
                    arr = np.asarray(resize(self._decode(self._path_str(video, f), draft, expect_size)[None]))[0]
                    self._cache[(video, f)] = arr
                parts.append(arr)
            self._check_shapes(video, uniq, parts)
            out = np.stack(parts)  # (U, h, w, 3)
            if mirror:
                out = torch.from_numpy(out).flip(2).numpy()  # (U, h, w, 3)
        else:
            bgr = mirror and self._jpeg and simplejpeg is not None  # simplejpeg decodes BGR at no extra cost
            out = np.asarray(resize(self._decode_clip(video, uniq, draft, expect_size, bgr)))  # (U, h, w, 3)
            if bgr:  # BGR rows reversed bytewise = RGB rows reversed pixelwise
                u, h, w, _ = out.shape
                out = torch.from_numpy(np.ascontiguousarray(out)).view(u, h, w * 3).flip(2).view(u, h, w, 3).numpy()
            elif mirror:
                out = torch.from_numpy(np.ascontiguousarray(out)).flip(2).numpy()
        if len(uniq) == len(nums):
            return out
        pos = {f: k for k, f in enumerate(uniq)}
        return out[[pos[f] for f in nums]]  # (T, h, w, 3)

    def _decode_clip(self, video: str, nums: list[int], draft: tuple[int, int] | None,
                     expect_size: tuple[int, int] | None, bgr: bool = False) -> np.ndarray:
        """Frames ``nums`` decoded into one new ``(U, H, W, 3)`` uint8 buffer (RGB, or BGR when ``bgr``);
        JPEGs that simplejpeg decodes go straight into it (one draft rule per frame size, no copy),
        any other frame through :meth:`_decode` (Pillow; it also names the error of a bad frame;
        with ``bgr`` its channels are reversed, a copy: meant for clips of simplejpeg-decoded JPEGs)."""
        colorspace = "BGR" if bgr else "RGB"
        fast = simplejpeg is not None and self._jpeg
        buf: np.ndarray | None = None
        last: tuple = ()  # (stored (h, w), decode keywords, decoded (h', w', 3)) of the last fast frame
        for k, f in enumerate(nums):
            path = self._path_str(video, f)
            if fast:
                data = _read_bytes(path)
                hw = _jpeg_size(data) if data is not None else None
                if hw is not None and (expect_size is None or hw == tuple(expect_size)):
                    if not last or last[0] != hw:
                        last = (hw, *_draft_scale(hw, draft))
                    if buf is None:
                        buf = np.empty((len(nums), *last[2]), np.uint8)
                    if buf.shape[1:] == last[2]:
                        try:
                            simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, buffer=buf[k], **last[1])
                            continue
                        except (ValueError, RuntimeError):
                            pass  # Pillow decodes it or names the error
            arr = self._decode(path, draft, expect_size)  # (H', W', 3)
            if buf is None:
                buf = np.empty((len(nums), *arr.shape), np.uint8)
            elif arr.shape != buf.shape[1:]:
                self._check_shapes(video, [nums[0], f], [buf[0], arr])
            buf[k] = arr[..., ::-1] if bgr else arr
        assert buf is not None  # nums is never empty (T >= 1)
        return buf

    def _check_shapes(self, video: str, nums: list[int], arrs: list[np.ndarray]) -> None:
        for f, a in zip(nums, arrs):
            if a.shape != arrs[0].shape:
                raise DataError(f"{self.path(video, f)}: frame decodes to {a.shape}, other frames of the clip "
                                f"to {arrs[0].shape} (frames of one video must share one size)")

    @staticmethod
    def _decode(path: Path | str, draft: tuple[int, int] | None, expect_size: tuple[int, int] | None) -> np.ndarray:
        """One frame file -> ``(H, W, 3)`` uint8 RGB at its stored size (or the JPEG draft size)."""
        if simplejpeg is not None and str(path)[-4:].lower() in (".jpg", "jpeg"):
            arr = _decode_simplejpeg(str(path), draft, expect_size)
            if arr is not None:
                return arr
        path = Path(path)
        try:
            with Image.open(path) as im:
                if expect_size is not None and (im.size[1], im.size[0]) != tuple(expect_size):
                    raise DataError(f"{path}: frame is {im.size[0]}x{im.size[1]} (WxH) but the annotations give "
                                    f"{expect_size[1]}x{expect_size[0]}")
                if draft is not None and im.format == "JPEG":
                    im.draft("RGB", draft)
                if im.mode != "RGB":
                    im = im.convert("RGB")
                return np.asarray(im)
        except FileNotFoundError:
            raise DataError(f"{path}: frame not found") from None
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL: corrupt data, huge header
            raise DataError(f"{path}: cannot decode frame ({e})") from None


def _read_bytes(path: str) -> bytes | None:
    """The file's bytes; ``None`` when it cannot be read (Pillow's path then names the error)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, os.fstat(fd).st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from a JPEG header; ``None`` when simplejpeg cannot read it."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, RuntimeError):
        return None
    return h, w


def _draft_scale(hw: tuple[int, int], draft: tuple[int, int] | None) -> tuple[dict, tuple[int, int, int]]:
    """simplejpeg keywords and decoded ``(h, w, 3)`` for a stored ``(H, W)`` under Pillow's draft rule
    (DCT scale 1/2, 1/4 or 1/8 while both sides stay at least ``draft`` ``(w, h)``)."""
    h, w = hw
    s = 1
    if draft is not None:
        scale = min(w // draft[0], h // draft[1])
        s = next((v for v in (8, 4, 2) if scale >= v), 1)  # Pillow's rule; a frame smaller than draft: 1
    if s == 1:
        return {}, (h, w, 3)
    return {"min_width": -(-w // s), "min_height": -(-h // s)}, (-(-h // s), -(-w // s), 3)


def _decode_simplejpeg(path: str, draft: tuple[int, int] | None, expect_size: tuple[int, int] | None
                       ) -> np.ndarray | None:
    """``simplejpeg`` decode with Pillow's draft rule (:func:`_draft_scale`); ``None`` when it cannot
    decode the file (Pillow then decodes it or names the error)."""
    data = _read_bytes(path)
    hw = _jpeg_size(data) if data is not None else None
    if hw is None or (expect_size is not None and hw != tuple(expect_size)):
        return None  # Pillow's path decodes it, or raises the size / decode error
    kw, _ = _draft_scale(hw, draft)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **kw)  # (h, w, 3) uint8
    except (ValueError, RuntimeError):
        return None
