"""Inputs of the paper-size detect measurements in docs/inference.md: a random-weight checkpoint of
``configs/paper/ava/mvitv2s_16x256_out8x16.yaml`` (80 classes; speed does not depend on the weights)
and a 10 s 640×272 25 fps H.264 video of moving blocks.

    python benchmarks/make_paper_inputs.py OUT_DIR    # -> OUT_DIR/paper.safetensors, OUT_DIR/video25.mp4
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import torch

from bmvit.config import load_config
from bmvit.engine.checkpoint import save_weights
from bmvit.models.build import build_detector

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / "configs/paper/ava/mvitv2s_16x256_out8x16.yaml", ["model.pretrained=null"])
    torch.manual_seed(0)
    save_weights(out / "paper.safetensors", build_detector(cfg.model, cfg.data, 80, load_pretrained=False).eval(),
                 cfg, {"step": 0})
    rng = np.random.default_rng(0)
    base = rng.integers(0, 80, (272, 640, 3), dtype=np.uint8)
    with av.open(str(out / "video25.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 272, "yuv420p"
        for i in range(250):
            f = base.copy()
            x = (10 + 4 * i) % 560
            f[40:240, x:x + 60] = (200, 80, 50)
            f[60:260, 600 - x // 2 - 50:600 - x // 2] = (50, 170, 220)
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    print(f"{out / 'paper.safetensors'}, {out / 'video25.mp4'}")


if __name__ == "__main__":
    main()
