"""Loader throughput: clips per second on one core, 16-frame clips from JPEG frames resized to 256².

Generates, into a temporary folder (or ``--keep DIR``), ``--videos`` videos of ``--seconds``
seconds at 30 fps in the AVA layout — JPEG frames (quality 90) with short side 320 (``--width``
x 320, default 568 x 320, AVA's 16:9) of textured noise — an AVA CSV with 2 actors per key frame,
and, for ``--reader act``, the same frames in the ACT layout with a UCF-style pickle. Then reads
``--clips`` samples in random order through :func:`bmvit.data.build.make_dataset` (T=16, τ=4,
256², the paper's training augmentation: flip, colour jitter, box jitter) in *this* process
with one torch thread — i.e. what one DataLoader worker does per core — and prints clips per
CPU-second of this process (the per-core figure: far less disturbed by other jobs than the
wall-clock rate, also printed, but not immune — on a busy 2-core machine runs of the same code
spread by about ±8%, so compare figures taken back to back, or several ``--repeat`` passes).

    python benchmarks/loader.py [--reader ava|act|video] [--clips 200] [--videos 4] [--seconds 12] [--repeat 1]

A clip leaves the dataset as uint8 ``(3, 16, 256, 256)`` (normalization and colour jitter run later, on
the training device), so this is the per-clip CPU cost of a worker but for collation (one copy of
the clip into the batch). Target (issue 15): >= 50 clips per CPU-second for ``--reader ava``;
docs/training.md turns the rate into loader cores per GPU.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _frames(rng: np.random.Generator, w: int, h: int, n: int) -> list[Image.Image]:
    """``n`` frames of smooth texture + noise that drift, so JPEGs have realistic entropy."""
    base = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((w + 16, h + 16), Image.BICUBIC)).astype(np.int16)
    out = []
    for i in range(n):
        dx = i % 16
        im = big[8:8 + h, dx:dx + w] + rng.integers(-12, 12, (h, w, 3))
        out.append(Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)))
    return out


def _write_video(path: Path, frames: list[Image.Image], fps: int, width: int, height: int) -> None:
    import av  # only here: the frames fixture needs no PyAV

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "23", "g": "32"}
        for im in frames:
            for p in s.encode(av.VideoFrame.from_image(im)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_fixture(root: Path, videos: int, seconds: int, width: int, height: int, video: bool = True) -> None:
    """AVA-layout JPEG frames (+ ACT layout links, + ``videos/*.mp4`` when ``video``: needs PyAV)."""
    rng = np.random.default_rng(0)
    fps = 30
    rows = []
    ann = {"labels": ["a", "b"], "nframes": {}, "resolution": {}, "gttubes": {}, "train_videos": [[]],
           "test_videos": [[]]}
    for v in range(videos):
        vid = f"vid{v:02d}"
        (root / "frames" / vid).mkdir(parents=True, exist_ok=True)
        (root / "rgb-images" / "a" / vid).mkdir(parents=True, exist_ok=True)
        (root / "videos").mkdir(exist_ok=True)
        frames = _frames(rng, width, height, seconds * fps)
        for i, im in enumerate(frames, start=1):
            im.save(root / "frames" / vid / f"{vid}_{i:06d}.jpg", quality=90)
            os.link(root / "frames" / vid / f"{vid}_{i:06d}.jpg", root / "rgb-images" / "a" / vid / f"{i:05d}.jpg")
        if video:
            _write_video(root / "videos" / f"{vid}.mp4", frames, fps, width, height)
        for t in range(901, 900 + seconds):
            rows.append(f"{vid},{t:04d},0.1,0.2,0.4,0.9,1,0\n{vid},{t:04d},0.5,0.1,0.8,0.95,2,1\n")
        n = seconds * fps
        ann["nframes"][f"a/{vid}"] = n
        ann["resolution"][f"a/{vid}"] = (height, width)
        tube = np.column_stack([np.arange(1, n + 1), np.tile([10.0, 20.0, 200.0, 300.0], (n, 1))])
        ann["gttubes"][f"a/{vid}"] = {0: [tube.astype(np.float32)]}
        ann["train_videos"][0].append(f"a/{vid}")
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "train.csv").write_text("".join(rows))
    (root / "annotations" / "label_map.pbtxt").write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n')
    with open(root / "gt.pkl", "wb") as f:
        pickle.dump(ann, f, protocol=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", choices=("ava", "act", "video"), default="ava")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--width", type=int, default=568)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--keep", type=Path, help="write/reuse the fixture here")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes of --clips clips (one line each)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bmvit.config import load_config
    from bmvit.data.build import make_dataset

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    else:
        root = args.keep
    if not (root / "gt.pkl").is_file():
        t0 = time.perf_counter()
        make_fixture(root, args.videos, args.seconds, args.width, args.height)
        print(f"fixture: {args.videos} videos x {args.seconds} s, {args.width}x{args.height} JPEG "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    over = [f"data.root={root}", "data.num_frames=16", "data.stride=4", "data.size=256", "data.hflip_prob=0.5",
            "data.color_jitter=0.4", "data.box_jitter=0.05", "data.val_csv=annotations/train.csv"]
    if args.reader == "act":
        over += ["data.format=act", "data.annotations=gt.pkl", "data.frames_dir=rgb-images"]
    elif args.reader == "video":
        over += ["data.source=video"]
    ds = make_dataset(load_config(None, over), "train", augment=True)
    order = np.random.default_rng(1).permutation(len(ds))
    ds[(int(order[0]), 0)]  # warm-up (file-system caches, lazy imports)
    n = args.clips  # samples repeat when the fixture has fewer key frames (files are in the page cache either way)
    rates = []
    for _ in range(max(1, args.repeat)):  # every pass reads the same samples with the same seeds
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(1, n + 1):
            clip, _ = ds[(int(order[k % len(ds)]), k)]
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        rates.append(n / dc)
        # wall time suffers when other jobs share the core; CPU time is what one core delivers
        print(f"reader={args.reader}: {n} clips {tuple(clip.shape)}: {n / dc:.1f} clips per CPU-second "
              f"({1000 * dc / n:.1f} ms CPU/clip); wall {n / dt:.1f} clips/s (load average {os.getloadavg()[0]:.1f})")
    if len(rates) > 1:
        print(f"reader={args.reader}: median of {len(rates)} passes {float(np.median(rates)):.1f} clips per "
              f"CPU-second (min {min(rates):.1f}, max {max(rates):.1f})")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
