"""Frames read straight from video files with PyAV, on a frame-rate grid (a fixed rate, or each video's own).

Contract: :class:`VideoFrames` is a frame source (see :mod:`bmvit.data.clips`) for
``<root>/<video_id>.<ext>`` (the extension in any case: ``.mp4`` or ``.MP4``). Frame number ``i``
(1-based) is the picture on screen at time ``t_i = offset + (i - 1) / fps`` seconds after the
stream's start: the decoded frame with the largest presentation time ``<= t_i`` (the first frame
for a ``t_i`` before it). This is a pure function of the file, whatever its own frame rate (25,
29.97, 60 fps or variable) — and it is the rule :mod:`bmvit.data.prepare.frames` extracts frames
with, so the video reader and the frames folder written by ``bmvit prepare frames`` return the
same pixels for the same frame numbers (identical with ``--ext png``; JPEG adds its compression
error).

With ``fps=None`` the grid is each video's own frame rate (its average rate): frame ``i`` is then
the video's ``i``-th frame, as in frames extracted at the native rate (UCF101-24 at 25 fps and
JHMDB at 30 fps, whose ACT annotations number those frames).

A video has ``ceil((E - offset) * fps)`` frames, ``E`` the stream's end (last frame time + its
duration) from the container's metadata: the video track's own (an audio track that lasts longer
does not count; :mod:`~bmvit.data.sources.video_end`), else found by decoding once. Reading
seeks to the key frame before the first needed frame and decodes forward to the last one. Errors
name the file: missing video, no video stream, undecodable data, and a *truncated* file (the data
ends before the needed time that the metadata promises).

Frames are returned as players show them: a display-matrix rotation in the file (phones store
video filmed upright as landscape frames plus a 90° turn) is applied in quarter turns, as FFmpeg's
``autorotate`` does (:func:`display_turns`); sizes are those of the turned frames. Rotations that
are not a multiple of 90° are rounded to the nearest quarter turn, and display-matrix mirroring
is not applied. PyAV < 13 does not report the rotation: frames are then returned as stored.

PyAV is imported when a video is first opened, so that importing this module (and the training
engine) works where PyAV is not installed.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from bmvit.data.sources.video_end import decoded_end, stream_end
from bmvit.errors import DataError

__all__ = ["VIDEO_EXTENSIONS", "GridTimes", "VideoFrames", "display_turns", "error_text", "frame_count", "frame_time",
           "grid_frames", "iter_grid_frames", "main_video_stream", "upright"]

# Looked up in this order; the common containers, then camcorders' MPEG-TS (.mts/.m2ts), iTunes
# (.m4v), phones (.3gp) and older formats: every extension `bmvit detect` reads (any case).
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mts", "m2ts", "ts", "mpg", "mpeg", "3gp", "flv",
                    "wmv", "ogv")

Resize = Callable[[np.ndarray], "np.ndarray | object"]  # (n, H, W, 3) uint8 -> (n, h, w, 3) uint8


def display_turns(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise (0-3) that show a decoded ``frame`` as players do: FFmpeg
    attaches the stream's display matrix to each frame, and PyAV (>= 13) reports its rotation in
    degrees counter-clockwise (an iPhone portrait video: -90, i.e. one turn clockwise)."""
    degrees = getattr(frame, "rotation", 0) or 0
    return round(degrees / 90) % 4


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video stream a player shows: FFmpeg's choice (``av_find_best_stream``), which skips cover
    art and thumbnails stored as extra video streams (``attached_pic``) and prefers the main track
    when a file has several; the first video stream if FFmpeg names none. The container must have
    at least one video stream."""
    try:
        best = container.streams.best("video")
    except (AttributeError, ValueError):  # no best(): an old PyAV
        best = None
    return best if best is not None else container.streams.video[0]


def upright(arr: np.ndarray, turns: int) -> np.ndarray:
    """``(H, W, C)`` ``arr`` turned ``turns`` quarter turns counter-clockwise (contiguous)."""
    return np.ascontiguousarray(np.rot90(arr, turns)) if turns % 4 else arr


def _fraction(x: float | str | Fraction) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(str(x))


def frame_time(i: int, fps: int | Fraction, offset: float | Fraction = 0) -> Fraction:
    """Time in seconds after the stream start of 1-based grid frame ``i``."""
    return _fraction(offset) + Fraction(i - 1) / _fraction(fps)


def frame_count(end: Fraction, fps: int | Fraction, offset: float | Fraction = 0,
                stop: float | Fraction | None = None) -> int:
    """Number of grid frames with ``t_i < end`` (and ``t_i < stop`` when given)."""
    limit = end if stop is None else min(end, _fraction(stop))
    return max(0, math.ceil((limit - _fraction(offset)) * _fraction(fps)))


def error_text(e: BaseException, path: Path | None = None) -> str:
    """An exception from opening or decoding a video on one line, without PyAV's ``[Errno N]``. When
    ``path`` is an MP4/MOV-family file without its index (``moov``: most recorders write it last, so a
    file cut short or still being written has none), or FFmpeg met the end of the file while reading
    the header, it says so."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", " ".join(str(e).split())) or type(e).__name__
    if (type(e).__name__ == "EOFError" and type(e).__module__.startswith("av")) or (path and _lacks_mp4_index(path)):
        text += "; the file ends before its header or index: cut short, or still being written?"
    return text


