"""Each dataset format's metric: the split evaluator that scores a detector's rows on a split.

:func:`build_evaluator` is the one place that picks the metric by ``data.format`` (the counterpart
of :func:`bmvit.data.build.build_dataset`, which picks the reader; it lives here because
``evaluation`` sits above ``data``). :mod:`bmvit.engine.evaluate` only predicts: it writes one
detection row per box and class of :attr:`SplitEvaluator.labels` (:class:`~bmvit.data.formats.ava.AvaRows`,
boxes normalized to the key frame, class ids as in the label map) and the actor rows
(:class:`~bmvit.evaluation.actor_metrics.ActorRows`), and hands both to the evaluator:

* ``ava`` — :class:`AvaSplitEvaluator`: the official AVA evaluator's rules
  (:mod:`bmvit.evaluation.ava`) against the ground-truth CSV, on the classes of
  ``eval.label_map`` (default ``data.label_map``; AVA v2.2: the 60 classes of the 2019 label map
  while training uses 80), under both protocols in use (:data:`~bmvit.evaluation.split_result.PROTOCOLS`:
  the ActivityNet 2019 evaluator's at most 50 detections per frame, PySlowFast's uncapped);
  ``eval.max_dets_per_frame`` picks the headline.
* ``act`` (UCF101-24 / JHMDB51-21) — :class:`ActSplitEvaluator`: ACT's frame-mAP
  (:mod:`bmvit.evaluation.frame_map`, what ``bmvit eval-frame`` computes) against the boxes of the
  ACT pickle, in pixels of each video's resolution, on the frames the dataset evaluates (every
  frame, or every ``data.keyframe_step``-th).

Both also score the class-agnostic actor detector (:mod:`bmvit.evaluation.actor_metrics`:
precision/recall of the boxes kept at θ = ``eval.threshold`` and actor AP) against each key
frame's annotated actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from bmvit.config import DataConfig, EvalConfig
from bmvit.data.clip_dataset import ClipDataset
from bmvit.data.formats.act import ActAnnotations
from bmvit.data.formats.ava import AvaRows, read_exclusions, read_label_map
from bmvit.data.keyframes import KeyFrameTable
from bmvit.data.skips import reader_of
from bmvit.errors import ConfigError
from bmvit.evaluation.actor_metrics import ActorRows, evaluate_actor_rows
from bmvit.evaluation.ava import evaluate_ava
from bmvit.evaluation.ava_csv_fast import read_rows_fast
from bmvit.evaluation.frame_csv import FrameRows
from bmvit.evaluation.frame_map import FrameMapResult, evaluate_frame_map
from bmvit.evaluation.split_result import PROTOCOLS, SplitEvaluation, protocol_name

__all__ = ["EVALUATORS", "ActSplitEvaluator", "AvaSplitEvaluator", "SplitEvaluator", "act_frame_map",
           "build_evaluator", "eval_labels"]


class SplitEvaluator(Protocol):
    """Scores the detection rows of one split (module docstring)."""

    labels: dict[int, str]  # the evaluated classes: the detection rows hold one row per box and class

    def evaluate(self, detections: AvaRows, actors: ActorRows | None) -> SplitEvaluation: ...


def eval_labels(dataset: ClipDataset, d: DataConfig, ev: EvalConfig) -> dict[int, str]:
    """The evaluated classes: ``eval.label_map`` (AVA layout), else every class of the dataset.

    Raises ``ConfigError`` when ``eval.label_map`` lists a class the model is not trained on, or
    is set for ``data.format=act``."""
    if ev.label_map is None:
        return dict(dataset.labels)
    path = d.path(ev.label_map)
    if d.format != "ava":
        raise ConfigError(f"'eval.label_map' ({path}) applies to data.format=ava; ACT data is evaluated on its "
                          f"own classes: remove it (eval.label_map=null)")
    labels = read_label_map(path)
    missing = sorted(set(labels) - set(dataset.labels))
    if missing:
        raise ConfigError(f"{path}: 'eval.label_map' lists action id(s) {missing[:10]} that the training label map "
                          f"'data.label_map' ({d.path(d.label_map)}) does not: the model has no "
                          f"score for them; evaluate a subset of the training classes")
    return labels


@dataclass
class AvaSplitEvaluator:
    """AVA rules under every protocol of :data:`PROTOCOLS` (+ the headline cap if it is another)."""

    labels: dict[int, str]
    gt_csv: str | Path
    exclusions: Path | None  # excluded-timestamps CSV (data.exclusions)
    max_dets_per_frame: int  # headline protocol
    threshold: float  # θ of the actor metrics

    def __post_init__(self) -> None:
        if self.exclusions:
            read_exclusions(self.exclusions)  # a missing or malformed file is named now, not after a training

    def evaluate(self, detections: AvaRows, actors: ActorRows | None) -> SplitEvaluation:
        exclusions = read_exclusions(self.exclusions) if self.exclusions else None
        gt = read_rows_fast(self.gt_csv)
        caps = dict(PROTOCOLS)
        caps.setdefault(protocol_name(self.max_dets_per_frame), self.max_dets_per_frame)
        protocols = {name: evaluate_ava(gt, detections, self.labels, exclusions, cap) for name, cap in caps.items()}
        headline = protocol_name(self.max_dets_per_frame)
        return SplitEvaluation(protocols[headline], protocols, evaluate_actor_rows(actors, self.threshold), headline)


@dataclass
class ActSplitEvaluator:
    """ACT frame-mAP on the frames of ``keyframes`` against the tubes of ``annotations``."""

    labels: dict[int, str]
    annotations: ActAnnotations
    keyframes: KeyFrameTable
    threshold: float  # θ of the actor metrics

    def evaluate(self, detections: AvaRows, actors: ActorRows | None) -> SplitEvaluation:
        frame_map = _act_frame_map(self.annotations, self.keyframes, detections)
        return SplitEvaluation(frame_map, {}, evaluate_actor_rows(actors, self.threshold), "act")


def act_frame_map(dataset: ClipDataset, detections: AvaRows, iou_threshold: float = 0.5) -> FrameMapResult:
    """ACT frame-mAP of AVA-style ``detections`` (normalized boxes, class ids 1..K) on an
    :class:`~bmvit.data.clips.ActClips` split: GT = every annotated box of the split's videos on
    the frames the dataset holds, boxes scaled to pixels by each video's resolution."""
    return _act_frame_map(reader_of(dataset).annotations, dataset.keyframes, detections, iou_threshold)


