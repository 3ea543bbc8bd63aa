"""Run a detector over a dataset split and hand its detections to the split's evaluator.

The metric belongs to the dataset format (:mod:`bmvit.evaluation.evaluators`: AVA rules under both
protocols, or ACT frame-mAP, plus the actor detector's precision/recall/AP); this module only
predicts. Every key frame gives one row per kept box and evaluated class (the evaluator's
``labels``) — :class:`~bmvit.data.formats.ava.AvaRows`, boxes normalized to the key frame — and
the actor rows (:class:`~bmvit.evaluation.actor_metrics.ActorRows`: per clip the tokens kept at θ
and at least the ``MAX_CANDIDATES`` of highest p(actor)). Detections stay in memory (numpy rows);
no CSV text is involved.

Single process: every key frame is predicted in dataset order, ``eval.batch_size`` at a time.

Distributed (``torch.distributed`` initialized, world size W > 1): the single-process batches
``0, 1, 2, ...`` are dealt round-robin, batch ``b`` to rank ``b mod W``. So every sample is
predicted exactly once (no sampler padding, no duplicates; ranks may get one batch more than
others), each batch has exactly the composition it has in a single process, and rank 0
reassembles the rows in single-process order. Rows are gathered on rank 0
(``gather_object``), rank 0 computes the metrics, and the result (without precision/recall
curves) is broadcast so that every rank returns the same numbers. A model wrapped in
``DistributedDataParallel`` is unwrapped first: its forward would run collectives, which ranks
with different batch counts cannot match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.boxes import cxcywh_to_xyxy
from bmvit.config import Config
from bmvit.data.clip_dataset import ClipDataset
from bmvit.data.collate import collate_fn, unpad_boxes, valid_tokens
from bmvit.data.formats.ava import AvaRows
from bmvit.data.skips import reader_of
from bmvit.data.transforms import normalize_clips
from bmvit.engine.stop import defer_stop_signals
from bmvit.evaluation.actor_metrics import MAX_CANDIDATES, ActorRows
from bmvit.evaluation.evaluators import build_evaluator, eval_labels
from bmvit.evaluation.split_result import SplitEvaluation
from bmvit.models.flip_tta import FlipTTA, swap_columns
from bmvit.models.postprocess import Detections, postprocess
from bmvit.models.time_tta import TimeTTA

__all__ = ["PredictOptions", "evaluate_split", "predict", "predict_rows", "shard_batches", "write_split_outputs"]

# One batch's rows, column-wise: video ids, timestamps (R,), boxes (R, 4), actions (R,), scores (R,).
_Block = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PredictOptions:
    """What predicting a split takes from the config."""

    batch_size: int  # eval.batch_size
    num_workers: int  # data.num_workers
    resize: str  # data.resize (collation: padded batches for keep_aspect)
    mean: Sequence[float]  # data.mean
    std: Sequence[float]  # data.std
    bf16: bool  # train.amp == bf16 (autocast on CUDA)
    threshold: float  # eval.threshold: θ on p(actor)
    nms_iou: float | None  # eval.nms_iou
    score: str  # eval.score
    hflip_tta: bool = False  # eval.hflip_tta: average with the mirrored clip (models/flip_tta.py)
    hflip_swap: Sequence[Sequence[int]] = ()  # data.hflip_swap: action-id pairs a mirror swaps

    @classmethod
    def from_config(cls, cfg: Config) -> PredictOptions:
        return cls(cfg.eval.batch_size, cfg.data.num_workers, cfg.data.resize, cfg.data.mean, cfg.data.std,
                   cfg.train.amp == "bf16", cfg.eval.threshold, cfg.eval.nms_iou, cfg.eval.score,
                   cfg.eval.hflip_tta, tuple(tuple(p) for p in cfg.data.hflip_swap))


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
def _predict_blocks(model: torch.nn.Module, dataset: ClipDataset, batches: list[tuple[int, list[int]]],
                    opts: PredictOptions, device: torch.device, progress: bool,
                    class_ids: list[int]) -> list[tuple[int, _Block | None, ActorRows]]:
    """Detections of the given batches (one row per box and evaluated class) and their actor
    rows, one block per batch."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if opts.hflip_tta:
        model = FlipTTA(model, swap_columns(opts.hflip_swap, dataset.class_ids))
    reader = reader_of(dataset)
    views = getattr(getattr(reader, "transform", None), "views", (0,))  # eval.time_tta, as read
    if len(views) > 1:
        model = TimeTTA(model, len(views), reader.num_frames)  # clips (B, 3, V·T, S, S): V passes per key frame
    loader = DataLoader(dataset, batch_sampler=[idx for _, idx in batches], collate_fn=collate_fn(opts.resize),
                        num_workers=opts.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=defer_stop_signals)  # a job-wide SIGTERM: the main process decides
    was_training = model.training
    model.eval()
    columns = torch.as_tensor([list(dataset.class_ids).index(c) for c in class_ids], dtype=torch.long)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    blocks: list[tuple[int, _Block | None, ActorRows]] = []
    for (b, sample_ids), (clips, targets) in zip(batches, tqdm(loader, desc="eval", disable=not progress, leave=False)):
        x = normalize_clips(clips.to(device, non_blocking=True), opts.mean, opts.std, targets)  # uint8 -> float
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16 and device.type == "cuda"):
            outputs = model(x)
        valid = valid_tokens(outputs["cells"], targets)  # (B, L) padded batches (keep_aspect), else None
        dets = postprocess(outputs, opts.threshold, opts.nms_iou, opts.score, valid)
        cands = postprocess(outputs, -1.0, opts.nms_iou, opts.score, valid)  # every token: actor AP
        blocks.append((b, _rows(targets, dets, class_ids, columns), _actor_rows(sample_ids, targets, cands,
                                                                                opts.threshold)))
    model.train(was_training)
    return blocks


