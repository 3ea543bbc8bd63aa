"""A cut of a video on the frame grid of the pinned recipe, re-encoded (``bmvit prepare ava --no-frames``).

Contract: :func:`cut_video` writes ``<out_dir>/<video_id>.mp4`` holding exactly the frames that
:func:`bmvit.data.prepare.frames.extract_frames` would write for the same :class:`~bmvit.data.prepare.frames.Recipe`
(frame ``i`` = the picture on screen at ``start + (i - 1) / fps`` s, optional short-side resize),
encoded with H.264 (libx264 through PyAV, ``crf`` 17 by default: visually lossless, yuv420p) at a
constant ``fps``. Frame ``i`` of the cut is shown at ``(i - 1) / fps`` s, so the video reader
(``data.source=video``, ``data.video_offset=0``) returns the same grid as the frames folder, up
to compression. H.264 4:2:0 needs even sizes: an odd width or height is resized one pixel down.

Stream copy (no re-encoding) cannot start a file exactly at ``start``: it has to begin at a key
frame, which would shift frame 1 by up to a GOP. The file is written under a temporary name and
renamed when complete. Errors (unreadable, truncated video) raise DataError naming the file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from bmvit.atomic import make_folder, output_error
from bmvit.data.prepare.frames import Recipe
from bmvit.data.sources.video import GridTimes, _Stream, frame_count, grid_frames
from bmvit.data.transforms import keep_aspect_size
from bmvit.errors import DataError

__all__ = ["DEFAULT_CRF", "cut_video"]

DEFAULT_CRF = 17


def cut_video(video_path: str | Path, out_dir: str | Path, recipe: Recipe, video_id: str,
              crf: int = DEFAULT_CRF) -> tuple[int, tuple[int, int]]:
    """Write the cut (module docstring); returns ``(frames, (H, W))`` written. Raises DataError."""
    recipe.check()
    video_path, out_dir = Path(video_path), Path(out_dir)
    make_folder(out_dir)
    final = out_dir / f"{video_id}.mp4"
    tmp = out_dir / f".{video_id}.partial.mp4"
    written = 0
    try:
        with _Stream(video_path, threads=0) as s:
            meta_end = s.metadata_end()
            H, W = s.size()
            out_w, out_h = keep_aspect_size((W, H), recipe.short_side) if recipe.short_side else (W, H)
            out_w, out_h = max(2, out_w - out_w % 2), max(2, out_h - out_h % 2)
            n = frame_count(meta_end if meta_end is not None else Fraction(10**9), recipe.fps, recipe.start, recipe.end)
            times = GridTimes(n, recipe.fps, recipe.start)  # lazy: no end in the metadata means n ~ 3e10
            with av.open(str(tmp), "w", format="mp4") as c:
                enc = c.add_stream("libx264", rate=recipe.fps)
                enc.width, enc.height, enc.pix_fmt = out_w, out_h, "yuv420p"
                enc.options = {"crf": str(crf), "preset": "medium"}
                for k, frame in grid_frames(s, times, truncated_at=meta_end):
                    im = Image.fromarray(s.rgb(frame))  # upright (display rotation applied)
                    if im.size != (out_w, out_h):
                        im = im.resize((out_w, out_h), Image.BILINEAR)
                    vf = av.VideoFrame.from_image(im)
                    vf.pts = k
                    vf.time_base = Fraction(1, recipe.fps)
                    for p in enc.encode(vf):
                        c.mux(p)
                    written += 1
                for p in enc.encode():
                    c.mux(p)
        if written == 0:
            raise DataError(f"{video_path}: no frame at or after {recipe.start} s")
    except av.FFmpegError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{video_path}: cannot encode the cut ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, final)
    except OSError as e:  # a folder in the way of the cut
        tmp.unlink(missing_ok=True)
        raise output_error(final, e) from None
    return written, (out_h, out_w)
