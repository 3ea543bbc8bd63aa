"""Frame sources for inference: a video file, a folder of frames, a stream URL or camera, or an array.

:func:`open_source` picks the kind from its argument and returns a :class:`VideoSource`: iterating
it yields the frames in order as ``(H, W, 3)`` uint8 RGB numpy arrays, and ``info`` says what is
known up front (frame rate, size, frame count when the container records it). Decoding uses PyAV.
A source can be iterated once (streams cannot rewind); :meth:`VideoSource.reopen` gives a fresh
iterator for files, folders and arrays (used to render after predicting).

Every failure a user can cause — missing, empty, unreadable or corrupt input, no video stream, no
decodable frame — raises :class:`~bmvit.errors.DataError` with a one-line message naming the input.
Video frames are turned upright by the file's display rotation, as players show them
(:func:`bmvit.data.sources.video.display_turns`); ``info`` gives the stored size until the first
frame is decoded, the shown size after. Frames keep their stored pixels when those are not square
(anamorphic video: DV, HDV, DVD); ``info.sample_aspect`` (the container's sample aspect ratio,
turned with the frame) says how wide a pixel is shown, and renders are drawn at that shape. Time is ``frame index / fps``: a video file is read on a
constant-rate grid at its average rate (:func:`bmvit.inference.frame_grid.constant_rate`), so a
variable-rate video (phones lower the rate in low light) keeps its timing; a constant-rate one
reads frame for frame. Live
streams, and files given an ``fps`` override, are read frame for frame in decoding order.

A URL is a live stream (read at its own pace, once), except an ``http(s)://`` or ``ftp://`` URL
whose path ends in a video extension (:data:`VIDEO_EXTENSIONS`, e.g. ``https://host/clip.mp4?sig=...``):
that is a *remote file*, read like a local one (every key frame; re-read to render).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from os import PathLike
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bmvit.data.sources.video import VIDEO_EXTENSIONS as _VIDEO_EXTENSIONS
from bmvit.data.sources.video import display_turns, error_text, main_video_stream, upright
from bmvit.data.sources.video_end import stream_end
from bmvit.errors import ConfigError, DataError
from bmvit.inference.frame_grid import MAX_GAP_S, constant_rate  # noqa: F401  (MAX_GAP_S: importable here too)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = frozenset(f".{e}" for e in _VIDEO_EXTENSIONS)  # the video reader's: one list
_REMOTE_FILE_SCHEMES = ("http", "https", "ftp")
DEFAULT_FPS = 30.0
NETWORK_TIMEOUT_S = 20.0  # streams, cameras and remote files: seconds without an answer or data before giving up
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class VideoInfo:
    """What is known about a source before decoding it."""

    name: str  # what the user passed (path, URL or device), for messages and outputs
    kind: str  # "file" | "frames" | "stream" | "array"
    fps: float
    width: int
    height: int
    num_frames: int | None  # None when unknown (streams, some containers)
    warning: str | None = None  # set after reading: a file whose data ends before its metadata says
    sample_aspect: float = 1.0  # shown width / height of one pixel (SAR; 1: square pixels, e.g. 4/3 for HDV)


def sample_aspect(stream) -> float:
    """The sample aspect ratio a player applies to ``stream`` (PyAV), 1.0 when unset or absurd."""
    for owner in (stream, stream.codec_context):
        sar = getattr(owner, "sample_aspect_ratio", None)
        try:
            value = float(sar) if sar else 0.0
        except (TypeError, ValueError, ZeroDivisionError):
            value = 0.0
        if 0.1 <= value <= 10:  # 0/1 means unknown; anything outside this range is a broken header
            return value
    return 1.0


def is_remote_file(source: str) -> bool:
    """True for an ``http(s)://`` or ``ftp://`` URL whose path (query ignored) ends in a video extension."""
    s = str(source)
    if not _URL.match(s):
        return False
    parts = urlsplit(s)
    return parts.scheme.lower() in _REMOTE_FILE_SCHEMES and Path(parts.path).suffix.lower() in VIDEO_EXTENSIONS


def url_name(url: str) -> str:
    """The file name of a URL's path (``https://h/a/clip.mp4?x=1`` → ``clip.mp4``)."""
    return Path(urlsplit(url).path).name


