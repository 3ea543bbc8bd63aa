"""``bmvit detect``: run a trained checkpoint on video files, folders of frames, or a live stream.

Writes to ``--out``: ``detections.json`` (per key frame: time, boxes in pixels and normalized,
actor score, top actions), ``detections.csv`` (AVA format) and ``annotated.mp4``; with
``--explain`` also ``explain/frame_XXXXXX.png`` (paper Fig. 3) for every key frame.

A remote file (``https://host/clip.mp4``: an http(s)/ftp URL ending in a video extension) is read
like a local file. Other URLs (``rtsp://``, ``http://host/live``, ...), camera devices (``/dev/video0``, ``0``) and, with
``--stream``, files run in streaming mode (:mod:`bmvit.inference.stream`): one prediction every
``--every`` frames, latency median/p95 and dropped frames reported at the end.

Several inputs (more than one argument, a folder of videos, ``@list.txt``) or a ``torchrun``
launch run as a batch (:mod:`bmvit.inference.batch`): per-video outputs in ``--out/<video id>/``,
``--out/index.jsonl`` and a merged ``--out/detections.csv``; complete videos are skipped on a
re-run (``--overwrite`` redoes them); ``--on-error skip|error`` decides what a bad input does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bmvit.atomic import make_folder
from bmvit.cli.argtypes import count, number, probability
from bmvit.errors import ConfigError, DataError


def _nms(text: str) -> float | str | None:
    if text == "checkpoint":
        return text
    return None if text.lower() in ("off", "none") else float(text)


def _offsets(text: str) -> list[int]:
    """``--time-tta``: ``off`` or comma-separated distinct integer frame offsets (``-1,1``)."""
    if text.strip().lower() in ("off", "none", ""):
        return []
    try:
        out = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected off or integer frame offsets like -1,1, got {text!r}") from None
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"frame offsets must be distinct, got {text!r}")
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect actors and actions in a video, frames folder or stream")
    p.add_argument("input", nargs="+",
                   help="video file(s) (local or https://.../clip.mp4), folder(s) of frames or of videos, "
                        "@list.txt (one path or URL per line), a stream URL (rtsp://...) or camera (/dev/video0, 0)")
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by `bmvit train`")
    p.add_argument("--out", help="output folder (default: runs/detect/<input name>; several inputs: runs/detect/batch)")
    p.add_argument("--fps-keyframes", type=number(0, open_min=True), default=1.0, metavar="N", help="key frames per second (default: 1)")
    p.add_argument("--threshold", type=probability, help="p(actor) threshold θ (default: the checkpoint's eval.threshold)")
    p.add_argument("--nms-iou", type=_nms, default="checkpoint", metavar="IOU|off",
                   help="class-agnostic NMS IoU (default: the checkpoint's eval.nms_iou)")
    p.add_argument("--score", choices=("action", "actor*action"), help="action score mode (default: the checkpoint's)")
    p.add_argument("--hflip-tta", choices=("on", "off"),
                   help="average each clip with its mirror image, 2x the passes (default: the checkpoint's eval.hflip_tta)")
    p.add_argument("--time-tta", type=_offsets, metavar="OFFSETS|off",
                   help="average the clips moved by these frame offsets, e.g. --time-tta=-1,1 (one pass each; "
                        "default: the checkpoint's eval.time_tta)")
    p.add_argument("--topk", type=count(1), default=5, metavar="K", help="top actions per actor in the JSON (default: 5)")
    p.add_argument("--batch", type=count(1), default=4, metavar="B", help="clips per forward pass (default: 4)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="backbone precision: bf16 runs it in bfloat16 (CPUs with AVX-512 BF16/AMX, GPUs) (default: fp32)")
    p.add_argument("--quantize", choices=("int8",), help="int8: dynamic int8 linear layers (CPU)")
    p.add_argument("--threads", type=count(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--labels", help="label map (.pbtxt) with the class names (default: the checkpoint's)")
    p.add_argument("--fps", type=number(0, open_min=True), help="frame rate of a frames folder (default: 30) or override of the video's")
    p.add_argument("--video-id", help="video_id column of the CSV (default: the input's name)")
    p.add_argument("--first-second", type=number(), default=0.0, help="CSV timestamp of frame 0 (AVA frames: 900)")
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument("--export", choices=("cvat",), help="also write cvat_annotations.xml: the detections as "
                   "CVAT for video 1.1 pre-annotations (docs/custom-data.md)")
    p.add_argument("--explain", action="store_true", help="also write explain/*.png: token confidence maps and boxes (Fig. 3)")
    p.add_argument("--stream", action="store_true", help="streaming mode for a file too (paced to its frame rate)")
    p.add_argument("--every", type=count(1), default=8, metavar="N", help="streaming: one prediction every N frames (default: 8)")
    p.add_argument("--max-frames", type=count(1), help="streaming: stop after this many frames")
    p.add_argument("--timeout", type=number(0, open_min=True), default=20.0, metavar="S",
                   help="streams, cameras and remote files: seconds with nothing received before failing (default: 20)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--on-error", choices=("skip", "error"), default="skip",
                   help="several inputs: a bad input is recorded as failed and the rest goes on (skip, exit "
                        "status 1 at the end) or stops the run (error) (default: skip)")
    p.add_argument("--overwrite", action="store_true", help="several inputs: redo videos whose outputs are complete")
    p.set_defaults(func=run)


def _name(source: str) -> str:
    from bmvit.inference.video_source import is_remote_file, url_name

    s = source.rstrip("/")
    if is_remote_file(s):
        return Path(url_name(s)).stem or "input"
    stem = Path(s).stem if "://" not in s else s.split("://", 1)[1].replace("/", "_").replace(":", "_")
    return stem or "input"


def run(args) -> int:
    t_start = time.perf_counter()
    import torch

    from bmvit.engine.distributed import torchrun_env
    from bmvit.inference.batch import INDEX_FILE
    from bmvit.inference.batch_inputs import is_collection
    from bmvit.inference.detector import FROM_CHECKPOINT, Detector
    from bmvit.inference.video_source import is_stream

    world = torchrun_env().world_size  # one line for a WORLD_SIZE without torchrun's other variables
    batch = len(args.input) > 1 or is_collection(args.input[0]) or world > 1
    if batch and (args.stream or any(is_stream(i) for i in args.input)):
        raise ConfigError("--stream and live sources take one input; run one `bmvit detect` per stream")
    if batch and args.video_id:
        raise ConfigError("--video-id names one input; with several inputs the ids are the file names")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if batch and device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per rank
    det = Detector.from_checkpoint(
        args.checkpoint, device=device, labels=args.labels,
        threshold=FROM_CHECKPOINT if args.threshold is None else args.threshold,
        nms_iou=FROM_CHECKPOINT if args.nms_iou == "checkpoint" else args.nms_iou,
        score=args.score or FROM_CHECKPOINT, batch_size=args.batch, topk=args.topk, dtype=args.dtype,
        quantize=args.quantize, hflip_tta=FROM_CHECKPOINT if args.hflip_tta is None else args.hflip_tta == "on",
        time_tta=FROM_CHECKPOINT if args.time_tta is None else args.time_tta)
    if batch:
        return _run_batch(args, det)
    name = _name(args.input[0])
    out = Path(args.out) if args.out else Path("runs") / "detect" / name
    if (out / INDEX_FILE).exists():  # one input written over a batch's merged detections.csv: refused
        raise ConfigError(f"--out {out}: holds the outputs of a batch ({INDEX_FILE}); give one input its own --out, "
                          f"or run it with the batch's inputs")
    video_id = args.video_id or name
    if args.stream or is_stream(args.input[0]):
        return _run_stream(args, det, out, video_id)
    t_detect = time.perf_counter()
    result, t_end = _detect_one(args, det, args.input[0], out, video_id, progress=not args.no_progress)
    if det.forward_clips:
        wall = t_end - t_detect
        print(f"time: {wall:.2f} s detecting {len(result.keyframes)} key frames, {det.forward_seconds:.2f} s of it in "
              f"the model's forward (wall/forward {wall / det.forward_seconds:.2f}); start-up {t_detect - t_start:.2f} s"
              + ("" if args.no_video and not args.explain else " (rendering not included)"))
    return 0


def _detect_one(args, det, input_path: str, out: Path, video_id: str, progress: bool = False, on_frame=None,
                verbose: bool = True):
    """Detect in one file or frames folder and write its outputs into ``out``; returns the VideoResult
    and the ``perf_counter`` time its detections were written (before rendering, if asked for)."""
    from bmvit.inference.batch import clear_outputs
    from bmvit.inference.outputs import write_csv, write_json
    from bmvit.inference.video_source import open_source

    source = open_source(input_path, args.fps, args.timeout)
    result = det.predict(source, args.fps_keyframes, with_outputs=args.explain, progress=progress, on_frame=on_frame)
    if result.video.warning:  # e.g. a file cut short: its detections cover only what decodes
        print(f"warning: {input_path}: {result.video.warning}", file=sys.stderr)
    make_folder(out)
    clear_outputs(out)  # an earlier run's annotated.mp4 / explain / CVAT file must not outlive its detections
    doc = result.to_dict()
    doc.update(checkpoint=str(args.checkpoint), input=str(input_path))
    write_json(out / "detections.json", doc)
    write_csv(out / "detections.csv", result, video_id, args.first_second)
    if args.export == "cvat":  # pre-annotations to correct in CVAT (bmvit.inference.cvat_export)
        from bmvit.inference.cvat_export import export_cvat

        xml = export_cvat(out, result, det.threshold)
        if verbose:
            print(f"CVAT pre-annotations -> {xml}")
    detected = time.perf_counter()
    n_act = sum(len(kf.actors) for kf in result.keyframes)
    if verbose:
        print(f"{len(result.keyframes)} key frames, {n_act} actor detections -> {out / 'detections.json'}, {out / 'detections.csv'}")
    if not args.no_video or args.explain:
        _render(args, det, source.reopen(), result, out, verbose=verbose)
    return result, detected


def _fingerprint(args, det) -> dict:
    """The settings that shape a video's detections: a re-run with other ones must not skip it."""
    ck = Path(args.checkpoint)
    st = ck.stat()
    return {"checkpoint": str(ck.resolve()), "checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns,
            "fps_keyframes": args.fps_keyframes, "fps": args.fps, "first_second": args.first_second,
            "threshold": det.threshold, "nms_iou": det.nms_iou, "score": det.score, "topk": det.topk,
            "dtype": det.dtype, "quantize": det.quantize, "hflip_tta": det.hflip_tta,
            "time_tta": list(det.views), "labels": {str(k): v for k, v in det.labels.items()}}


