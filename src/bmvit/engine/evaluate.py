"""Run a detector over a dataset split and score it with frame-mAP@0.5.

The metric follows the dataset: AVA layout (``data.format=ava``) is scored by the official AVA
evaluator's rules (:mod:`bmvit.evaluation.ava`) against ``data.val_csv``; UCF101-24 / JHMDB51-21
(``data.format=act``) by ACT's frame-mAP (:mod:`bmvit.evaluation.frame_map`, what
``bmvit eval-frame`` computes) against the boxes of the ACT pickle, in pixels of each video's
resolution, on the frames the dataset evaluates (every frame, or every ``data.keyframe_step``-th).

Single process: every key frame is predicted in dataset order, ``eval.batch_size`` at a time.

Distributed (``torch.distributed`` initialized, world size W > 1): the single-process batches
``0, 1, 2, ...`` are dealt round-robin, batch ``b`` to rank ``b mod W``. So every sample is
predicted exactly once (no sampler padding, no duplicates; ranks may get one batch more than
others), each batch has exactly the composition it has in a single process, and rank 0
reassembles the rows in single-process order. Rows are gathered on rank 0
(``gather_object``), rank 0 computes mAP with :func:`bmvit.evaluation.ava.evaluate_ava`, and
the result (without its precision/recall curves) is broadcast so that every rank returns the
same number. A model wrapped in ``DistributedDataParallel`` is unwrapped first: its forward
would run collectives, which ranks with different batch counts cannot match.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.config import Config
from bmvit.data.ava import AvaClips
from bmvit.data.collate import collate_fn, unpad_boxes, valid_tokens
from bmvit.data.transforms import normalize_clips
from bmvit.data.ava_format import AvaRows, read_exclusions, read_rows
from bmvit.evaluation.ava import AvaEvalResult, evaluate_ava
from bmvit.evaluation.frame_csv import FrameRows
from bmvit.evaluation.frame_map import FrameMapResult, evaluate_frame_map
from bmvit.inference.postprocess import postprocess

__all__ = ["act_frame_map", "evaluate_split", "predict_rows", "shard_batches"]

# One batch's rows, column-wise: video ids, timestamps (R,), boxes (R, 4), actions (R,), scores (R,).
_Block = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialized process group."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def shard_batches(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[tuple[int, list[int]]]:
    """``(batch number, sample indices)`` of the single-process batches that ``rank`` predicts."""
    starts = range(0, num_samples, batch_size)
    return [(b, list(range(s, min(s + batch_size, num_samples))))
            for b, s in enumerate(starts) if b % world_size == rank]


@torch.no_grad()
def _predict_blocks(model: torch.nn.Module, dataset: AvaClips, batches: list[tuple[int, list[int]]], cfg: Config,
                    device: torch.device, progress: bool) -> list[tuple[int, _Block]]:
    """Detections of the given batches (one row per box and class), one block per batch."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    loader = DataLoader(dataset, batch_sampler=[idx for _, idx in batches], collate_fn=collate_fn(cfg.data.resize),
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    class_ids = np.asarray(dataset.class_ids)
    blocks: list[tuple[int, _Block]] = []
    for (b, _), (clips, targets) in zip(batches, tqdm(loader, desc="eval", disable=not progress, leave=False)):
        x = normalize_clips(clips.to(device, non_blocking=True), cfg.data.mean, cfg.data.std, targets)  # uint8 -> float
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp == "bf16" and device.type == "cuda"):
            outputs = model(x)
        valid = valid_tokens(outputs["cells"], targets)  # (B, L) padded batches (keep_aspect), else None
        dets = postprocess(outputs, cfg.eval.threshold, cfg.eval.nms_iou, cfg.eval.score, valid)
        vids, ts, boxes, acts, scores = [], [], [], [], []
        for t, d in zip(targets, dets):
            M, K = d.action_scores.shape
            if M == 0:
                continue
            vids += [t["video_id"]] * (M * K)
            ts.append(np.full(M * K, t["timestamp"], dtype=np.int64))
            xyxy = unpad_boxes(d.boxes.float(), t)  # (M, 4) normalized to the key frame
            boxes.append(np.repeat(xyxy.cpu().numpy().astype(np.float64), K, axis=0))
            acts.append(np.tile(class_ids, M))
            scores.append(d.action_scores.float().cpu().numpy().reshape(-1).astype(np.float64))
        if vids:
            blocks.append((b, (vids, np.concatenate(ts), np.concatenate(boxes), np.concatenate(acts),
                               np.concatenate(scores))))
    model.train(was_training)
    return blocks


