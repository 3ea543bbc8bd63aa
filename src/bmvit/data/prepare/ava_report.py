"""What ``bmvit prepare ava`` shows while it runs and reports at the end.

* :class:`Progress`: two tqdm bars on stderr, videos and bytes (shown on a terminal only; the
  bytes total grows as each download announces its size). Thread-safe.
* :func:`keyframe_counts`: per split, the key frames of the CSV (distinct ``video,timestamp``)
  and how many of them fall on a frame that was written (frame ``(ts - start) * fps + 1`` within
  ``1..frames`` of a complete video).
* :func:`disk_usage`: bytes per top-level folder of the output and in total.
* :func:`recipe_doc`: the output recipe with the versions of the libraries that produce the pixels;
  :func:`human_bytes` for the console.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import av
import numpy as np
import PIL
from tqdm import tqdm

from bmvit.data.formats.ava import AvaRows

__all__ = ["Progress", "disk_usage", "human_bytes", "keyframe_counts", "recipe_doc"]


class Progress:
    """Bars for videos done and bytes downloaded (module docstring)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.lock = threading.Lock()
        self.bytes = tqdm(total=0, desc="bytes", unit="B", unit_scale=True, unit_divisor=1024, position=1,
                          disable=None if enabled else True, dynamic_ncols=True, leave=False)
        self.vids: tqdm | None = None

    def start_videos(self, n: int) -> None:
        self.vids = tqdm(total=n, desc="videos", unit="video", position=0, disable=None if self.enabled else True,
                         dynamic_ncols=True, leave=False)

    def expect_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes.total = (self.bytes.total or 0) + n
            self.bytes.refresh()

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes.update(n)

    def video_done(self) -> None:
        if self.vids is not None:
            self.vids.update(1)

    def close(self) -> None:
        if self.vids is not None:
            self.vids.close()
        self.bytes.close()


def keyframe_counts(rows: dict[str, AvaRows], outputs: dict[str, dict], recipe) -> dict[str, dict]:
    """``{split: {keyframes, present, videos, videos_present}}`` (module docstring)."""
    counts = {}
    for split, r in rows.items():
        keys = sorted(set(zip(r.video_ids, r.timestamps.tolist())))
        present = 0
        for vid, ts in keys:
            n = outputs.get(vid, {}).get("frames", 0)
            frame = int(np.floor((ts - recipe.start) * recipe.fps + 1e-9)) + 1
            present += 1 <= frame <= n
        vids = {v for v, _ in keys}
        counts[split] = {"keyframes": len(keys), "present": present, "videos": len(vids),
                         "videos_present": sum(v in outputs for v in vids)}
    return counts


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def disk_usage(out: Path, outputs: dict[str, dict]) -> dict[str, int]:
    """Bytes used under ``out``: annotations and downloads walked, frames/videos from the recorded sizes."""
    use = {"annotations": _tree_bytes(out / "annotations"), "downloads": _tree_bytes(out / "downloads"),
           "outputs": sum(int(rec.get("bytes", 0)) for rec in outputs.values())}
    use["total"] = sum(use.values())
    return use


def recipe_doc(recipe: dict) -> dict:
    """``recipe`` (fps, quality, start, end, short side, output kind) with the library versions."""
    doc = dict(recipe)
    doc["layout"] = "frames/<vid>/<vid>_%06d.jpg" if recipe.get("output") == "frames" else "videos/<vid>.mp4"
    doc["timing"] = "frame i = picture on screen at start + (i-1)/fps s of the movie"
    if recipe.get("output") == "frames":
        doc["jpeg_subsampling"] = "4:2:0"
    else:
        doc["encoder"] = "libx264 yuv420p (PyAV)"
    doc["decoder"] = f"PyAV {av.__version__}"
    doc["ffmpeg"] = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    doc["pillow"] = PIL.__version__
    return doc