def _run_batch(args, det) -> int:
    """Several inputs (module docstring): this rank's share, then rank 0 writes the merged files."""
    from bmvit.inference.batch import BatchRun, gather_entries, join_torchrun, leave_torchrun, write_merged
    from bmvit.inference.batch_inputs import expand_inputs

    d = join_torchrun(args.device)
    try:
        out = Path(args.out) if args.out else Path("runs") / "detect" / "batch"
        inputs = expand_inputs(args.input, log=(lambda m: print(m, file=sys.stderr)) if d.rank == 0 else None, out=out)
        make_folder(out)
        required = ["detections.json", "detections.csv"] + ([] if args.no_video else ["annotated.mp4"])
        required += ["explain"] if args.explain else []
        required += ["cvat_annotations.xml"] if args.export else []
        runner = BatchRun(out, inputs, _fingerprint(args, det), required, args.overwrite, args.on_error, d)
        if d.rank == 0:
            print(f"{len(inputs)} inputs -> {out}" + (f" ({d.world} ranks)" if d.world > 1 else ""), file=sys.stderr)

        def process(inp, folder, on_frame):
            result, _ = _detect_one(args, det, inp.path, folder, inp.id, on_frame=on_frame, verbose=False)
            return len(result.keyframes), sum(len(kf.actors) for kf in result.keyframes)

        t0 = time.perf_counter()
        mine = runner.run(process, progress=not args.no_progress and d.rank == 0)
        wall = time.perf_counter() - t0
        entries = gather_entries(mine, d)
        failed = [e for e in entries if e.status == "failed"]
        if runner.error is not None:  # --on-error error under torchrun: the failing rank says why
            raise runner.error
        if args.on_error == "error" and failed:  # another rank stopped the run (and printed its error)
            return 2
        if d.rank == 0:
            index, merged = write_merged(out, inputs, entries)
            count = {s: sum(e.status == s for e in entries) for s in ("ok", "skipped", "failed")}
            print(f"{len(entries)} inputs: {count['ok']} ok, {count['skipped']} skipped (done before), "
                  f"{count['failed']} failed -> {index}, {merged}")
        if det.forward_clips:
            print(f"time{'' if d.world == 1 else f' (rank {d.rank})'}: {wall:.2f} s for {det.forward_clips} clips, "
                  f"{det.forward_seconds:.2f} s of it in the model's forward (wall/forward {wall / det.forward_seconds:.2f})"
                  + ("" if args.no_video and not args.explain else "; rendering included"))
        return 1 if failed else 0
    finally:
        leave_torchrun()


