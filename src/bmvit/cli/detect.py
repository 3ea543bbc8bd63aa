"""``bmvit detect``: run a trained checkpoint on a video file, a folder of frames, or a live stream.

Writes to ``--out``: ``detections.json`` (per key frame: time, boxes in pixels and normalized,
actor score, top actions), ``detections.csv`` (AVA format) and ``annotated.mp4``; with
``--explain`` also ``explain/frame_XXXXXX.png`` (paper Fig. 3) for every key frame.

Stream URLs (``rtsp://``, ``http://``, ...), camera devices (``/dev/video0``, ``0``) and, with
``--stream``, files run in streaming mode (:mod:`bmvit.inference.stream`): one prediction every
``--every`` frames, latency median/p95 and dropped frames reported at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bmvit.errors import ConfigError


def _nms(text: str) -> float | str | None:
    if text == "checkpoint":
        return text
    return None if text.lower() in ("off", "none") else float(text)


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect actors and actions in a video, frames folder or stream")
    p.add_argument("input", help="video file, folder of frames, stream URL (rtsp://...) or camera (/dev/video0, 0)")
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by `bmvit train`")
    p.add_argument("--out", help="output folder (default: runs/detect/<input name>)")
    p.add_argument("--fps-keyframes", type=float, default=1.0, metavar="N", help="key frames per second (default: 1)")
    p.add_argument("--threshold", type=float, help="p(actor) threshold θ (default: the checkpoint's eval.threshold)")
    p.add_argument("--nms-iou", type=_nms, default="checkpoint", metavar="IOU|off",
                   help="class-agnostic NMS IoU (default: the checkpoint's eval.nms_iou)")
    p.add_argument("--score", choices=("action", "actor*action"), help="action score mode (default: the checkpoint's)")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="top actions per actor in the JSON (default: 5)")
    p.add_argument("--batch", type=int, default=4, metavar="B", help="clips per forward pass (default: 4)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--labels", help="label map (.pbtxt) with the class names (default: the checkpoint's)")
    p.add_argument("--fps", type=float, help="frame rate of a frames folder (default: 30) or override of the video's")
    p.add_argument("--video-id", help="video_id column of the CSV (default: the input's name)")
    p.add_argument("--first-second", type=float, default=0.0, help="CSV timestamp of frame 0 (AVA frames: 900)")
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument("--explain", action="store_true", help="also write explain/*.png: token confidence maps and boxes (Fig. 3)")
    p.add_argument("--stream", action="store_true", help="streaming mode for a file too (paced to its frame rate)")
    p.add_argument("--every", type=int, default=8, metavar="N", help="streaming: one prediction every N frames (default: 8)")
    p.add_argument("--max-frames", type=int, help="streaming: stop after this many frames")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _name(source: str) -> str:
    s = source.rstrip("/")
    stem = Path(s).stem if "://" not in s else s.split("://", 1)[1].replace("/", "_").replace(":", "_")
    return stem or "input"


def run(args) -> int:
    import torch

    from bmvit.inference.detector import FROM_CHECKPOINT, Detector
    from bmvit.inference.outputs import write_csv, write_json
    from bmvit.inference.video_source import is_stream, open_source

    if args.fps_keyframes <= 0:
        raise ConfigError(f"--fps-keyframes must be positive, got {args.fps_keyframes}")
    if args.threads:
        torch.set_num_threads(args.threads)
    det = Detector.from_checkpoint(
        args.checkpoint, device=args.device, labels=args.labels,
        threshold=FROM_CHECKPOINT if args.threshold is None else args.threshold,
        nms_iou=FROM_CHECKPOINT if args.nms_iou == "checkpoint" else args.nms_iou,
        score=args.score or FROM_CHECKPOINT, batch_size=args.batch, topk=args.topk)
    name = _name(args.input)
    out = Path(args.out) if args.out else Path("runs") / "detect" / name
    video_id = args.video_id or name
    if args.stream or is_stream(args.input):
        return _run_stream(args, det, out, video_id)

    source = open_source(args.input, args.fps)
    result = det.predict(source, args.fps_keyframes, with_outputs=args.explain, progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    doc.update(checkpoint=str(args.checkpoint), input=str(args.input))
    write_json(out / "detections.json", doc)
    write_csv(out / "detections.csv", result, video_id, args.first_second)
    n_act = sum(len(kf.actors) for kf in result.keyframes)
    print(f"{len(result.keyframes)} key frames, {n_act} actor detections -> {out / 'detections.json'}, {out / 'detections.csv'}")
    if not args.no_video or args.explain:
        _render(args, det, source.reopen(), result, out)
    return 0


def _render(args, det, source, result, out: Path) -> None:
    """annotated.mp4 and/or explain/*.png, in one more pass over the input."""
    from PIL import Image

    from bmvit.inference.explain import explain_image
    from bmvit.inference.outputs import annotated_frames, render_annotated

    explained = []

    def explain(i, frame, kf):
        if args.explain:
            path = out / "explain" / f"frame_{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(explain_image(frame, kf.outputs, det.threshold)).save(path)
            explained.append(path)

    if args.no_video:
        for _ in annotated_frames(source, result, on_keyframe=explain, draw=False):
            pass
    else:
        print(f"annotated video -> {render_annotated(out / 'annotated.mp4', source, result, on_keyframe=explain)}")
    if explained:
        print(f"{len(explained)} explanation images -> {out / 'explain'}")


def _run_stream(args, det, out: Path, video_id: str) -> int:
    from bmvit.inference.detector import VideoResult
    from bmvit.inference.outputs import frame_boxes, write_csv, write_json
    from bmvit.inference.render import draw_frame
    from bmvit.inference.stream import BackgroundVideoWriter, run_stream
    from bmvit.inference.video_source import open_source

    if args.explain:
        raise ConfigError("--explain works on files and frame folders, not in streaming mode")
    source = open_source(args.input, args.fps)
    out.mkdir(parents=True, exist_ok=True)
    writer = None if args.no_video else BackgroundVideoWriter(out / "annotated.mp4", source.info.fps)
    scale = max(1.0, 480 / max(source.info.width, 1))

    def on_frame(i, frame, latest):
        if writer is not None:
            writer.put(draw_frame(frame, frame_boxes(latest), scale=scale))

    def on_prediction(p):
        if not args.no_progress:
            print(f"\rprediction {p.index + 1}: frame {p.newest_frame}, {len(p.keyframe.actors)} actors, "
                  f"latency {p.latency_s * 1e3:.0f} ms", end="", file=sys.stderr, flush=True)

    print(f"streaming {args.input} at {source.info.fps:g} fps: one prediction every {args.every} frames "
          f"(Ctrl-C to stop)", file=sys.stderr)
    try:
        report, preds = run_stream(det, source, args.every, max_frames=args.max_frames, on_frame=on_frame,
                                   on_prediction=on_prediction)
    finally:
        video = writer.close() if writer is not None else None
    if not args.no_progress:
        print(file=sys.stderr)
    result = VideoResult(source.info, [p.keyframe for p in preds], det.labels,
                         {**det.settings(), "every": args.every, "mode": "stream"})
    result.video.num_frames = report.frames
    doc = result.to_dict()
    doc.update(checkpoint=str(args.checkpoint), input=str(args.input), stream=report.to_dict())
    for entry, p in zip(doc["keyframes"], preds):
        entry.update(newest_frame=p.newest_frame, latency_s=p.latency_s)
    write_json(out / "detections.json", doc)
    write_csv(out / "detections.csv", result, video_id, args.first_second)
    print(report.summary())
    if writer is not None and writer.skipped:
        print(f"annotated video: {writer.skipped} frames not written (the encoder fell behind)")
    if video is not None:
        print(f"annotated video -> {video}")
    print(f"detections -> {out / 'detections.json'}, {out / 'detections.csv'}")
    return 0
