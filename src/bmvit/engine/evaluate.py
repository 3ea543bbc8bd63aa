"""Run a detector over a dataset split and score it: frame-mAP@0.5 and the actor detector.

The metric follows the dataset: AVA layout (``data.format=ava``) is scored by the official AVA
evaluator's rules (:mod:`bmvit.evaluation.ava`) against ``data.val_csv``, on the classes of
``eval.label_map`` (default ``data.label_map``; AVA v2.2: the 60 classes of the 2019 label map
while training uses 80), under both protocols in use: the ActivityNet 2019 evaluator's
(at most 50 detections per frame) and PySlowFast's (uncapped); ``eval.max_dets_per_frame``
picks the headline one (the ``mean_ap`` that selects ``best.safetensors``). UCF101-24 /
JHMDB51-21 (``data.format=act``) are scored by ACT's frame-mAP (:mod:`bmvit.evaluation.frame_map`,
what ``bmvit eval-frame`` computes) against the boxes of the ACT pickle, in pixels of each video's
resolution, on the frames the dataset evaluates (every frame, or every ``data.keyframe_step``-th).
For both, the class-agnostic actor detector is scored too (:mod:`bmvit.evaluation.actor_metrics`:
precision/recall of the boxes kept at θ = ``eval.threshold`` and actor AP) against each key
frame's annotated actors. Detections stay in memory (numpy rows); no CSV text is involved.

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

import dataclasses

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.boxes import cxcywh_to_xyxy
from bmvit.config import Config
from bmvit.data.clips import AvaClips
from bmvit.data.collate import collate_fn, unpad_boxes, valid_tokens
from bmvit.data.transforms import normalize_clips
from bmvit.data.formats.ava import AvaRows, read_exclusions, read_label_map
from bmvit.errors import ConfigError
from bmvit.evaluation.actor_metrics import MAX_CANDIDATES, ActorResult, evaluate_actors
from bmvit.evaluation.ava import AvaEvalResult, evaluate_ava
from bmvit.evaluation.ava_csv_fast import read_rows_fast
from bmvit.evaluation.frame_csv import FrameRows
from bmvit.evaluation.frame_map import FrameMapResult, evaluate_frame_map
from bmvit.evaluation.report import json_number
from bmvit.inference.postprocess import postprocess

__all__ = ["PROTOCOLS", "SplitEvaluation", "act_frame_map", "eval_labels", "evaluate_split", "predict",
           "predict_rows", "shard_batches"]

# One batch's rows, column-wise: video ids, timestamps (R,), boxes (R, 4), actions (R,), scores (R,).
_Block = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# One batch's actors: GT frame (G,), GT boxes (G, 4); candidate frame (M,), boxes (M, 4), p(actor) (M,),
# kept at θ (M,). Frames are sample indices into the dataset; boxes normalized x1, y1, x2, y2.
_Actors = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# AVA protocols reported side by side: name -> detections kept per frame (0 = all).
PROTOCOLS = {"official": 50, "uncapped": 0}
PROTOCOL_TITLES = {"official": "ActivityNet 2019 evaluator (<= 50 detections per frame)",
                   "uncapped": "PySlowFast (uncapped)"}


def protocol_name(cap: int) -> str:
    """``official`` (50), ``uncapped`` (0) or ``capN``."""
    return next((n for n, c in PROTOCOLS.items() if c == cap), f"cap{cap}")


def eval_labels(cfg: Config, dataset) -> dict[int, str]:
    """The evaluated classes: ``eval.label_map`` (AVA layout), else every class of the dataset.

    Raises ``ConfigError`` when ``eval.label_map`` lists a class the model is not trained on, or
    is set for ``data.format=act``."""
    if cfg.eval.label_map is None:
        return dict(dataset.labels)
    path = cfg.data.path(cfg.eval.label_map)
    if cfg.data.format != "ava":
        raise ConfigError(f"'eval.label_map' ({path}) applies to data.format=ava; ACT data is evaluated on its "
                          f"own classes: remove it (eval.label_map=null)")
    labels = read_label_map(path)
    missing = sorted(set(labels) - set(dataset.labels))
    if missing:
        raise ConfigError(f"{path}: 'eval.label_map' lists action id(s) {missing[:10]} that the training label map "
                          f"'data.label_map' ({cfg.data.path(cfg.data.label_map)}) does not: the model has no "
                          f"score for them; evaluate a subset of the training classes")
    return labels


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
                    device: torch.device, progress: bool, class_ids: list[int]) -> list[tuple[int, _Block, _Actors]]:
    """Detections of the given batches (one row per box and evaluated class) and their actor
    boxes, one block per batch."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    loader = DataLoader(dataset, batch_sampler=[idx for _, idx in batches], collate_fn=collate_fn(cfg.data.resize),
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    columns = torch.as_tensor([list(dataset.class_ids).index(c) for c in class_ids], dtype=torch.long)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    blocks: list[tuple[int, _Block, _Actors]] = []
    for (b, sample_ids), (clips, targets) in zip(batches, tqdm(loader, desc="eval", disable=not progress, leave=False)):
        x = normalize_clips(clips.to(device, non_blocking=True), cfg.data.mean, cfg.data.std, targets)  # uint8 -> float
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp == "bf16" and device.type == "cuda"):
            outputs = model(x)
        valid = valid_tokens(outputs["cells"], targets)  # (B, L) padded batches (keep_aspect), else None
        dets = postprocess(outputs, cfg.eval.threshold, cfg.eval.nms_iou, cfg.eval.score, valid)
        cands = postprocess(outputs, -1.0, cfg.eval.nms_iou, cfg.eval.score, valid)  # every token: actor AP
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
        rows = (vids, np.concatenate(ts), np.concatenate(boxes), np.concatenate(acts), np.concatenate(scores)) \
            if vids else None
        blocks.append((b, rows, _actor_block(sample_ids, targets, cands, cfg.eval.threshold)))
    model.train(was_training)
    return blocks