def _lacks_mp4_index(path: Path) -> bool:
    """True for an ISO media file (first box ``ftyp``: .mp4, .mov, .m4v, .3gp) whose top-level boxes
    end, or run past the end of the file, before a ``moov`` box; False otherwise or unreadable."""
    try:
        with open(path, "rb") as f:
            size, pos, first = os.fstat(f.fileno()).st_size, 0, True
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if first and kind != b"ftyp":
                    return False
                if kind == b"moov":
                    return False
                if n == 1 and len(head) == 16:  # 64-bit box size
                    n = int.from_bytes(head[8:16], "big")
                if n == 0 or n < 8:  # "to the end of the file", or damaged: no moov after it
                    return True
                pos, first = pos + n, False
            return not first
    except OSError:
        return False


def _av():
    """The PyAV module (imported on first use; a clear error where it is missing)."""
    try:
        import av
    except ImportError:
        raise DataError("reading video files needs PyAV (pip install av); data.source=frames reads "
                        "frame folders without it") from None
    return av


class GridTimes(Sequence[Fraction]):
    """The times of grid frames ``1..n`` (:func:`frame_time`), computed when read: a video whose
    metadata gives no end (or a corrupt, huge one) costs no memory for its grid."""

    def __init__(self, n: int, fps: int | Fraction, offset: float | Fraction = 0) -> None:
        self.n, self.fps, self.offset = n, _fraction(fps), _fraction(offset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.n))]
        if k < 0:
            k += self.n
        if not 0 <= k < self.n:
            raise IndexError(k)
        return self.offset + Fraction(k) / self.fps


class _Stream:
    """An open video stream with exact times (seconds as Fractions after the stream start)."""

    def __init__(self, path: Path, threads: int, turns: int | None = None) -> None:
        self.path, self.threads = path, threads
        self._open()
        s = self.stream
        self.decode_error = ""
        self.tb = Fraction(s.time_base.numerator, s.time_base.denominator) if s.time_base else Fraction(1, 1_000_000)
        self.start = s.start_time if s.start_time is not None else 0
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self.frame_dur = Fraction(rate.denominator, rate.numerator) if rate else Fraction(1, 30)
        self._turns = turns  # None: found from the first frame when needed

    def _open(self) -> None:
        """Open the container at its start (``fresh``) and pick the video stream."""
        av, path = _av(), self.path
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes), not a video")
        try:
            self.container = av.open(str(path))
        except FileNotFoundError:
            raise DataError(f"{path}: video not found") from None
        except av.FFmpegError as e:
            raise DataError(f"{path}: cannot open video ({error_text(e, path)})") from None
        except (UnicodeDecodeError, ValueError) as e:  # PyAV decoding damaged metadata text
            raise DataError(f"{path}: cannot open video: damaged metadata ({type(e).__name__}: {e})") from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"{path}: no video stream")
        s = self.stream = main_video_stream(self.container)
        if s.codec_context is None:  # a video track whose codec FFmpeg does not know (damaged header)
            self.container.close()
            raise DataError(f"{path}: the video stream has no decodable codec (damaged or unsupported file)")
        s.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        s.codec_context.thread_count = self.threads
        self.fresh = True  # nothing read yet: positioned at the first frame

    def __enter__(self) -> _Stream:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def time(self, frame: av.VideoFrame) -> Fraction:
        return (frame.pts - self.start) * self.tb

    def duration_of(self, frame: av.VideoFrame) -> Fraction:
        d = getattr(frame, "duration", None)
        return d * self.tb if d else self.frame_dur

    def metadata_end(self) -> Fraction | None:
        """:func:`~bmvit.data.sources.video_end.stream_end` of this stream."""
        return stream_end(self.container, self.stream)

    @property
    def turns(self) -> int:
        """:func:`display_turns` of the stream, from its first frame (decoded once, in a second
        container, so that this one's position is untouched); 0 if nothing decodes."""
        if self._turns is None:
            av = _av()
            self._turns = 0
            try:
                with av.open(str(self.path)) as c:
                    for frame in c.decode(main_video_stream(c)):
                        self._turns = display_turns(frame)
                        break
            except (av.FFmpegError, OSError, ValueError, IndexError):
                pass  # reading the frames themselves names the error
        return self._turns

    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames as shown (after :attr:`turns`)."""
        cc = self.stream.codec_context
        return (cc.width, cc.height) if self.turns % 2 else (cc.height, cc.width)

    def rgb(self, frame: av.VideoFrame, reformatter=None) -> np.ndarray:
        """``frame`` as ``(H, W, 3)`` uint8 RGB, upright; ``reformatter`` (a PyAV
        ``VideoReformatter``) reuses one conversion context across calls."""
        if reformatter is not None:
            frame = reformatter.reformat(frame, format="rgb24")
        return upright(frame.to_ndarray(format="rgb24"), self.turns)

    def seek(self, t: Fraction) -> None:
        """Position at the key frame before ``t``; ``t <= 0``: at the first frame, by opening the
        file again (seeking to the start is unreliable in some formats: in MPEG-TS it can land past
        the first frames, or past the end of a short file)."""
        av = _av()
        if t <= 0:
            if not self.fresh:
                self.container.close()
                self._open()
            return
        target = math.floor(self.start + t / self.tb)
        self.fresh = False
        try:
            self.container.seek(max(target, self.start), stream=self.stream, backward=True, any_frame=False)
        except av.FFmpegError as e:
            raise DataError(f"{self.path}: cannot seek to {float(t):.3f} s ({e})") from None

    def frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; undecodable data ends the stream (``decode_error``
        keeps why), so that a cut file reads as truncated at the last good frame."""
        av = _av()
        self.decode_error, self.fresh = "", False
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None:
                    yield frame
        except av.FFmpegError as e:
            self.decode_error = str(e)


