"""``bmvit show``: dataset samples rendered side by side — ground truth (left) and predictions (right).

For each chosen key frame of a split: the original key-frame image with the ground-truth actors
(dashed white boxes, their action names) next to the same image with the checkpoint's detections
(one colour per actor, top actions with scores). Without ``--checkpoint`` only the ground truth is
drawn (``--config`` then names the dataset). One PNG per key frame: ``OUT/<video>_<timestamp>.png``
(UCF101-24 / JHMDB ids ``<Class>/<video>`` give ``OUT/<Class>/<video>_<frame>.png``).
"""

from __future__ import annotations

import numpy as np

from bmvit.atomic import atomic_output, make_folder
from bmvit.cli.argtypes import count, probability
from bmvit.data.skips import reader_of
from bmvit.data.sources.frame_folder import FrameFolder
from bmvit.errors import ConfigError, DataError


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="render dataset samples: ground truth next to predictions")
    p.add_argument("--checkpoint", help="model.safetensors (its embedded config names the dataset)")
    p.add_argument("--config", help="YAML config, when there is no checkpoint (ground truth only)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--video", help="only key frames of this video id")
    p.add_argument("--num", type=count(1), default=8, help="key frames to render, spread over the split (default: 8)")
    p.add_argument("--out", default="runs/show", help="output folder (default: runs/show)")
    p.add_argument("--threshold", type=probability, help="p(actor) threshold (default: the checkpoint's eval.threshold)")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=DIR")
    p.set_defaults(func=run)


def _pick(ds, video: str | None, num: int) -> list[int]:
    items = [i for i, kf in enumerate(ds.keyframes) if video is None or kf.video_id == video]
    if not items:
        raise DataError(f"video {video!r} has no key frames in this split" if video else "the split has no key frames")
    if len(items) <= num:
        return items
    return [items[int(round(j))] for j in np.linspace(0, len(items) - 1, num)]


def _key_frame_image(ds, i: int, clip, target) -> np.ndarray:
    """The key-frame image of sample ``i``: the original file for frame-folder datasets, else the
    model's input key frame (uint8) resized to the original frame size."""
    from PIL import Image

    kf = ds.keyframes[i]
    reader = reader_of(ds)  # the frames folder is the reader's
    if isinstance(getattr(reader, "source", None), FrameFolder):
        idx = reader.frame_indices(kf.video_id, kf.timestamp)
        path = reader.source.path(kf.video_id, int(idx[len(idx) // 2]))
        if path.is_file():
            try:
                with Image.open(path) as im:
                    return np.asarray(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise DataError(f"{path}: cannot read key frame ({e})") from None
    views = getattr(reader.transform, "views", (0,))  # eval.time_tta: the clip holds V moved clips
    T = clip.shape[1] // len(views)
    v = min(range(len(views)), key=lambda j: abs(views[j]))  # the view nearest the key frame
    small = Image.fromarray(np.ascontiguousarray(clip[:, v * T + T // 2].permute(1, 2, 0).numpy()))  # (S, S, 3) uint8
    h, w = target["orig_size"]
    return np.asarray(small.resize((int(w), int(h)), Image.BILINEAR))


def run(args) -> int:
    from PIL import Image

    from bmvit.config import apply_overrides, load_config
    from bmvit.data.build import make_dataset
    from bmvit.data.transforms import views_of
    from bmvit.inference.detector import FROM_CHECKPOINT, Detector, KeyFrameResult
    from bmvit.inference.outputs import frame_boxes
    from bmvit.inference.render import FrameBoxes, draw_frame

    if args.num < 1:
        raise ConfigError(f"--num must be at least 1, got {args.num}")
    det = None
    if args.checkpoint:
        threshold = FROM_CHECKPOINT if args.threshold is None else args.threshold
        det = Detector.from_checkpoint(args.checkpoint, args.device, threshold=threshold)
        cfg = apply_overrides(det.cfg, args.overrides)
        if views_of(cfg.eval.time_tta) != det.views:  # an eval.time_tta override: the reader and the model agree
            det = Detector.from_checkpoint(args.checkpoint, args.device, threshold=threshold,
                                           time_tta=cfg.eval.time_tta)
            cfg = apply_overrides(det.cfg, args.overrides)
    elif args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        raise ConfigError("give --checkpoint FILE (ground truth and predictions) or --config FILE (ground truth only)")
    ds = make_dataset(cfg, args.split)
    if det is not None:
        if len(ds.labels) != det.num_classes:
            raise DataError(f"the dataset has {len(ds.labels)} classes, the checkpoint {det.num_classes}")
        det.labels, det.class_ids = dict(ds.labels), list(ds.labels)
    out = make_folder(args.out)
    names = [ds.labels[c] for c in ds.class_ids]
    for i in _pick(ds, args.video, args.num):
        clip, target = ds[i]
        vid, ts = target["video_id"], target["timestamp"]
        frame = _key_frame_image(ds, i, clip, target)
        H, W = frame.shape[:2]
        scale = max(1.0, 360 / W)
        gt_boxes = ds.keyframes[i].boxes * np.array([W, H, W, H])  # (N, 4) pixels
        gt_labels = [", ".join(names[k] for k in np.flatnonzero(row)) for row in ds.keyframes[i].labels]
        gt = draw_frame(frame, FrameBoxes(gt_boxes, gt_labels, [(255, 255, 255)] * len(gt_labels),
                                          ["dashed"] * len(gt_labels)), scale=scale)
        panels = [gt]
        n_pred = 0
        if det is not None:
            from bmvit.data.transforms import normalize_clips

            d = det.detect(det.forward(normalize_clips(clip[None], ds.transform.mean, ds.transform.std)))[0]
            kf = KeyFrameResult(0, 0.0, det.actors(d, W, H))
            for j, a in enumerate(kf.actors):
                a.track_id = j
            n_pred = len(kf.actors)
            panels.append(draw_frame(frame, frame_boxes(kf), scale=scale))
        gap = np.full((gt.shape[0], 4, 3), 255, np.uint8)
        image = np.concatenate([p for q in panels for p in (q, gap)][:-1], axis=1)
        path = out / f"{vid}_{int(ts):04d}.png"  # UCF/JHMDB ids are "<Class>/<video>": a subfolder
        with atomic_output(path) as tmp:  # makes the folders; an unwritable --out is one error line
            Image.fromarray(image).save(tmp, format="PNG")
        print(f"{path}: {len(gt_labels)} ground-truth actors" + (f", {n_pred} detections" if det is not None else ""))
    return 0