def _merge(blocks: list[tuple[int, _Block]]) -> AvaRows:
    """Rows of all blocks in batch order."""
    if not blocks:
        return AvaRows.empty()
    blocks = sorted(blocks, key=lambda item: item[0])
    vids = [v for _, blk in blocks for v in blk[0]]
    cols = [np.concatenate([blk[i] for _, blk in blocks]) for i in range(1, 5)]
    return AvaRows(vids, cols[0], cols[1], cols[2], cols[3])


def predict_rows(model: torch.nn.Module, dataset: AvaClips, cfg: Config, device: torch.device,
                 progress: bool = True) -> AvaRows:
    """Detections on every key frame of ``dataset`` as AVA rows (one row per box and class).

    Distributed: each rank predicts its shard (module docstring); rank 0 returns all rows in
    single-process order, the other ranks ``AvaRows.empty()``.
    """
    rank, world = _world()
    batches = shard_batches(len(dataset), cfg.eval.batch_size, rank, world)
    blocks = _predict_blocks(model, dataset, batches, cfg, device, progress and rank == 0)
    if world == 1:
        return _merge(blocks)
    gathered: list | None = [None] * world if rank == 0 else None
    tdist.gather_object(blocks, gathered, dst=0)
    if rank != 0:
        return AvaRows.empty()
    return _merge([blk for part in gathered for blk in part])


def act_frame_map(dataset, detections: AvaRows, iou_threshold: float = 0.5) -> FrameMapResult:
    """ACT frame-mAP of AVA-style ``detections`` (normalized boxes, class ids 1..K) on an
    :class:`~bmvit.data.act.ActClips` split: GT = every annotated box of the split's videos on
    the frames the dataset holds, boxes scaled to pixels by each video's resolution."""
    ann = dataset.annotations
    classes = list(ann.labels)
    table = dataset.keyframes
    kept = {(table.videos[vi], int(f)) for vi, f in zip(table.video_index, table.timestamps)}
    g_vid, g_frame, g_label, g_box = [], [], [], []
    for v in table.videos:
        H, W = ann.resolution[v]
        for tube in ann.tubes[v]:
            for f, b in zip(tube.frames.tolist(), tube.boxes.tolist()):
                if (v, f) in kept:
                    g_vid.append(v)
                    g_frame.append(f)
                    g_label.append(tube.label)
                    g_box.append(b)
    res = {v: ann.resolution[v] for v in table.videos}
    scale = np.array([[res[v][1], res[v][0], res[v][1], res[v][0]] for v in detections.video_ids], np.float64)
    gt = _frame_rows("ground truth", g_vid, g_frame, g_label, np.asarray(g_box, np.float64).reshape(-1, 4))
    det = _frame_rows("detections", detections.video_ids, detections.timestamps, detections.actions - 1,
                      detections.boxes * scale.reshape(-1, 4), detections.extra)
    return evaluate_frame_map(gt, det, classes, iou_threshold)


def _frame_rows(what, videos, frames, labels, boxes, scores=None) -> FrameRows:
    n = len(videos)
    return FrameRows(what, np.asarray(videos, dtype=object).astype(str) if n else np.zeros(0, str),
                     np.asarray(frames, np.int64), np.asarray(labels, np.int64), boxes,
                     np.ones(n) if scores is None else np.asarray(scores, np.float64), np.full(n, ""),
                     np.arange(1, n + 1))


def evaluate_split(model: torch.nn.Module, dataset: AvaClips, gt_csv, cfg: Config, device: torch.device,
                   progress: bool = True) -> tuple[AvaEvalResult | FrameMapResult, AvaRows]:
    """Frame-mAP@0.5 of ``model`` on ``dataset`` (module docstring: AVA rules, or ACT's for
    ``data.format=act``, where ``gt_csv`` is not used); also the detection rows (all of them on
    rank 0, none on other ranks). Every rank returns the same result."""
    detections = predict_rows(model, dataset, cfg, device, progress)
    rank, world = _world()
    result = None
    if rank == 0 and cfg.data.format == "act":
        result = act_frame_map(dataset, detections)
    elif rank == 0:
        exclusions = read_exclusions(cfg.data.path(cfg.data.exclusions)) if cfg.data.exclusions else None
        result = evaluate_ava(read_rows(gt_csv), detections, dataset.labels, exclusions, cfg.eval.max_dets_per_frame)
    if world > 1:
        box = [dataclasses.replace(result, pr_curves={}) if result is not None else None]
        tdist.broadcast_object_list(box, src=0)
        result = box[0] if rank != 0 else result
    return result, detections