def is_stream(source: str) -> bool:
    """True for live sources: URLs (``rtsp://``, ``http://host/live``, ...) other than remote files
    (:func:`is_remote_file`), camera devices (``/dev/video0``) and camera numbers (``0``, unless a
    file of that name exists); a ``file://`` URL is a file."""
    s = str(source)
    if s.startswith("file://") or is_remote_file(s):
        return False
    return bool(_URL.match(s)) or s.startswith("/dev/video") or (s.isdigit() and not Path(s).exists())


class VideoSource:
    """Base class: iterate for frames; ``info`` describes the source."""

    info: VideoInfo

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def reopen(self) -> "VideoSource":
        """A fresh source over the same input (files, folders, arrays); streams raise DataError."""
        raise DataError(f"{self.info.name}: a live stream cannot be read twice")

    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PyAVSource(VideoSource):
    """A video file, stream URL or camera device decoded with PyAV."""

    def __init__(self, name: str, kind: str = "file", fps: float | None = None,
                 timeout: float = NETWORK_TIMEOUT_S) -> None:
        import av

        self._name, self._kind, self._fps_override, self._timeout = name, kind, fps, timeout
        target, options, fmt = name, {}, None
        remote = is_remote_file(name)
        if kind == "file" and not remote:
            path = Path(name[len("file://"):] if name.startswith("file://") else name)
            if not path.exists():
                raise DataError(f"{path}: video not found")
            if path.is_file() and path.stat().st_size == 0:
                raise DataError(f"{path}: empty file (0 bytes), not a video")
            target = str(path)
        elif name.isdigit():  # camera number -> V4L2 device
            target, fmt = f"/dev/video{name}", "v4l2"
        elif name.startswith("/dev/video"):
            fmt = "v4l2"
        if kind == "stream" and name.startswith("rtsp://"):
            options = {"rtsp_transport": "tcp"}
        self._network = kind == "stream" or remote
        t0 = time.monotonic()
        try:
            self._container = av.open(target, format=fmt, options=options,
                                      timeout=self._timeout if self._network else None)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            what = "stream" if kind == "stream" else "video"
            # FFmpeg's RTSP demuxer reports its interrupted wait as invalid data: the clock says what it was
            waited = time.monotonic() - t0 >= 0.95 * self._timeout
            local = Path(target) if kind == "file" and not remote else None  # a local file: is its index missing?
            raise DataError(f"{name}: cannot open {what} ({self._why(e, waited, local)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DataError(f"{name}: no video stream in the file (is it an audio file, or an mp4 with no frames?)")
        stream = main_video_stream(self._container)
        if stream.codec_context is None:  # a video track whose codec FFmpeg does not know (damaged header)
            self._container.close()
            raise DataError(f"{name}: the video stream has no decodable codec (damaged or unsupported file)")
        stream.thread_type = "AUTO"
        rate = fps or stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = int(stream.frames) if stream.frames else None
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        self.info = VideoInfo(name, kind, float(rate) if rate else DEFAULT_FPS, width, height, frames,
                              sample_aspect=sample_aspect(stream))
        self._stream = stream
        self._grid_rate = Fraction(rate) if kind == "file" and not fps and rate else None  # constant_rate's fps
        self._end = stream_end(self._container, stream) if kind == "file" else None
        self._last_end: Fraction | None = None  # end (s after the stream start) of the last decoded frame
        self._used = False

    def _frames(self) -> Iterator:
        """Decoded frames, on the constant-rate grid for files (module docstring)."""
        frames = self._container.decode(self._stream)
        if self._grid_rate is None:
            return frames
        tb = self._stream.time_base
        start = self._stream.start_time or 0

        def timed():
            for f in frames:
                t = f.pts * tb if f.pts is not None and tb else None
                d = getattr(f, "duration", None)
                d = d * tb if d and tb else None
                if t is not None:
                    self._last_end = max(self._last_end or 0, t - start * tb + (d or 1 / self._grid_rate))
                yield f, t, d

        return constant_rate(timed(), self._grid_rate)

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        if self._used:
            raise DataError(f"{self._name}: source already read; use reopen()")
        self._used = True
        n, turns = 0, 0
        try:
            for frame in self._frames():  # a repeated frame (constant_rate) gives a new array each time
                if n == 0:
                    turns = display_turns(frame)  # phone videos: stored landscape + a display rotation
                arr = upright(frame.to_ndarray(format="rgb24"), turns)  # (H, W, 3) uint8, as players show it
                if n == 0 and (self.info.width, self.info.height) != (arr.shape[1], arr.shape[0]):
                    self.info.width, self.info.height = arr.shape[1], arr.shape[0]
                if n == 0 and turns % 2:  # a quarter turn: a pixel's shown width becomes its height
                    self.info.sample_aspect = 1.0 / self.info.sample_aspect
                n += 1
                yield arr
        except (av.error.FFmpegError, OSError, ValueError) as e:
            at = f"after {n} frames" if n else "before the first frame"
            hint = ""
            if is_remote_file(self._name) and not n and not isinstance(e, av.error.ExitError):
                hint = ("; if the file plays when downloaded, the server may not answer byte-range requests, which "
                        "an mp4 with its index at the end needs: download it first")
            raise DataError(f"{self._name}: video is corrupt or unreadable: decoding failed {at} "
                            f"({self._why(e)}){hint}") from None
        finally:
            self.close()
        if n == 0:
            raise DataError(f"{self._name}: no decodable video frames (empty or corrupt video)")
        self.info.num_frames = n
        if self._end is not None and self._last_end is not None and self._grid_rate:
            if self._last_end < self._end - 2 / self._grid_rate - Fraction(1, 20):  # more than rounding
                self.info.warning = (f"truncated video: data ends at {float(self._last_end):.3f} s, the metadata says "
                                     f"{float(self._end):.3f} s; the detections cover the frames that decode")

    def _why(self, e: BaseException, waited: bool = False, path: Path | None = None) -> str:
        """A PyAV error on one line; FFmpeg's time-out (its interrupt callback, or ``waited`` the whole
        time-out) in words; a local ``path`` lacking its MP4 index said to be cut short."""
        import av

        if self._network and (waited or isinstance(e, av.error.ExitError)):
            return f"nothing received for {self._timeout:g} s: time-out"
        return error_text(e, path)

    def reopen(self) -> VideoSource:
        if self._kind == "stream":
            return super().reopen()
        return PyAVSource(self._name, self._kind, self._fps_override, self._timeout)

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing twice or after a decoder error
            pass


def _number_order(path: Path) -> tuple:
    """Sort key of a frame file: its name with each run of digits compared as a number
    (``frame2.png`` before ``frame10.png``, as ``ffmpeg ... frame%d.png`` numbers them)."""
    parts = re.split(r"(\d+)", path.name)  # text, digits, text, ...: the digit runs are at odd places
    return tuple(int(t) if k % 2 else t for k, t in enumerate(parts)), path.name


def _numbering_gaps(files: list[Path]) -> str | None:
    """A warning when frame files numbered in one pattern (``cam_000001.jpg``, ...) skip numbers:
    they are read one after the other, so the times after a gap come early."""
    m = [re.fullmatch(r"(.*?)(\d+)", p.stem) for p in files]
    if len(files) < 2 or not all(m) or len({x.group(1) for x in m}) > 1:  # type: ignore[union-attr]
        return None
    nums = [int(x.group(2)) for x in m]  # type: ignore[union-attr]
    jumps = [k for k in range(1, len(nums)) if nums[k] != nums[k - 1] + 1]
    if not jumps:
        return None
    k = jumps[0]
    return (f"frame numbering jumps from {files[k - 1].name} to {files[k].name} ({len(jumps)} place(s)): the frames "
            f"are read one after the other, so the times after a jump are early")


class FrameFolder(VideoSource):
    """Image files in a folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), in file-name order with
    numbers compared as numbers (``frame9.png`` before ``frame10.png``): the AVA layout
    ``<vid>/<vid>_000001.jpg ...`` reads as one video."""

    def __init__(self, folder: str | Path, fps: float | None = None) -> None:
        from PIL import Image

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: frames folder not found")
        self.files = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()),
                            key=_number_order)
        if not self.files:
            raise DataError(f"{self.folder}: no frames ({', '.join(FRAME_EXTENSIONS)} files) in the folder")
        self._fps = fps
        try:
            with Image.open(self.files[0]) as im:
                width, height = im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{self.files[0]}: cannot read frame ({error_text(e)})") from None
        self.info = VideoInfo(str(self.folder), "frames", float(fps or DEFAULT_FPS), width, height, len(self.files),
                              _numbering_gaps(self.files))

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import Image

        for path in self.files:
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise DataError(f"{path}: cannot decode frame ({error_text(e)})") from None
            if arr.shape[:2] != (self.info.height, self.info.width):
                raise DataError(f"{path}: frame is {arr.shape[1]}×{arr.shape[0]}, the first frame of "
                                f"{self.folder} is {self.info.width}×{self.info.height}")
            yield arr

    def reopen(self) -> VideoSource:
        return FrameFolder(self.folder, self._fps)