def _rows(targets: list[dict], dets: list[Detections], class_ids: np.ndarray, columns: torch.Tensor) -> _Block | None:
    """One row per detected box and evaluated class (``columns``: their action-score columns)."""
    vids, ts, boxes, acts, scores = [], [], [], [], []
    for t, d in zip(targets, dets):
        M, K = len(d.boxes), len(class_ids)
        if M == 0:
            continue
        vids += [t["video_id"]] * (M * K)
        ts.append(np.full(M * K, t["timestamp"], dtype=np.int64))
        xyxy = unpad_boxes(d.boxes.float(), t)  # (M, 4) normalized to the key frame
        boxes.append(np.repeat(xyxy.cpu().numpy().astype(np.float64), K, axis=0))
        acts.append(np.tile(class_ids, M))
        scores.append(d.action_scores.float()[:, columns].cpu().numpy().reshape(-1).astype(np.float64))
    if not vids:
        return None
    return vids, np.concatenate(ts), np.concatenate(boxes), np.concatenate(acts), np.concatenate(scores)


def _actor_rows(sample_ids: list[int], targets: list[dict], cands: list[Detections], threshold: float) -> ActorRows:
    """GT actors and actor candidates of one batch: per clip the tokens kept at θ, and at least
    the ``MAX_CANDIDATES`` of highest p(actor) (actor AP)."""
    g_frame, g_boxes, c_frame, c_boxes, c_scores, c_kept = [], [], [], [], [], []
    for i, t, c in zip(sample_ids, targets, cands):
        gt = cxcywh_to_xyxy(unpad_boxes(t["boxes"].float().cpu(), t)).numpy().astype(np.float64)  # (N, 4)
        g_frame.append(np.full(len(gt), i, np.int64))
        g_boxes.append(gt.reshape(-1, 4))
        kept = (c.actor_scores > threshold).numpy()  # (L,) as postprocess keeps them
        order = np.argsort(-c.actor_scores.float().numpy(), kind="stable")  # best first
        take = order[: max(MAX_CANDIDATES, int(kept.sum()))]
        c_frame.append(np.full(len(take), i, np.int64))
        c_boxes.append(unpad_boxes(c.boxes.float(), t).numpy().astype(np.float32).reshape(-1, 4)[take])
        c_scores.append(c.actor_scores.float().numpy()[take])
        c_kept.append(kept[take])
    return ActorRows(np.concatenate(g_frame), np.concatenate(g_boxes), np.concatenate(c_frame), np.concatenate(c_boxes),
                     np.concatenate(c_scores), np.concatenate(c_kept))


