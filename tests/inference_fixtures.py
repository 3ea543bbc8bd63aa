"""Shared helpers of the inference tests (test_detect, test_export, test_stream, test_api):
a tiny random-weight checkpoint, short test videos written with PyAV, a tiny AVA-layout dataset."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

from bmvit.config import Config, load_config
from bmvit.data.formats.ava import write_label_map
from bmvit.engine.checkpoint import save_weights
from bmvit.models.build import build_detector

REPO = Path(__file__).resolve().parents[1]
LABELS = {1: "walk", 2: "wave", 3: "jump"}


def tiny_config(root: Path | str = "nowhere", rel_pos: bool = False, extra: list[str] | None = None) -> Config:
    """configs/synthetic/tiny.yaml shrunk: 8 frames at stride 2, 64² input, heads of width 32; token
    selection pinned to 2(c+t) (two detection slices: the tests' θ=0.8 was set for its random logits)."""
    over = ["model.token_selection=2(c+t)", "data.size=64", "data.num_frames=8", "data.stride=2", "data.fps=10", f"data.root={root}",
            "model.head_hidden=32", f"model.rel_pos={str(rel_pos).lower()}", "model.pretrained=null",
            "eval.threshold=0.8", "eval.nms_iou=0.5", "eval.score=action", "eval.hflip_tta=false", "eval.time_tta=[]",
            *(extra or [])]
    return load_config(REPO / "configs" / "synthetic" / "tiny.yaml", over)


def tiny_model(cfg: Config, seed: int = 0) -> torch.nn.Module:
    """Random weights; the actor/box output layers are randomized too, so that some tokens pass θ=0.5
    and boxes vary (the default init puts p(actor) at 0.01 and every box on its grid cell)."""
    torch.manual_seed(seed)
    model = build_detector(cfg.model, cfg.data, len(LABELS), load_pretrained=False).eval()
    with torch.no_grad():
        for layer, std in ((model.heads.actor[-1], 1.5), (model.heads.box[-1], 0.1), (model.heads.action[-1], 0.3)):
            torch.nn.init.normal_(layer.weight, std=std)
            torch.nn.init.zeros_(layer.bias)
    return model


def make_checkpoint(path: Path, root: Path | str = "nowhere", rel_pos: bool = False, seed: int = 0) -> Path:
    cfg = tiny_config(root, rel_pos)
    return save_weights(path, tiny_model(cfg, seed), cfg, {"step": 0})


def synthetic_frames(n: int, width: int = 80, height: int = 60, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB frames: noise plus two moving blocks."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        f = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        x = (5 + 2 * i) % (width - 20)
        f[10:50, x:x + 14] = (200, 60, 40)
        f[20:55, width - 20 - x // 2:width - 8 - x // 2] = (40, 180, 220)
        frames.append(f)
    return frames


def write_video(path: Path, n: int = 40, fps: int = 10, width: int = 80, height: int = 60) -> Path:
    """An H.264 mp4 of :func:`synthetic_frames` (near-lossless, crf 0 is not yuv420p-safe everywhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "10"}
        for i, f in enumerate(synthetic_frames(n, width, height)):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def write_dataset(root: Path, seconds: int = 3, fps: int = 10) -> Path:
    """A one-video AVA-layout dataset: ``frames/vid0/vid0_%06d.jpg`` at ``fps``, key frames at
    seconds 901 and 902 with two actors, label map of :data:`LABELS`."""
    from PIL import Image

    folder = root / "frames" / "vid0"
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(synthetic_frames(seconds * fps)):
        Image.fromarray(f).save(folder / f"vid0_{i + 1:06d}.jpg", quality=95)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    write_label_map(ann / "label_map.pbtxt", LABELS)
    rows = []
    for ts in (901, 902):
        rows += [f"vid0,{ts},0.100,0.150,0.400,0.850,1,0", f"vid0,{ts},0.100,0.150,0.400,0.850,2,0",
                 f"vid0,{ts},0.600,0.300,0.900,0.900,3,1"]
    (ann / "val.csv").write_text("\n".join(rows) + "\n")
    (ann / "train.csv").write_text("\n".join(rows) + "\n")
    return root
