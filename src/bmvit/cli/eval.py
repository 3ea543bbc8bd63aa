"""``bmvit eval``: evaluate a trained checkpoint on a split and optionally render annotated videos.

Prints the per-class table of the headline frame-mAP, then labelled lines: for AVA-layout data the
frame-mAP@0.5 on the classes of ``eval.label_map`` under both protocols (ActivityNet 2019, at most 50
detections per frame; PySlowFast, uncapped; ``eval.max_dets_per_frame`` picks the headline), the
actor detector's precision/recall at θ and actor AP, and last ``frame-mAP@0.5: X`` (the headline).
Writes ``detections_<split>.csv`` (evaluated classes only) and ``metrics_<split>.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bmvit.cli.argtypes import count
from bmvit.config import apply_overrides
from bmvit.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (frame-mAP@0.5 and actor precision/recall)")
    p.add_argument("--run", help="run folder written by `bmvit train` (uses its model.safetensors)")
    p.add_argument("--checkpoint", help="checkpoint file (default: RUN/model.safetensors)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--out", help="output folder (default: RUN/eval or next to the checkpoint)")
    p.add_argument("--render", type=count(0), default=0, metavar="N", help="render N videos with predictions and GT")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.threshold=0.3 data.root=DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from bmvit.data.build import make_dataset
    from bmvit.engine.checkpoint import load_weights
    from bmvit.engine.evaluate import evaluate_split
    from bmvit.engine.device import resolve_device, set_threads
    from bmvit.evaluation.ava_csv_fast import write_rows_exact
    from bmvit.evaluation.report import write_json
    from bmvit.models.build import build_detector

    if not args.run and not args.checkpoint:
        raise ConfigError("give --run DIR or --checkpoint FILE")
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(args.run) / "model.safetensors"
    state, cfg, meta = load_weights(ckpt)
    # Overrides apply on top of the checkpoint's own config.
    apply_overrides(cfg, args.overrides)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    ds = make_dataset(cfg, args.split)
    model = build_detector(cfg.model, cfg.data, len(ds.labels), load_pretrained=False)  # trained weights follow
    model.load_state_dict(state)
    model.to(device)
    gt_csv = cfg.data.path(cfg.data.val_csv if args.split == "val" else cfg.data.train_csv)
    result, dets = evaluate_split(model, ds, gt_csv, cfg, device, progress=not args.no_progress)
    out = Path(args.out) if args.out else (Path(args.run) / "eval" if args.run else ckpt.parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    write_rows_exact(out / f"detections_{args.split}.csv", dets)  # floats round-trip: eval-ava scores the same
    write_json(out / f"metrics_{args.split}.json", {"checkpoint": str(ckpt), "split": args.split, **result.to_json()})
    print(result.table())  # the headline's per-class table (ACT data: as eval-frame prints it)
    for vid in _videos_to_render(ds, args.render):
        path = render_video(ds, dets, vid, out / f"render_{vid}.mp4")
        print(f"rendered {path}")
    print(f"predictions: {out / f'detections_{args.split}.csv'}")
    for line in result.lines():
        print(line)
    print(f"frame-mAP@0.5: {result.mean_ap:.4f}")
    return 0


def _videos_to_render(ds, n: int) -> list[str]:
    seen: list[str] = []
    for kf in ds.keyframes:  # videos with the most annotated actors first
        if kf.video_id not in seen:
            seen.append(kf.video_id)
    count = {v: sum(len(k.boxes) for k in ds.keyframes if k.video_id == v) for v in seen}
    return sorted(seen, key=lambda v: -count[v])[:n]


def render_video(ds, dets, vid: str, path: Path, min_score: float = 0.3) -> Path:
    """Render every frame of ``vid``: predictions (solid, coloured) and GT (dashed white) of the
    nearest key frame within ±0.5 s."""
    from PIL import Image

    from bmvit.inference.render import FrameBoxes, color_for, draw_frame, write_mp4

    from bmvit.data.skips import reader_of

    names = ds.labels
    reader = reader_of(ds)  # the frames folder and frame timing are the reader's
    n = reader.num_video_frames(vid)
    gt = {kf.timestamp: kf for kf in ds.keyframes if kf.video_id == vid}
    sel = np.asarray([v == vid for v in dets.video_ids], dtype=bool)
    d_ts, d_boxes, d_act, d_score = dets.timestamps[sel], dets.boxes[sel], dets.actions[sel], dets.person_or_score[sel]

    def frames():
        for f in range(1, n + 1):
            with Image.open(reader.source.path(vid, f)) as im:
                frame = np.asarray(im.convert("RGB"))
            H, W = frame.shape[:2]
            ts = reader.first_timestamp + int(round((f - 1) / reader.rate))
            scale = np.array([W, H, W, H])
            boxes, labels, colors, style = [], [], [], []
            if ts in gt:
                for b in gt[ts].boxes:
                    boxes.append(b * scale); labels.append(""); colors.append((255, 255, 255)); style.append("dashed")
            m = d_ts == ts
            uniq = {tuple(b): i for i, b in enumerate(np.unique(d_boxes[m], axis=0))} if m.any() else {}
            for b, i in uniq.items():
                rows = m & np.all(d_boxes == np.array(b), axis=1)
                order = np.argsort(-d_score[rows])
                caption = ", ".join(f"{names.get(int(a), a)} {s:.2f}" for a, s in
                                    zip(d_act[rows][order], d_score[rows][order]) if s >= min_score)
                if caption:
                    boxes.append(np.array(b) * scale); labels.append(caption); colors.append(color_for(i)); style.append("solid")
            fb = FrameBoxes(np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, colors, style)
            yield draw_frame(frame, fb, scale=max(1.0, 480 / W))

    return write_mp4(path, frames(), fps=reader.rate)