class ArraySource(VideoSource):
    """Frames already in memory: an ``(N, H, W, 3)`` uint8 array or a sequence of ``(H, W, 3)`` arrays."""

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float | None = None, name: str = "<frames>") -> None:
        if isinstance(frames, np.ndarray) and frames.dtype != object and (frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8):
            raise DataError(f"{name}: frames must be an (N, H, W, 3) uint8 RGB array, got {frames.shape} {frames.dtype}"
                            f"{_array_hint(frames)}")
        if len(frames) == 0:
            raise DataError(f"{name}: no frames")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise DataError(f"{name}: frames must be (H, W, 3) uint8 RGB arrays, got {first.shape} {first.dtype}"
                            f"{_array_hint(first[None] if first.ndim == 3 else first)}")
        if 0 in first.shape:
            raise DataError(f"{name}: frames are {first.shape[1]}×{first.shape[0]} pixels; expected at least 1×1")
        self.frames = frames
        self.info = VideoInfo(name, "array", float(fps or DEFAULT_FPS), first.shape[1], first.shape[0], len(frames))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, f in enumerate(self.frames):
            f = np.asarray(f)
            if f.shape != (self.info.height, self.info.width, 3) or f.dtype != np.uint8:
                raise DataError(f"{self.info.name}: frame {i} is {f.shape} {f.dtype}, expected "
                                f"{(self.info.height, self.info.width, 3)} uint8")
            yield f

    def reopen(self) -> VideoSource:
        return self


