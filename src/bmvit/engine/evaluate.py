"""Run a detector over a dataset split and score it with AVA frame-mAP@0.5."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bmvit.config import Config
from bmvit.data.ava import AvaClips, collate
from bmvit.data.ava_format import AvaRows, read_exclusions, read_rows
from bmvit.evaluation.ava import AvaEvalResult, evaluate_ava
from bmvit.inference.postprocess import postprocess


@torch.no_grad()
def predict_rows(model: torch.nn.Module, dataset: AvaClips, cfg: Config, device: torch.device, progress: bool = True) -> AvaRows:
    """Detections on every key frame of ``dataset`` as AVA rows (one row per box and class)."""
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate, num_workers=cfg.data.num_workers)
    was_training = model.training
    model.eval()
    vids, ts, boxes, acts, scores = [], [], [], [], []
    class_ids = np.asarray(dataset.class_ids)
    for clips, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp == "bf16"):
            outputs = model(clips.to(device))
        dets = postprocess(outputs, cfg.eval.threshold, cfg.eval.nms_iou, cfg.eval.score)
        for t, d in zip(targets, dets):
            M, K = d.action_scores.shape
            if M == 0:
                continue
            vids += [t["video_id"]] * (M * K)
            ts.append(np.full(M * K, t["timestamp"]))
            boxes.append(np.repeat(d.boxes.numpy().astype(np.float64), K, axis=0))
            acts.append(np.tile(class_ids, M))
            scores.append(d.action_scores.numpy().reshape(-1).astype(np.float64))
    model.train(was_training)
    if not vids:
        return AvaRows.empty()
    return AvaRows(vids, np.concatenate(ts), np.concatenate(boxes), np.concatenate(acts), np.concatenate(scores))


def evaluate_split(model: torch.nn.Module, dataset: AvaClips, gt_csv, cfg: Config, device: torch.device, progress: bool = True) -> tuple[AvaEvalResult, AvaRows]:
    detections = predict_rows(model, dataset, cfg, device, progress)
    exclusions = read_exclusions(cfg.data.path(cfg.data.exclusions)) if cfg.data.exclusions else None
    result = evaluate_ava(read_rows(gt_csv), detections, dataset.labels, exclusions, cfg.eval.max_dets_per_frame)
    return result, detections
