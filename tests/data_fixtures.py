"""Small datasets in the real formats, written by the tests themselves (nothing is downloaded).

Frames encode their own frame number so tests can check which frame a clip slot holds: the
left half of frame ``f`` has grey level ``8 * (f % 32)``, the right half ``8 * (f // 32)`` (robust
to JPEG error), and every annotated box of that frame is painted white (255).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48  # frame size of every fixture


def frame_image(f: int, boxes_px: list[tuple[float, float, float, float]] = ()) -> np.ndarray:
    """(H, W, 3) uint8 frame number ``f`` with white boxes (pixel corners)."""
    im = np.zeros((H, W, 3), np.uint8)
    im[:, : W // 2] = 8 * (f % 32)
    im[:, W // 2:] = 8 * (f // 32)
    for x1, y1, x2, y2 in boxes_px:
        im[round(y1):round(y2), round(x1):round(x2)] = 255
    return im


def decode_frame_numbers(clip_uint8: np.ndarray) -> np.ndarray:
    """(T, h, w, 3) frames (unflipped, no white at the sampled spots) -> (T,) frame numbers."""
    w = clip_uint8.shape[2]
    lo = clip_uint8[:, 1, 1, 0].astype(float)
    hi = clip_uint8[:, 1, w - 2, 0].astype(float)
    return (np.round(hi / 8) * 32 + np.round(lo / 8)).astype(int)


def unnormalize(clip) -> np.ndarray:
    """(3, T, h, w) clip -> (T, h, w, 3) uint8: a dataset's uint8 clip as is, a normalized float
    clip (Kinetics mean/std) mapped back to 0..255."""
    import torch

    from bmvit.data.transforms import KINETICS_MEAN, KINETICS_STD

    if clip.dtype == torch.uint8:
        return np.ascontiguousarray(clip.permute(1, 2, 3, 0).numpy())
    x = clip.numpy().transpose(1, 2, 3, 0) * np.array(KINETICS_STD) + np.array(KINETICS_MEAN)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


# --- ACT (UCF101-24 / JHMDB51-21) --------------------------------------------------------------

ACT_LABELS = ["Jump", "Run"]


def act_annotations() -> dict:
    """Three videos, three splits; tubes are (M, 5) float32 arrays frame, x1, y1, x2, y2 (pixels)."""
    def tube(frames, box):
        fr = np.asarray(list(frames), np.float32)
        return np.column_stack([fr, np.tile(np.asarray(box, np.float32), (len(fr), 1))])

    gttubes = {
        "Run/v_run_1": {1: [tube(range(5, 21), (8, 8, 24, 40))], 0: [tube(range(15, 26), (34, 10, 60, 44))]},
        "Jump/v_jump_1": {0: [tube(range(1, 21), (20, 4, 44, 44))], 1: [tube(range(1, 4), (20, 4, 44, 44))]},
        "Run/v_run_2": {1: [tube(range(3, 9), (4, 4, 30, 30))]},
    }
    videos = ["Run/v_run_1", "Jump/v_jump_1", "Run/v_run_2"]
    return {
        "labels": list(ACT_LABELS),
        "nframes": {"Run/v_run_1": 30, "Jump/v_jump_1": 20, "Run/v_run_2": 12},
        "resolution": {v: (H, W) for v in videos},
        "gttubes": gttubes,
        "train_videos": [["Run/v_run_1", "Jump/v_jump_1"], ["Run/v_run_1", "Run/v_run_2"], ["Jump/v_jump_1"]],
        "test_videos": [["Run/v_run_2"], ["Jump/v_jump_1"], ["Run/v_run_1", "Run/v_run_2"]],
    }


def write_act(root: Path, ann: dict | None = None, ext: str = "png", frames_dir: str = "rgb-images",
              pkl_name: str = "GT.pkl") -> Path:
    """Frames ``<root>/<frames_dir>/<video>/%05d.<ext>`` + ``<root>/<pkl_name>`` (protocol 2, as ACT's)."""
    ann = ann or act_annotations()
    root.mkdir(parents=True, exist_ok=True)
    for v, n in ann["nframes"].items():
        folder = root / frames_dir / v
        if (folder / f"{n:05d}.{ext}").is_file():
            continue  # already written (tests that only change the pickle reuse the frames)
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(1, n + 1):
            boxes = [tuple(t[t[:, 0] == f][0, 1:]) for tubes in ann["gttubes"].get(v, {}).values() for t in tubes
                     if np.any(t[:, 0] == f)]
            Image.fromarray(frame_image(f, boxes)).save(folder / f"{f:05d}.{ext}", quality=95)
    with open(root / pkl_name, "wb") as fh:
        pickle.dump(ann, fh, protocol=2)
    return root


# --- AVA layout ----------------------------------------------------------------------------------

AVA_LABEL_MAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "talk"\n  id: 3\n}\nitem {\n  name: "wave"\n  id: 7\n}\n'


def write_ava(root: Path, videos: dict[str, int] | None = None, rows: list[str] | None = None) -> Path:
    """``frames/<vid>/<vid>_%06d.jpg`` (30 fps, frame 1 = second 900), ``annotations/{train,val}.csv``
    and a 3-class label map (ids 1, 3, 7)."""
    videos = videos or {"vidA": 100, "vidB": 70}
    for vid, n in videos.items():
        folder = root / "frames" / vid
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(1, n + 1):
            Image.fromarray(frame_image(f)).save(folder / f"{vid}_{f:06d}.jpg", quality=95)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [
            "vidA,0901,0.100,0.200,0.400,0.900,1,0",
            "vidA,0901,0.100,0.200,0.400,0.900,7,0",  # same person: merged into one multi-hot box
            "vidA,0901,0.500,0.100,0.900,0.800,3,1",
            "vidA,0902,0.200,0.200,0.600,0.900,1,0",
            "vidB,0900,0.300,0.300,0.700,0.700,3,4",
            "vidB,0902,0.300,0.300,0.700,0.700,7,4",
        ]
    (ann / "train.csv").write_text("\n".join(rows) + "\n")
    (ann / "val.csv").write_text("\n".join(rows) + "\n")
    (ann / "label_map.pbtxt").write_text(AVA_LABEL_MAP)
    return root


# --- video files ---------------------------------------------------------------------------------

def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 30, faststart: bool = False, gop: int = 8) -> Path:
    """Encode (H, W, 3) uint8 frames as H.264 with PyAV (constant rate ``fps``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "12", "g": str(gop), "bf": "2"}
        for im in frames:
            for p in s.encode(__import__("av").VideoFrame.from_ndarray(im, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