def open_source(source: str | Path | np.ndarray | Sequence[np.ndarray], fps: float | None = None,
                timeout: float = NETWORK_TIMEOUT_S) -> VideoSource:
    """Open ``source``: a video file, a folder of frames, a stream URL / camera (see :func:`is_stream`),
    or frames in memory. ``fps`` overrides the container's rate (folders and arrays: default 30);
    ``timeout``: seconds a stream, camera or remote file may send nothing before it fails."""
    if isinstance(source, VideoSource):
        return source
    if fps is not None:
        try:
            rate = float(fps)
        except (TypeError, ValueError):
            rate = math.nan
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"fps: expected a positive frame rate or None, got {fps!r}")
        fps = rate
    if hasattr(source, "__array__") and not isinstance(source, np.ndarray):  # a torch tensor, a PIL image, ...
        try:
            source = np.asarray(source)
        except (TypeError, RuntimeError, ValueError) as e:  # a CUDA tensor, one that requires grad, ...
            raise DataError(f"frames: cannot read {type(source).__name__} as a numpy array ({error_text(e)}); "
                            "pass a CPU (N, H, W, 3) uint8 array") from None
    if isinstance(source, (np.ndarray, list, tuple)):
        return ArraySource(source, fps)
    if not isinstance(source, (str, PathLike, int)) or isinstance(source, bool):
        raise DataError(f"video: expected a path, URL, camera number, (N, H, W, 3) uint8 array or list of frames, "
                        f"got {type(source).__name__}")
    name = str(source)
    if is_stream(name):
        return PyAVSource(name, "stream", fps, timeout)
    if is_remote_file(name):
        return PyAVSource(name, "file", fps, timeout)
    path = Path(name)
    if path.is_dir():
        return FrameFolder(path, fps)
    return PyAVSource(name, "file", fps)


def _array_hint(frames: np.ndarray) -> str:
    """How to turn a common wrong frames array into ``(N, H, W, 3)`` uint8 RGB (empty when none applies)."""
    if frames.ndim == 3 and frames.shape[2] == 3:
        return "; one frame? pass frame[None]"
    if frames.ndim == 4 and frames.shape[3] == 4:
        return "; RGBA? pass frames[..., :3]"
    if frames.ndim == 3:
        return "; grayscale? pass np.repeat(frames[..., None], 3, axis=-1)"
    if frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype.kind == "f":
        return "; floats in [0, 1]? pass (frames * 255).round().astype(np.uint8)"
    if frames.ndim == 4 and frames.shape[3] == 3:
        return "; convert with frames.astype(np.uint8) after scaling to 0..255"
    return ""