def iter_grid_frames(stream: _Stream, times: list[Fraction], truncated_at: Fraction | None = None,
                     frames: Iterator[av.VideoFrame] | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(k, frame)`` for each of the increasing ``times``: the frame on screen at ``times[k]``.

    Decodes from wherever the stream is positioned (or takes ``frames``, decoded from there). Times past the last decoded frame's end
    raise a truncation DataError when ``truncated_at`` (the end the metadata promises) is
    later than them, and are otherwise not yielded.
    """
    k, prev, end = 0, None, None
    for frame in stream.frames() if frames is None else frames:
        t = stream.time(frame)
        while k < len(times) and times[k] < t:
            yield k, prev if prev is not None else frame
            k += 1
        if k == len(times):
            return
        prev, end = frame, t + stream.duration_of(frame)
    while k < len(times) and prev is not None and times[k] < end:
        yield k, prev
        k += 1
    if k < len(times) and truncated_at is not None and times[k] < truncated_at:
        ends = f"data ends at {float(end):.3f} s" if end is not None else "no decodable data after the seek point"
        why = f"; decoder: {stream.decode_error}" if stream.decode_error else ""
        raise DataError(f"{stream.path}: truncated video: {ends}, the metadata says {float(truncated_at):.3f} s "
                        f"(frame at {float(times[k]):.3f} s missing{why})")


def grid_frames(stream: _Stream, times: list[Fraction], truncated_at: Fraction | None = None
                ) -> Iterator[tuple[int, av.VideoFrame]]:
    """:func:`iter_grid_frames` after seeking to the key frame before ``times[0]``.

    If the first frame decoded after the seek lies after ``times[0]``, or none decodes (a seek
    that landed late: MPEG-TS seeks by byte estimates), seeks 1, 4, 16, ... seconds earlier, down
    to the stream start. No ``times``: nothing.
    """
    if not len(times):  # e.g. a start past the video's end
        return
    back = Fraction(0)
    while True:
        seek_to = max(Fraction(0), times[0] - back)
        stream.seek(seek_to)
        frames = stream.frames()
        first = next(frames, None)
        if seek_to > 0 and (first is None or stream.time(first) > times[0]):
            back = max(Fraction(1), back * 4)
            continue
        yield from iter_grid_frames(stream, times, truncated_at, itertools.chain([] if first is None else [first], frames))
        return


class VideoFrames:
    """Frame source over video files (module docstring)."""

    def __init__(self, root: str | Path, fps: int | None = 30, offset: float = 0.0,
                 extensions: tuple[str, ...] = VIDEO_EXTENSIONS, threads: int = 1) -> None:
        """``fps``: the frame-number grid (module docstring); ``None``: each video's own rate."""
        self.root = Path(root)
        self.fps, self.offset = fps, _fraction(offset)
        self._rates: dict[str, Fraction] = {}  # the grid rate per video, found once by info()
        self.extensions = extensions
        self.threads = threads
        self._info: dict[str, tuple[int, tuple[int, int], Fraction]] = {}
        self._turns: dict[str, int] = {}  # display rotation per video, found once by info()
        self._rgb = None  # one PyAV VideoReformatter for every frame: its conversion context is reused
        self._cased: dict[Path, dict[str, Path]] = {}  # folder -> {name: file whose extension differs in case only}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rgb": None}  # a reformatter does not pickle (DataLoader workers)

    def path(self, video: str) -> Path | None:
        for ext in self.extensions:
            p = self.root / f"{video}.{ext}"
            if p.is_file():
                return p
        where = self.root / video  # ids may hold folders (ACT: Class/video)
        return self._other_case(where.parent).get(where.name)

    def _other_case(self, folder: Path) -> dict[str, Path]:
        """Videos of ``folder`` whose extension is one of :attr:`extensions` in another case (cameras
        write ``GOPR0001.MP4``), by name without the extension; each folder is listed once."""
        found = self._cased.get(folder)
        if found is None:
            found = self._cased[folder] = {}
            try:
                entries = sorted(folder.iterdir())
            except OSError:  # no such folder: its videos are then 'not found'
                entries = []
            for p in entries:
                ext = p.suffix[1:]
                if ext not in self.extensions and ext.lower() in self.extensions and p.is_file():
                    found.setdefault(p.stem, p)
        return found

    def has_video(self, video: str) -> bool:
        return self.path(video) is not None

    def _open(self, video: str) -> _Stream:
        p = self.path(video)
        if p is None:
            raise DataError(f"{self.root / video}.{{{','.join(self.extensions)}}}: video '{video}' not found")
        return _Stream(p, self.threads, self._turns.get(video))

    def info(self, video: str) -> tuple[int, tuple[int, int], Fraction]:
        """``(grid frames, (H, W), end in seconds)`` from the metadata (cached)."""
        got = self._info.get(video)
        if got is None:
            with self._open(video) as s:
                end = s.metadata_end()
                if end is None:  # the metadata gives no end of the video track: decode (the tail) to find it
                    end = decoded_end(s)
                rate = self._rates[video] = _fraction(self.fps) if self.fps is not None else 1 / s.frame_dur
                n = frame_count(end, rate, self.offset)
                if n < 1:
                    raise DataError(f"{s.path}: no frame at or after {float(self.offset):.3f} s "
                                    f"(video ends at {float(end):.3f} s)")
                got = self._info[video] = (n, s.size(), end)
                self._turns[video] = s.turns
        return got

    def num_frames(self, video: str) -> int:
        return self.info(video)[0]

    def frame_size(self, video: str) -> tuple[int, int]:
        return self.info(video)[1]

    def read(self, video: str, frames: np.ndarray, resize: Resize, draft: tuple[int, int] | None = None,
             expect_size: tuple[int, int] | None = None, mirror: bool = False) -> np.ndarray:
        """``frames (T,)`` 1-based grid numbers -> ``(T, h, w, 3)`` uint8 through ``resize`` (per clip);
        ``mirror``: flipped left-right after the resize."""
        n, size, end = self.info(video)
        if expect_size is not None and tuple(size) != tuple(expect_size):
            raise DataError(f"{self.path(video)}: video is {size[1]}x{size[0]} (WxH) but the annotations "
                            f"give {expect_size[1]}x{expect_size[0]}")
        need = sorted({int(f) for f in frames.tolist()})
        bad = [f for f in need if not 1 <= f <= n]
        if bad:
            raise DataError(f"video '{video}': frame {bad[0]} outside 1..{n}")
        rate = self._rates[video]
        times = [frame_time(f, rate, self.offset) for f in need]
        decoded: dict[int, np.ndarray] = {}
        if self._rgb is None:
            self._rgb = _av().video.reformatter.VideoReformatter()
        with self._open(video) as s:
            for k, frame in grid_frames(s, times, truncated_at=end):
                # = frame.to_ndarray(format="rgb24"), without a new conversion context per frame
                decoded[need[k]] = s.rgb(frame, self._rgb)  # (H, W, 3), upright
        missing = [f for f in need if f not in decoded]
        if missing:
            raise DataError(f"{s.path}: truncated video: no data for frame {missing[0]} "
                            f"({float(frame_time(missing[0], rate, self.offset)):.3f} s)")
        small = np.asarray(resize(np.stack([decoded[f] for f in need])))  # (U, h, w, 3): one resize per clip
        if mirror:
            small = torch.from_numpy(np.ascontiguousarray(small)).flip(2).numpy()
        pos = {f: k for k, f in enumerate(need)}
        return small[[pos[int(f)] for f in frames.tolist()]]  # (T, h, w, 3)