def _merge(blocks: list[tuple[int, _Block | None, ActorRows]]) -> tuple[AvaRows, ActorRows | None]:
    """Rows and actors of all blocks in batch order."""
    blocks = sorted(blocks, key=lambda item: item[0])
    actors = ActorRows(*(np.concatenate([blk[2][i] for blk in blocks]) for i in range(6))) if blocks else None
    rows = [blk[1] for blk in blocks if blk[1] is not None]
    if not rows:
        return AvaRows.empty(), actors
    vids = [v for r in rows for v in r[0]]
    cols = [np.concatenate([r[i] for r in rows]) for i in range(1, 5)]
    return AvaRows(vids, cols[0], cols[1], cols[2], cols[3]), actors


def predict(model: torch.nn.Module, dataset: ClipDataset, opts: PredictOptions, class_ids: list[int],
            device: torch.device, progress: bool = True) -> tuple[AvaRows, ActorRows | None]:
    """Detections on every key frame of ``dataset`` as AVA rows (one row per box and class of
    ``class_ids``), and the actor rows of :func:`_actor_rows`.

    Distributed: each rank predicts its shard (module docstring); rank 0 returns everything in
    single-process order, the other ranks ``(AvaRows.empty(), None)``.
    """
    rank, world = _world()
    batches = shard_batches(len(dataset), opts.batch_size, rank, world)
    blocks = _predict_blocks(model, dataset, batches, opts, device, progress and rank == 0, class_ids)
    if world == 1:
        return _merge(blocks)
    gathered: list | None = [None] * world if rank == 0 else None
    tdist.gather_object(blocks, gathered, dst=0)
    if rank != 0:
        return AvaRows.empty(), None
    return _merge([blk for part in gathered for blk in part])


def predict_rows(model: torch.nn.Module, dataset: ClipDataset, cfg: Config, device: torch.device,
                 progress: bool = True) -> AvaRows:
    """The detection rows of :func:`predict` on the classes ``cfg`` evaluates (``eval.label_map``)."""
    class_ids = list(eval_labels(dataset, cfg.data, cfg.eval))
    return predict(model, dataset, PredictOptions.from_config(cfg), class_ids, device, progress)[0]


def evaluate_split(model: torch.nn.Module, dataset: ClipDataset, gt_csv: str | Path | None, cfg: Config,
                   device: torch.device, progress: bool = True) -> tuple[SplitEvaluation, AvaRows]:
    """Frame-mAP@0.5 and actor metrics of ``model`` on ``dataset`` by the metric of its format
    (:func:`~bmvit.evaluation.evaluators.build_evaluator`; ``gt_csv``: the AVA ground truth of the
    split, unused for ACT data); also the detection rows (all of them on rank 0, none on other
    ranks). Every rank returns the same numbers."""
    evaluator = build_evaluator(dataset, cfg.data, cfg.eval, gt_csv)  # labels checked on every rank first
    detections, actors = predict(model, dataset, PredictOptions.from_config(cfg), list(evaluator.labels), device,
                                 progress)
    rank, world = _world()
    result = evaluator.evaluate(detections, actors) if rank == 0 else None
    if world > 1:
        box = [result.without_curves() if result is not None else None]
        tdist.broadcast_object_list(box, src=0)
        result = box[0]
    return result, detections


def write_split_outputs(out: Path, checkpoint: Path, split: str, result: SplitEvaluation,
                        detections: AvaRows) -> dict:
    """An evaluation's files in ``out``: ``detections_<split>.csv`` (the rows exactly: re-scoring
    them gives the same figure) and ``metrics_<split>.json``. Returns the report its verbs print:
    ``table`` (per class), ``lines`` (both protocols, actor line) and ``predictions`` (the CSV)."""
    from bmvit.atomic import output_error
    from bmvit.evaluation.ava_csv_fast import write_rows_exact
    from bmvit.evaluation.report import write_json

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(out, e) from None
    predictions = out / f"detections_{split}.csv"
    write_rows_exact(predictions, detections)
    write_json(out / f"metrics_{split}.json", {"checkpoint": str(checkpoint), "split": split, **result.to_json()})
    return {"table": result.table(), "lines": list(result.lines()), "predictions": str(predictions)}
