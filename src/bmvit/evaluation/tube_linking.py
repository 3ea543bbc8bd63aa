"""Link per-frame detections into action tubes (ACT / MOC-style greedy linking, one frame at a time).

Contract: :func:`link_tubes` turns detection rows ``video,frame,class,score,box`` into
:class:`~bmvit.evaluation.tubes.Tubes`, independently for every (video, class):

1. **Frames.** The frames visited are those of the video that appear in the detection rows
   (any class), in increasing order. Detections are expected on every frame of a video, as in
   ACT; a frame absent from the file is simply not visited.
2. **Per-frame candidates.** The class's boxes in the frame go through greedy NMS at
   ``nms_iou`` (None: off) and the ``top_k`` highest-scoring survive (ACT: NMS 0.6, top 10).
3. **Extending tubes.** Active tubes are visited in descending order of their current score
   (the mean of their box scores; ties: older tube first). Each takes, among the candidates
   still free whose IoU (+1 pixel convention) with the tube's last box is >= ``link_iou``
   (0.5), the one of highest score (ties: the earlier candidate in score order), and that
   candidate is no longer free. A tube that takes nothing ends (ACT with one-frame tubelets,
   K = 1: no gap is bridged).
4. **New tubes.** Candidates left free start new tubes (on the first frame, all of them).
5. **Output.** Tube score = mean of its box scores. Tubes shorter than ``min_length`` frames
   (last - first + 1; ACT: 15) or scoring below ``min_score`` (ACT: 0.005) are dropped.

Complexity: a Python loop over the visited frames of every (video, class) with detections, with
small array operations inside; fine for UCF101-24 / JHMDB test splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmvit.evaluation.act_protocol import pixel_iou
from bmvit.evaluation.frame_csv import FrameRows
from bmvit.evaluation.tubes import Tubes

__all__ = ["LinkingParams", "frame_nms", "link_tubes"]


@dataclass(frozen=True)
class LinkingParams:
    """Parameters of :func:`link_tubes` (defaults: ACT's)."""

    link_iou: float = 0.5
    nms_iou: float | None = 0.6
    top_k: int = 10
    min_length: int = 15
    min_score: float = 0.005


def frame_nms(boxes: np.ndarray, scores: np.ndarray, iou: float | None, top_k: int) -> np.ndarray:
    """Indices kept by greedy NMS (+1 IoU) on (N, 4) boxes, best score first, at most ``top_k``."""
    order = np.argsort(-scores, kind="stable")
    if iou is None:
        return order[:top_k]
    keep: list[int] = []
    while order.size and len(keep) < top_k:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        overlap = pixel_iou(np.repeat(boxes[i][None], rest.size, 0), boxes[rest])
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class _Tube:
    frames: list[int]
    boxes: list[np.ndarray]
    scores: list[float]
    total: float  # running sum of scores

    @property
    def score(self) -> float:
        return self.total / len(self.scores)


def _link_one(frames: list[int], per_frame: dict[int, tuple[np.ndarray, np.ndarray]], p: LinkingParams) -> list[_Tube]:
    """Tubes of one (video, class), rules 3-4; ``per_frame`` holds candidates best-first."""
    active: list[_Tube] = []
    done: list[_Tube] = []
    for f in frames:
        boxes, scores = per_frame.get(f, (np.zeros((0, 4)), np.zeros(0)))
        free = np.ones(len(scores), dtype=bool)
        still: list[_Tube] = []
        for tube in sorted(active, key=lambda t: -t.score):  # stable: older tube first on ties
            ok = free.copy()
            if ok.any():
                ok &= pixel_iou(np.repeat(tube.boxes[-1][None], len(scores), 0), boxes) >= p.link_iou
            if ok.any():
                j = int(np.flatnonzero(ok)[0])  # candidates are best-first: first = highest score
                tube.frames.append(f)
                tube.boxes.append(boxes[j])
                tube.scores.append(float(scores[j]))
                tube.total += float(scores[j])
                free[j] = False
                still.append(tube)
            else:
                done.append(tube)
        still += [_Tube([f], [boxes[j]], [float(scores[j])], float(scores[j])) for j in np.flatnonzero(free)]
        active = still
    return done + active


def link_tubes(det: FrameRows, params: LinkingParams = LinkingParams()) -> Tubes:
    """Tubes linked from per-frame detections under the rules of the module docstring."""
    if len(det) == 0:
        return Tubes.empty()
    out_videos, out_labels, out_scores, out_frames, out_boxes, lengths = [], [], [], [], [], []
    order = np.lexsort((det.frames, det.labels, det.videos))
    videos, labels, frames = det.videos[order], det.labels[order], det.frames[order]
    boxes, scores = det.boxes[order], det.scores[order]
    video_start = np.flatnonzero(np.r_[True, videos[1:] != videos[:-1]])
    video_end = np.r_[video_start[1:], len(order)]
    for vs, ve in zip(video_start.tolist(), video_end.tolist()):
        visit = sorted(set(frames[vs:ve].tolist()))
        lab = labels[vs:ve]
        class_start = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) + vs
        class_end = np.r_[class_start[1:], ve]
        for cs, ce in zip(class_start.tolist(), class_end.tolist()):
            per_frame = {}
            fr = frames[cs:ce]
            frame_start = np.flatnonzero(np.r_[True, fr[1:] != fr[:-1]]) + cs
            frame_end = np.r_[frame_start[1:], ce]
            for fs, fe in zip(frame_start.tolist(), frame_end.tolist()):
                keep = frame_nms(boxes[fs:fe], scores[fs:fe], params.nms_iou, params.top_k) + fs
                per_frame[int(frames[fs])] = (boxes[keep], scores[keep])
            for tube in _link_one(visit, per_frame, params):
                if tube.frames[-1] - tube.frames[0] + 1 < params.min_length or tube.score < params.min_score:
                    continue
                out_videos.append(videos[cs])
                out_labels.append(int(labels[cs]))
                out_scores.append(tube.score)
                out_frames.append(np.asarray(tube.frames, dtype=np.int64))
                out_boxes.append(np.asarray(tube.boxes, dtype=np.float64).reshape(-1, 4))
                lengths.append(len(tube.frames))
    if not out_labels:
        return Tubes.empty()
    return Tubes(
        videos=np.asarray(out_videos, dtype=str),
        labels=np.asarray(out_labels, dtype=np.int64),
        scores=np.asarray(out_scores, dtype=np.float64),
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        frames=np.concatenate(out_frames),
        boxes=np.concatenate(out_boxes),
        names=np.asarray([f"linked{i}" for i in range(len(out_labels))], dtype=str),
    )