def _act_frame_map(ann: ActAnnotations, table: KeyFrameTable, detections: AvaRows,
                   iou_threshold: float = 0.5) -> FrameMapResult:
    classes = list(ann.labels)
    kept = {(table.videos[vi], int(f)) for vi, f in zip(table.video_index, table.timestamps)}
    g_vid, g_frame, g_label, g_box = [], [], [], []
    for v in table.videos:
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


def _ava(dataset: ClipDataset, d: DataConfig, ev: EvalConfig, gt_csv: str | Path) -> AvaSplitEvaluator:
    return AvaSplitEvaluator(eval_labels(dataset, d, ev), gt_csv, d.path(d.exclusions) if d.exclusions else None,
                             ev.max_dets_per_frame, ev.threshold)


def _act(dataset: ClipDataset, d: DataConfig, ev: EvalConfig, gt_csv: str | Path | None) -> ActSplitEvaluator:
    # the ground truth is the pickle's: gt_csv does not apply
    return ActSplitEvaluator(eval_labels(dataset, d, ev), reader_of(dataset).annotations, dataset.keyframes,
                             ev.threshold)


# data.format -> the evaluator of that format's metric
EVALUATORS: dict[str, Callable[..., SplitEvaluator]] = {"ava": _ava, "act": _act}


def build_evaluator(dataset: ClipDataset, d: DataConfig, ev: EvalConfig, gt_csv: str | Path | None) -> SplitEvaluator:
    """The evaluator of ``dataset`` (a split of ``d``) for its ``data.format``; ``gt_csv`` is the AVA
    ground truth of the split (unused for ACT data). ``ConfigError`` for an ``eval.label_map``
    that does not apply (:func:`eval_labels`)."""
    if d.format not in EVALUATORS:
        raise ConfigError(f"'data.format': no metric for {d.format!r}; expected one of {', '.join(EVALUATORS)}")
    return EVALUATORS[d.format](dataset, d, ev, gt_csv)