def _actor_block(sample_ids: list[int], targets: list[dict], cands, threshold: float) -> _Actors:
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
    return (np.concatenate(g_frame), np.concatenate(g_boxes), np.concatenate(c_frame), np.concatenate(c_boxes),
            np.concatenate(c_scores), np.concatenate(c_kept))


def _merge(blocks: list[tuple[int, _Block | None, _Actors]]) -> tuple[AvaRows, _Actors | None]:
    """Rows and actors of all blocks in batch order."""
    blocks = sorted(blocks, key=lambda item: item[0])
    actors = tuple(np.concatenate([blk[2][i] for blk in blocks]) for i in range(6)) if blocks else None
    rows = [blk[1] for blk in blocks if blk[1] is not None]
    if not rows:
        return AvaRows.empty(), actors
    vids = [v for r in rows for v in r[0]]
    cols = [np.concatenate([r[i] for r in rows]) for i in range(1, 5)]
    return AvaRows(vids, cols[0], cols[1], cols[2], cols[3]), actors


def predict(model: torch.nn.Module, dataset: AvaClips, cfg: Config, device: torch.device,
            progress: bool = True) -> tuple[AvaRows, _Actors | None]:
    """Detections on every key frame of ``dataset`` as AVA rows (one row per box and evaluated
    class, :func:`eval_labels`), and the actor data of :func:`_actor_block`.

    Distributed: each rank predicts its shard (module docstring); rank 0 returns everything in
    single-process order, the other ranks ``(AvaRows.empty(), None)``.
    """
    class_ids = list(eval_labels(cfg, dataset))
    rank, world = _world()
    batches = shard_batches(len(dataset), cfg.eval.batch_size, rank, world)
    blocks = _predict_blocks(model, dataset, batches, cfg, device, progress and rank == 0, class_ids)
    if world == 1:
        return _merge(blocks)
    gathered: list | None = [None] * world if rank == 0 else None
    tdist.gather_object(blocks, gathered, dst=0)
    if rank != 0:
        return AvaRows.empty(), None
    return _merge([blk for part in gathered for blk in part])


def predict_rows(model: torch.nn.Module, dataset: AvaClips, cfg: Config, device: torch.device,
                 progress: bool = True) -> AvaRows:
    """The detection rows of :func:`predict`."""
    return predict(model, dataset, cfg, device, progress)[0]