def _render(args, det, source, result, out: Path, verbose: bool = True) -> None:
    """annotated.mp4 and/or explain/*.png, in one more pass over the input."""
    from PIL import Image

    from bmvit.inference.explain import explain_image
    from bmvit.inference.outputs import annotated_frames, render_annotated

    explained = []

    def explain(i, frame, kf):
        if args.explain:
            path = out / "explain" / f"frame_{i:06d}.png"
            make_folder(path.parent)
            Image.fromarray(explain_image(frame, kf.outputs, det.threshold)).save(path)
            explained.append(path)

    if args.no_video:
        for _ in annotated_frames(source, result, on_keyframe=explain, draw=False):
            pass
    else:
        video = render_annotated(out / "annotated.mp4", source, result, on_keyframe=explain)
        if verbose:
            print(f"annotated video -> {video}")
    if explained and verbose:
        print(f"{len(explained)} explanation images -> {out / 'explain'}")


def _run_stream(args, det, out: Path, video_id: str) -> int:
    from bmvit.inference.batch import clear_outputs
    from bmvit.inference.detector import VideoResult
    from bmvit.inference.outputs import frame_boxes, write_csv, write_json
    from bmvit.inference.render import display_scale, draw_frame
    from bmvit.inference.stream import BackgroundVideoWriter, run_stream
    from bmvit.inference.video_source import open_source

    if args.explain:
        raise ConfigError("--explain works on files and frame folders, not in streaming mode")
    if args.export:
        raise ConfigError("--export cvat works on files and frame folders, not in streaming mode")
    source = open_source(args.input[0], args.fps, args.timeout)
    make_folder(out)
    clear_outputs(out)  # no file of an earlier run next to this one's
    writer = None if args.no_video else BackgroundVideoWriter(out / "annotated.mp4", source.info.fps)
    aspect = source.info.sample_aspect  # anamorphic video: drawn with square pixels
    scale = display_scale(round(source.info.width * aspect), source.info.height)

    def on_frame(i, frame, latest):
        if writer is not None:
            writer.put(draw_frame(frame, frame_boxes(latest), scale=scale, pixel_aspect=aspect))

    def on_prediction(p):
        if not args.no_progress:
            print(f"\rprediction {p.index + 1}: frame {p.newest_frame}, {len(p.keyframe.actors)} actors, "
                  f"latency {p.latency_s * 1e3:.0f} ms", end="", file=sys.stderr, flush=True)

    print(f"streaming {args.input[0]} at {source.info.fps:g} fps: one prediction every {args.every} frames "
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
    doc.update(checkpoint=str(args.checkpoint), input=str(args.input[0]), stream=report.to_dict())
    for entry, p in zip(doc["keyframes"], preds):
        entry.update(newest_frame=p.newest_frame, latency_s=p.latency_s)
    write_json(out / "detections.json", doc)
    write_csv(out / "detections.csv", result, video_id, args.first_second)
    print(report.summary())
    if result.video.warning:  # a frames folder whose numbering jumps, a file cut short
        print(f"warning: {args.input[0]}: {result.video.warning}", file=sys.stderr)
    if writer is not None and writer.skipped:
        print(f"annotated video: {writer.skipped} frames not written (the encoder fell behind)")
    if video is not None:
        print(f"annotated video -> {video}")
    print(f"detections -> {out / 'detections.json'}, {out / 'detections.csv'}")
    if report.error is not None:  # the source failed mid-stream: its predictions up to then are written
        raise DataError(f"{report.error}; the stream ended after {report.frames} frames, its {report.predictions} "
                        f"predictions are in {out / 'detections.json'}")
    return 0
