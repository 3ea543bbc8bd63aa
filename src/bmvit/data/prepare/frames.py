"""Frame extraction into the AVA layout with one pinned recipe (``bmvit prepare frames``).

Contract: :func:`prepare_frames` turns every video file directly in ``videos`` (extensions of
:data:`bmvit.data.sources.video.VIDEO_EXTENSIONS`) into ``<out>/<video_id>/<video_id>_%06d.<ext>``, with
``video_id`` the file name without extension, and writes ``<out>/prepare_report.json``
describing the recipe and every video. The recipe is fixed so that two machines produce the
same frames (no dependence on an ``ffmpeg`` binary's version or flags):

* decoding: PyAV (the FFmpeg libraries it ships), pixels converted to RGB by ``to_image``;
* timing: frame ``i`` is the picture on screen at ``start + (i - 1) / fps`` seconds (see
  :mod:`bmvit.data.sources.video` — the same rule the video-file reader uses), for every such time
  before the end of the video (and before ``end`` when given); frame 1 is at ``start``;
* size: unchanged, or the short side resized to ``short_side`` (aspect kept, bilinear);
* files: JPEG through Pillow at ``quality`` (default 90) with 4:2:0 chroma subsampling, or
  lossless PNG.

For AVA, whose annotations count seconds from the start of the movie with frame 1 at 900 s:
``start=900, end=1800`` on full movies (or ``start=0`` on the 15-minute cuts) and
``data.first_second=900``. For one's own videos: ``start=0`` and ``data.first_second=0``.

A video folder is written under a temporary name and renamed when complete, so an interrupted
run never leaves a half folder that looks finished; existing folders are kept unless
``overwrite``. Errors (unreadable or truncated video) raise a DataError naming the file, or
under ``on_error="skip"`` are reported and counted.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import PIL
from PIL import Image

from bmvit.atomic import output_error, write_text
from bmvit.data.skips import SkipLog
from bmvit.data.transforms import keep_aspect_size
from bmvit.data.sources.video import (
    VIDEO_EXTENSIONS,
    GridTimes,
    _Stream,
    frame_count,
    grid_frames,
)
from bmvit.errors import ConfigError, DataError

__all__ = ["REPORT_NAME", "Recipe", "VideoReport", "extract_frames", "prepare_frames"]

REPORT_NAME = "prepare_report.json"


@dataclass(frozen=True)
class Recipe:
    fps: int = 30
    ext: str = "jpg"  # jpg | png
    quality: int = 90  # JPEG quality (Pillow scale 1..95)
    start: float = 0.0  # seconds into each video of frame 1
    end: float | None = None  # stop before this second (None: the end of the video)
    short_side: int | None = None  # resize so the short side has this many pixels (None: keep)

    def check(self) -> None:
        if self.fps < 1:
            raise ConfigError(f"--fps must be at least 1, got {self.fps}")
        if self.ext not in ("jpg", "png"):
            raise ConfigError(f"--ext must be jpg or png, got {self.ext!r}")
        if not 1 <= self.quality <= 95:
            raise ConfigError(f"--quality must be in 1..95, got {self.quality}")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ConfigError(f"--start/--end: need 0 <= start < end, got {self.start}, {self.end}")
        if self.short_side is not None and self.short_side < 8:
            raise ConfigError(f"--short-side must be at least 8, got {self.short_side}")


@dataclass
class VideoReport:
    video: str
    source: str
    status: str  # written | exists | failed
    frames: int = 0
    source_fps: float | None = None
    source_size: list[int] = field(default_factory=list)  # [H, W]
    size: list[int] = field(default_factory=list)  # [H, W] written
    seconds: float = 0.0  # wall time
    message: str = ""


def _save(im: Image.Image, path: Path, recipe: Recipe) -> None:
    if recipe.ext == "jpg":
        im.save(path, format="JPEG", quality=recipe.quality, subsampling=2)
    else:
        im.save(path, format="PNG")


def extract_frames(video_path: str | Path, out_root: str | Path, recipe: Recipe = Recipe(),
                   video_id: str | None = None) -> VideoReport:
    """Extract one video (module docstring); returns what was written. Raises DataError."""
    recipe.check()
    video_path, out_root = Path(video_path), Path(out_root)
    vid = video_id or video_path.stem
    final = out_root / vid
    tmp = out_root / f".{vid}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise output_error(final, e) from None
    t0 = time.perf_counter()
    try:
        with _Stream(video_path, threads=0) as s:
            meta_end = s.metadata_end()
            H, W = s.size()
            out_w, out_h = keep_aspect_size((W, H), recipe.short_side) if recipe.short_side else (W, H)
            # Upper bound of the grid: metadata end (truncation is detected against it) or --end.
            n = frame_count(meta_end if meta_end is not None else Fraction(10**9), recipe.fps, recipe.start, recipe.end)
            times = GridTimes(n, recipe.fps, recipe.start)  # lazy: no end in the metadata means n ~ 3e10
            written = 0
            for k, frame in grid_frames(s, times, truncated_at=meta_end):
                im = Image.fromarray(s.rgb(frame))  # upright (display rotation applied)
                if (out_w, out_h) != im.size:
                    im = im.resize((out_w, out_h), Image.BILINEAR)
                try:
                    _save(im, tmp / f"{vid}_{k + 1:06d}.{recipe.ext}", recipe)
                except OSError as e:  # disk full, folder removed under us
                    raise output_error(final, e) from None
                written += 1
            fps = float(1 / s.frame_dur)
        if written == 0:
            ends = f" (the video ends at {float(meta_end):.3f} s)" if meta_end is not None else ""
            raise DataError(f"{video_path}: no frame at or after {recipe.start:g} s{ends}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError as e:  # a file in the way of the video's folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(final, e) from None
    return VideoReport(vid, str(video_path), "written", written, round(fps, 3), [H, W], [out_h, out_w],
                       round(time.perf_counter() - t0, 3))


def _check_kept_recipe(out: Path, kept: list[str], recipe: Recipe) -> None:
    """Folders that a run keeps must have been made with ``recipe``: the earlier report's recipe is
    compared (else the new report would describe frames it did not make), and a kept folder must
    hold frames of ``recipe.ext``. :class:`ConfigError` before any work."""
    if not kept:
        return
    try:
        before = json.loads((out / REPORT_NAME).read_text(encoding="utf-8")).get("recipe") or {}
    except (OSError, ValueError, AttributeError):
        before = {}
    now = asdict(recipe)
    diff = [k for k in now if k in before and before[k] != now[k]]
    if diff:
        what = ", ".join(f"{k} {before[k]!r} -> {now[k]!r}" for k in diff)
        raise ConfigError(f"{out / REPORT_NAME}: the frames of {', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''} "
                          f"were made with another recipe ({what}); pass --overwrite to redo them or use another --out")
    empty = [v for v in kept if not any((out / v).glob(f"{v}_*.{recipe.ext}"))]
    if empty:
        raise ConfigError(f"{out / empty[0]}: holds no .{recipe.ext} frames (made with another recipe, or not by "
                          f"bmvit prepare frames); pass --overwrite to redo it or use another --out")


def prepare_frames(videos: str | Path, out: str | Path, recipe: Recipe = Recipe(), on_error: str = "error",
                   overwrite: bool = False, log=print) -> list[VideoReport]:
    """Extract every video in ``videos`` into ``out`` and write ``out/prepare_report.json``."""
    recipe.check()
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise DataError(f"{videos}: videos folder not found")
    files = sorted(p for p in videos.iterdir()  # a broken link is kept: it fails as 'video not found'
                   if (p.is_file() or p.is_symlink() and not p.is_dir()) and p.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS)
    if not files:
        raise DataError(f"{videos}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise DataError(f"{videos}: several files share the video id '{dup[0]}' (ids are file names without extension)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(out, e) from None
    skips = SkipLog(on_error, str(videos), hint="pass --on-error skip to leave such videos out, counted",
                     option="--on-error skip")
    kept = [p.stem for p in files if (out / p.stem).is_dir()] if not overwrite else []
    _check_kept_recipe(out, kept, recipe)
    reports: list[VideoReport] = []
    for p in files:
        if (out / p.stem).is_dir() and not overwrite:
            n = sum(1 for _ in (out / p.stem).glob(f"{p.stem}_*.{recipe.ext}"))
            reports.append(VideoReport(p.stem, str(p), "exists", n, message="kept (use --overwrite to redo)"))
            log(f"{p.stem}: exists ({n} frames), kept")
            continue
        try:
            r = extract_frames(p, out, recipe)
        except DataError as e:
            skips.handle(str(e))
            reports.append(VideoReport(p.stem, str(p), "failed", message=str(e)))
            continue
        reports.append(r)
        log(f"{r.video}: {r.frames} frames {r.size[1]}x{r.size[0]} from {r.source_size[1]}x{r.source_size[0]} "
            f"@ {r.source_fps:g} fps ({r.seconds:.1f} s)")
    doc = {
        "recipe": {**asdict(recipe), "layout": "<video_id>/<video_id>_%06d." + recipe.ext,
                   "timing": "frame i = picture on screen at start + (i-1)/fps s",
                   "jpeg_subsampling": "4:2:0", "decoder": f"PyAV {av.__version__}",
                   "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
                   "pillow": PIL.__version__},
        "videos": [asdict(r) for r in reports],
        "written": sum(r.status == "written" for r in reports),
        "kept": sum(r.status == "exists" for r in reports),
        "failed": sum(r.status == "failed" for r in reports),
    }
    write_text(out / REPORT_NAME, json.dumps(doc, indent=2))
    skips.print_summary()
    return reports