def act_frame_map(dataset, detections: AvaRows, iou_threshold: float = 0.5) -> FrameMapResult:
    """ACT frame-mAP of AVA-style ``detections`` (normalized boxes, class ids 1..K) on an
    :class:`~bmvit.data.clips.ActClips` split: GT = every annotated box of the split's videos on
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
                      detections.boxes * scale.reshape(-1, 4), detections.person_or_score)
    return evaluate_frame_map(gt, det, classes, iou_threshold)


def _frame_rows(what, videos, frames, labels, boxes, scores=None) -> FrameRows:
    n = len(videos)
    return FrameRows(what, np.asarray(videos, dtype=object).astype(str) if n else np.zeros(0, str),
                     np.asarray(frames, np.int64), np.asarray(labels, np.int64), boxes,
                     np.ones(n) if scores is None else np.asarray(scores, np.float64), np.full(n, ""),
                     np.arange(1, n + 1))


@dataclasses.dataclass
class SplitEvaluation:
    """Everything :func:`evaluate_split` measured; ``mean_ap`` is the headline frame-mAP."""

    frame_map: AvaEvalResult | FrameMapResult  # headline: AVA under eval.max_dets_per_frame, or ACT frame-mAP
    protocols: dict[str, AvaEvalResult]  # AVA: "official" (cap 50), "uncapped" [, "capN"]; empty for ACT
    actor: ActorResult | None
    headline: str  # key of ``protocols`` behind ``frame_map`` ("act" for ACT data)

    @property
    def mean_ap(self) -> float:
        return self.frame_map.mean_ap

    @property
    def per_class_ap(self) -> dict:
        return self.frame_map.per_class_ap

    def metrics(self) -> dict:
        """Flat numbers for ``metrics.jsonl`` (``None`` for NaN): the headline ``val_frame_map``,
        each AVA protocol's ``val_frame_map_<name>``, and ``val_actor_{precision,recall,ap}``."""
        out = {"val_frame_map": json_number(self.mean_ap), "eval_protocol": self.headline}
        out.update({f"val_frame_map_{name}": json_number(r.mean_ap) for name, r in self.protocols.items()})
        if self.actor is not None:
            out.update({"val_actor_precision": json_number(self.actor.precision),
                        "val_actor_recall": json_number(self.actor.recall), "val_actor_ap": json_number(self.actor.ap)})
        return out

    def to_json(self) -> dict:
        doc = {**self.frame_map.to_json(), "headline_protocol": self.headline}
        if self.protocols:
            doc["protocols"] = {name: {"title": PROTOCOL_TITLES.get(name, f"at most {r.max_dets_per_frame} detections "
                                                                          f"per frame"),
                                       "max_dets_per_frame": r.max_dets_per_frame, "mAP": json_number(r.mean_ap),
                                       "num_classes": len(r.per_class_ap)}
                                for name, r in self.protocols.items()}
        if self.actor is not None:
            doc["actor"] = self.actor.to_json()
        return doc

    def lines(self) -> list[str]:
        """Labelled summary lines: one per AVA protocol, then the actor line."""
        out = []
        for name, r in self.protocols.items():
            title = PROTOCOL_TITLES.get(name, f"at most {r.max_dets_per_frame} detections per frame")
            mark = "  <- headline" if name == self.headline else ""
            out.append(f"frame-mAP@0.5 [{title}, {len(r.per_class_ap)} classes]: {r.mean_ap:.4f}{mark}")
        if self.actor is not None:
            out.append(self.actor.line())
        return out


def _actor_result(actors: _Actors | None, threshold: float) -> ActorResult | None:
    if actors is None:
        return None
    g_frame, g_boxes, c_frame, c_boxes, c_scores, c_kept = actors
    return evaluate_actors(g_frame, g_boxes, c_frame, c_boxes.astype(np.float64), c_scores.astype(np.float64),
                           threshold, kept=c_kept)


def evaluate_split(model: torch.nn.Module, dataset: AvaClips, gt_csv, cfg: Config, device: torch.device,
                   progress: bool = True) -> tuple[SplitEvaluation, AvaRows]:
    """Frame-mAP@0.5 and actor metrics of ``model`` on ``dataset`` (module docstring: AVA rules,
    or ACT's for ``data.format=act``, where ``gt_csv`` is not used); also the detection rows
    (all of them on rank 0, none on other ranks). Every rank returns the same numbers."""
    labels = eval_labels(cfg, dataset)  # checked on every rank before predicting
    detections, actors = predict(model, dataset, cfg, device, progress)
    rank, world = _world()
    result = None
    if rank == 0 and cfg.data.format == "act":
        result = SplitEvaluation(act_frame_map(dataset, detections), {}, _actor_result(actors, cfg.eval.threshold),
                                 "act")
    elif rank == 0:
        exclusions = read_exclusions(cfg.data.path(cfg.data.exclusions)) if cfg.data.exclusions else None
        gt = read_rows_fast(gt_csv)
        caps = {name: cap for name, cap in PROTOCOLS.items()}
        caps.setdefault(protocol_name(cfg.eval.max_dets_per_frame), cfg.eval.max_dets_per_frame)
        protocols = {name: evaluate_ava(gt, detections, labels, exclusions, cap) for name, cap in caps.items()}
        headline = protocol_name(cfg.eval.max_dets_per_frame)
        result = SplitEvaluation(protocols[headline], protocols, _actor_result(actors, cfg.eval.threshold), headline)
    if world > 1:
        if result is not None:
            strip = {name: dataclasses.replace(r, pr_curves={}) for name, r in result.protocols.items()}
            result = dataclasses.replace(result, frame_map=dataclasses.replace(result.frame_map, pr_curves={}),
                                         protocols=strip)
        box = [result]
        tdist.broadcast_object_list(box, src=0)
        result = box[0]
    return result, detections
