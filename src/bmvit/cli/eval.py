"""``bmvit eval``: evaluate a trained checkpoint on a split and optionally render annotated videos.

Prints the per-class table of the headline frame-mAP, then labelled lines: for AVA-layout data the
frame-mAP@0.5 on the classes of ``eval.label_map`` under both protocols (ActivityNet 2019, at most 50
detections per frame; PySlowFast, uncapped; ``eval.max_dets_per_frame`` picks the headline), the
actor detector's precision/recall at θ and actor AP, and last ``frame-mAP@0.5: X`` (the headline).
Writes ``detections_<split>.csv`` (evaluated classes only) and ``metrics_<split>.json``.
"""

from __future__ import annotations

from pathlib import Path

from bmvit.cli.argtypes import count
from bmvit.config import apply_overrides
from bmvit.errors import CheckpointError, ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (frame-mAP@0.5 and actor precision/recall)")
    p.add_argument("--run", help="run folder written by `bmvit train` (uses its model.safetensors)")
    p.add_argument("--checkpoint", help="checkpoint file (default: RUN/model.safetensors)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--out", help="output folder (default: RUN/eval; RUN/eval/step_N for RUN/checkpoints/step_N/; else next to the checkpoint)")
    p.add_argument("--render", type=count(0), default=0, metavar="N", help="render N videos with predictions and GT")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.threshold=0.3 data.root=DIR")
    p.set_defaults(func=run)


def _default_out(ckpt: Path) -> Path:
    """Where ``--checkpoint`` alone writes: next to the file, except for a training checkpoint
    (``RUN/checkpoints/step_N/``, whose folder is checksummed and pruned): ``RUN/eval/step_N``."""
    if ckpt.parent.parent.name == "checkpoints":
        return ckpt.parent.parent.parent / "eval" / ckpt.parent.name
    return ckpt.parent / "eval"


def run(args) -> int:
    from bmvit.data.build import make_dataset
    from bmvit.engine.checkpoint import load_weights
    from bmvit.engine.evaluate import evaluate_split, write_split_outputs
    from bmvit.engine.device import resolve_device, set_threads
    from bmvit.models.build import build_detector

    if not args.run and not args.checkpoint:
        raise ConfigError("give --run DIR or --checkpoint FILE")
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(args.run) / "model.safetensors"
    if not args.checkpoint and not ckpt.exists() and Path(args.run, "checkpoints").is_dir():
        raise CheckpointError(f"{ckpt}: not written yet — the run did not finish (stopped or killed); finish it with "
                              f"`bmvit train ... --resume auto`, or evaluate a checkpoint: --checkpoint "
                              f"{Path(args.run) / 'checkpoints' / 'step_<N>' / 'model.safetensors'}")
    state, cfg, meta = load_weights(ckpt)
    # Overrides apply on top of the checkpoint's own config.
    apply_overrides(cfg, args.overrides)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    ds = make_dataset(cfg, args.split)
    model = build_detector(cfg.model, cfg.data, len(ds.labels), load_pretrained=False)  # trained weights follow
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a dataset / label map with another number of classes than the checkpoint's
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line),
                      " ".join(str(e).split())[:200])
        raise CheckpointError(f"{ckpt}: its weights do not fit the model of this config and data "
                              f"({len(ds.labels)} classes): {detail}") from None
    model.to(device)
    gt_csv = cfg.data.path(cfg.data.val_csv if args.split == "val" else cfg.data.train_csv)
    result, dets = evaluate_split(model, ds, gt_csv, cfg, device, progress=not args.no_progress)
    out = Path(args.out) if args.out else (Path(args.run) / "eval" if args.run else _default_out(ckpt))
    report = write_split_outputs(out, ckpt, args.split, result, dets)
    print_evaluation(report, render_videos(ds, dets, out, args.render), result.mean_ap)
    return 0


def render_videos(ds, dets, out: Path, n: int) -> list[Path]:
    """``n`` videos of the split ``ds`` drawn with its detection rows ``dets`` (``out/render_<video>.mp4``,
    the videos with the most annotated actors first)."""
    from bmvit.inference.render_split import render_split_video, videos_to_render

    return [render_split_video(ds, dets, vid, out / f"render_{vid}.mp4") for vid in videos_to_render(ds, n)]


def print_evaluation(report: dict, rendered: list, mean_ap: float) -> None:
    """What ``bmvit eval`` (and ``bmvit train`` at its end) prints of an evaluation whose files
    :func:`~bmvit.engine.evaluate.write_split_outputs` wrote; the last line is ``frame-mAP@0.5: X``."""
    print(report["table"])  # the headline's per-class table (ACT data: as eval-frame prints it)
    for path in rendered:
        print(f"rendered {path}")
    print(f"predictions: {report['predictions']}")
    for line in report["lines"]:
        print(line)
    print(f"frame-mAP@0.5: {mean_ap:.4f}")
