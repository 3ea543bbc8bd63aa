"""The Python inference API: a trained checkpoint applied to a whole video.

Example (the README's, run by ``tests/test_api.py``)::

    from bmvit import Detector

    det = Detector.from_checkpoint("runs/demo/model.safetensors")
    result = det.predict("video.mp4")            # or a frames folder, or an (N, H, W, 3) uint8 array
    for kf in result.keyframes:                  # one entry per key frame (default: one per second)
        for actor in kf.actors:
            print(kf.time, actor.box, actor.actor_score, [(a.name, a.score) for a in actor.actions])
    result.to_dict()                             # the detections.json of `bmvit detect`

Contract:

* Key frames are ``floor(j · fps / keyframes_per_second + 1/2)``; each is the centre (input index
  ``T // 2``) of a clip of ``T`` frames at stride ``τ`` taken from the checkpoint's config, clamped
  at the video edges (:mod:`bmvit.inference.windows`, the arithmetic of ``data/clips.py``).
* Preprocessing is the evaluation pipeline's: every frame resized to ``S × S`` (Pillow bilinear,
  no crop) and normalized by :class:`~bmvit.data.transforms.ClipTransform` (Kinetics mean/std).
* Post-processing is :func:`~bmvit.models.postprocess.postprocess` with the checkpoint's
  ``eval.threshold`` / ``eval.nms_iou`` / ``eval.score`` unless overridden; with
  ``eval.hflip_tta`` (or ``hflip_tta=True``) each clip is averaged with its mirror image first
  (:class:`~bmvit.models.flip_tta.FlipTTA`); with ``eval.time_tta`` (or ``time_tta=[...]``) each
  key frame is predicted from the clips moved by those frame offsets, averaged
  (:class:`~bmvit.models.time_tta.TimeTTA`; the clip tensors are then ``(B, 3, V·T, S, S)``).
* Boxes come back as normalized ``(x1, y1, x2, y2)`` of the key frame and as pixels of the
  original frame; ``actions`` holds the ``topk`` classes by score, ``action_scores`` all ``K``
  scores in label-map order.
* Memory: a ring buffer of ``(T-1)·τ + 1`` resized frames (plus the spread of the time-TTA
  offsets) and one batch of clips, whatever the video length.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bmvit.config import Config
from bmvit.data.transforms import ClipTransform, normalize_clips, views_of
from bmvit.errors import CheckpointError, ConfigError, DataError
from bmvit.inference.arguments import count, flag, probability, resolve_device
from bmvit.inference.prefetch import prefetch
from bmvit.inference.results import SCHEMA_VERSION, Action, Actor, KeyFrameResult, VideoResult
from bmvit.inference.tracking import IoUTracker
from bmvit.inference.video_source import VideoInfo, VideoSource, open_source
from bmvit.inference.windows import SlidingClips, keyframe_schedule
from bmvit.models.flip_tta import FlipTTA, swap_columns
from bmvit.models.postprocess import Detections, postprocess
from bmvit.models.time_tta import TimeTTA

__all__ = ["Action", "Actor", "KeyFrameResult", "VideoResult", "Detector", "FROM_CHECKPOINT", "SCHEMA_VERSION"]

FROM_CHECKPOINT: Any = "checkpoint"  # default of the post-processing options: the checkpoint's eval.* value


def _num_classes(state: dict[str, Tensor], path: Path) -> int:
    layers = [k for k in state if k.startswith("heads.action.") and k.endswith(".weight")]
    if not layers:
        raise CheckpointError(f"{path}: no action head ('heads.action.*.weight') in the checkpoint; is it a bmvit detector?")
    last = max(layers, key=lambda k: int(k.split(".")[2]))
    return int(state[last].shape[0])


def resolve_labels(labels: str | Path | dict[int, str] | None, cfg: Config, meta: dict, num_classes: int) -> dict[int, str]:
    """Class names, in the order of the action logits: ``labels`` (a dict or a label-map file), else
    the checkpoint's metadata, else the label map of its config (``data.root``/``data.label_map``,
    when present and of the right size), else ``class 1 .. class K``."""
    from bmvit.data.formats.ava import read_label_map

    if isinstance(labels, (str, Path)):
        path = labels
        labels = read_label_map(path)
        if len(labels) != num_classes:
            raise DataError(f"{path}: label map has {len(labels)} classes, the checkpoint's action head {num_classes}")
        return labels
    if isinstance(labels, dict):
        if len(labels) != num_classes:
            raise ConfigError(f"labels: {len(labels)} names given, the checkpoint's action head has {num_classes} classes")
        try:
            return {int(k): str(v) for k, v in labels.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"labels: keys must be integer class ids, got {list(labels)[:3]!r}") from None
    if labels is not None:
        raise ConfigError(f"labels: expected a dict {{id: name}} or a label-map file, got {type(labels).__name__}")
    if isinstance(meta.get("labels"), dict) and len(meta["labels"]) == num_classes:
        return {int(k): str(v) for k, v in sorted(meta["labels"].items(), key=lambda kv: int(kv[0]))}
    path = cfg.data.path(cfg.data.label_map)
    if path.is_file():
        try:
            found = read_label_map(path)
        except DataError:
            found = {}
        if len(found) == num_classes:
            return found
    return {i + 1: f"class {i + 1}" for i in range(num_classes)}


def eval_transform(cfg: Config) -> ClipTransform:
    """The evaluation reader's transform for ``cfg.data`` (``make_dataset(cfg, split)`` without
    augmentation): resize (``size``², or short side ``size`` with ``data.resize=keep_aspect``) and
    ``data.mean``/``data.std`` normalization."""
    from bmvit.data.build import checked_mean_std

    return ClipTransform(size=cfg.data.size, train=False, resize=cfg.data.resize, **checked_mean_std(cfg.data))


class Detector:
    """A BMViT model plus the preprocessing and post-processing of its checkpoint (module docstring)."""

    def __init__(self, model: nn.Module, cfg: Config, labels: dict[int, str], device: str | torch.device = "cpu",
                 threshold: float | None = FROM_CHECKPOINT, nms_iou: float | None = FROM_CHECKPOINT,
                 score: str = FROM_CHECKPOINT, batch_size: int = 8, topk: int = 5, dtype: str = "fp32",
                 quantize: str | None = None, hflip_tta: bool = FROM_CHECKPOINT,
                 time_tta: Sequence[int] = FROM_CHECKPOINT) -> None:
        from bmvit.inference.precision import prepare_model

        self.cfg = cfg
        self.device = resolve_device(device)
        self.dtype, self.quantize = dtype, quantize
        self.model = prepare_model(model.eval().to(self.device), dtype, quantize, self.device)
        self.labels = dict(labels)
        self.class_ids = list(self.labels)
        self.hflip_tta = bool(cfg.eval.hflip_tta) if hflip_tta is FROM_CHECKPOINT else flag("hflip_tta", hflip_tta)
        if self.hflip_tta:
            self.model = FlipTTA(self.model, swap_columns(cfg.data.hflip_swap, self.class_ids))
        self.views = views_of(cfg.eval.time_tta if time_tta is FROM_CHECKPOINT else time_tta)  # frame offsets
        if len(self.views) > 1:
            self.model = TimeTTA(self.model, len(self.views), cfg.data.num_frames)  # clips (B, 3, V·T, S, S)
        self.threshold = cfg.eval.threshold if threshold is FROM_CHECKPOINT else probability("threshold", threshold)
        self.nms_iou = cfg.eval.nms_iou if nms_iou is FROM_CHECKPOINT else probability("nms_iou", nms_iou, allow_none=True)
        self.score = cfg.eval.score if score is FROM_CHECKPOINT else score
        if self.score not in ("action", "actor*action"):
            raise ConfigError(f"score: {self.score!r} is not one of action, actor*action")
        self.batch_size, self.topk = count("batch_size", batch_size), count("topk", topk)
        self.transform = eval_transform(cfg)
        self.forward_seconds, self.forward_clips = 0.0, 0  # time in forward() (model + copy back), clips

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        labels: str | Path | dict[int, str] | None = None, **kwargs: Any) -> "Detector":
        """Load ``model.safetensors`` written by ``bmvit train`` (the config is embedded in it).

        ``labels``: class names (dict or label-map file; default: see :func:`resolve_labels`);
        ``kwargs``: ``threshold``, ``nms_iou``, ``score``, ``hflip_tta``, ``time_tta`` (frame offsets,
        ``[]`` = off), ``batch_size``, ``topk``,
        ``dtype`` (fp32 | bf16), ``quantize`` (None | int8) (:mod:`~bmvit.inference.precision`).
        """
        from bmvit.engine.checkpoint import load_weights
        from bmvit.models.build import build_detector

        if not isinstance(path, (str, PathLike)):
            raise CheckpointError(f"checkpoint: expected a path to model.safetensors, got {type(path).__name__}")
        path = Path(path)
        state, cfg, meta = load_weights(path)
        k = _num_classes(state, path)
        model = build_detector(cfg.model, cfg.data, k, load_pretrained=False)  # trained weights follow
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{path}: weights do not fit the model of its embedded config ({first[1].strip() if len(first) > 1 else first[0]})") from None
        return cls(model, cfg, resolve_labels(labels, cfg, meta, k), device, **kwargs)

    # -- clip geometry ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.cfg.data.num_frames

    @property
    def stride(self) -> int:
        return self.cfg.data.stride

    @property
    def size(self) -> int:
        return self.cfg.data.size

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def settings(self) -> dict[str, Any]:
        m = self.cfg.model
        return {"backbone": m.backbone, "token_selection": m.token_selection, "num_frames": self.num_frames,
                "stride": self.stride, "size": self.size, "threshold": self.threshold, "nms_iou": self.nms_iou,
                "score": self.score, "topk": self.topk, "dtype": self.dtype, "quantize": self.quantize,
                "hflip_tta": self.hflip_tta, "time_tta": [] if self.views == (0,) else list(self.views)}

    # -- the steps -------------------------------------------------------------------------------
    def resize(self, frame: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(S, S, 3)`` uint8 (keep-aspect configs: short side ``S``):
        the evaluation reader's resize (:func:`~bmvit.data.transforms.resize_frames`)."""
        return self.transform.decode_resize(frame[None])[0].numpy()

    def to_tensor(self, clips: np.ndarray, normalize: bool = True) -> Tensor:
        """``(B, T, S, S, 3)`` uint8 resized frames -> ``(B, 3, T, S, S)`` float normalized (the
        evaluation reader's clip, normalized by :func:`~bmvit.data.transforms.normalize_clips`);
        ``normalize=False``: the uint8 view, which :meth:`forward` normalizes on the device."""
        shape = tuple(np.shape(clips))
        if len(shape) != 5 or shape[-1] != 3:
            raise DataError(f"clips: expected a batch of clips (B, T, H, W, 3) uint8, got shape {shape}; "
                            f"a video's frames (N, H, W, 3) go to predict()")
        x = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3)  # (B, 3, T, S, S) uint8 view
        return normalize_clips(x, self.transform.mean, self.transform.std) if normalize else x

    @torch.inference_mode()
    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        """Raw model outputs for ``clips (B, 3, T, S, S)`` (``V·T`` frames with time TTA):
        ``boxes (B, L, 4)``, ``actor_logits (B, L)``, ``action_logits (B, L, K)`` (on the CPU), ``cells (L, 4)``,
        ``grid (t, h, w)``. uint8 clips are normalized on the device (a quarter of the bytes to copy); float
        clips are taken as normalized."""
        if not isinstance(clips, Tensor) or clips.dim() != 5 or clips.shape[1] != 3:
            got = tuple(clips.shape) if hasattr(clips, "shape") else type(clips).__name__
            raise DataError(f"clips: expected a tensor (B, 3, T, H, W) (to_tensor() makes one), got {got}")
        t0 = time.perf_counter()
        x = clips.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = normalize_clips(x, self.transform.mean, self.transform.std)  # (B, 3, T, S, S) float32
        out = self.model(x)
        out = {k: v.float().cpu() if isinstance(v, Tensor) else v for k, v in out.items()}
        self.forward_seconds += time.perf_counter() - t0
        self.forward_clips += len(clips)
        return out

    def detect(self, outputs: dict[str, Tensor]) -> list[Detections]:
        """Post-processing with this detector's threshold / NMS / score mode."""
        return postprocess(outputs, self.threshold, self.nms_iou, self.score)

    def actors(self, d: Detections, width: int, height: int) -> list[Actor]:
        """The detections of one clip as :class:`Actor` s (pixel boxes for a ``width × height`` frame), best first."""
        actors = []
        scale = np.array([width, height, width, height], dtype=np.float64)
        for m in range(len(d.tokens)):
            scores = d.action_scores[m].tolist()  # (K,)
            order = np.argsort(-np.asarray(scores), kind="stable")[: self.topk]
            norm = [float(v) for v in d.boxes[m].tolist()]
            actors.append(Actor(
                box=[float(v) for v in np.asarray(norm) * scale],
                box_normalized=norm,
                actor_score=float(d.actor_scores[m]),
                actions=[Action(self.class_ids[i], self.labels[self.class_ids[i]], float(scores[i])) for i in order],
                track_id=-1,
                token=int(d.tokens[m]),
                action_scores=[float(s) for s in scores],
            ))
        actors.sort(key=lambda a: -a.actor_score)
        return actors

    def _run_batch(self, keys: list[int], clips: Tensor, info: VideoInfo, with_outputs: bool) -> list[KeyFrameResult]:
        outputs = self.forward(clips)
        results = []
        for b, (k, d) in enumerate(zip(keys, self.detect(outputs))):
            raw = None
            if with_outputs:
                raw = {"boxes": outputs["boxes"][b], "actor_probs": outputs["actor_logits"][b].sigmoid(),
                       "cells": outputs["cells"], "grid": tuple(outputs["grid"])}
            results.append(KeyFrameResult(k, k / info.fps, self.actors(d, info.width, info.height), raw))
        return results

    def _batches(self, source: VideoSource, keyframes_per_second: float,
                 on_frame: Callable[[int, int | None], None] | None) -> Iterator[tuple[list[int], Tensor]]:
        """Decode, resize, assemble and normalize: ``(key frames, clips (B, 3, T, S, S))`` per batch."""
        info = source.info
        window = SlidingClips(self.num_frames, self.stride, keyframe_schedule(info.fps, keyframes_per_second),
                              self.views)
        pending: list[tuple[int, np.ndarray]] = []

        def take() -> tuple[list[int], Tensor]:
            nonlocal pending
            batch, pending = pending[: self.batch_size], pending[self.batch_size:]
            return [k for k, _ in batch], self.to_tensor(np.stack([c for _, c in batch]), normalize=False)  # uint8

        n = 0
        try:
            for frame in source:
                pending += window.push(self.resize(frame))  # (k, (T, S, S, 3)) clips that are complete
                n += 1
                if on_frame is not None:
                    on_frame(n, info.num_frames)
                while len(pending) >= self.batch_size:
                    yield take()
            pending += window.flush()
            while pending:
                yield take()
        finally:
            source.close()

    def iter_keyframes(self, source: str | Path | np.ndarray | VideoSource, keyframes_per_second: float = 1.0,
                       with_outputs: bool = False, progress: bool = False,
                       on_frame: Callable[[int, int | None], None] | None = None,
                       prefetch_batches: int = 2, fps: float | None = None) -> Iterator[KeyFrameResult]:
        """Key-frame results of ``source`` in time order, ``batch_size`` clips per forward pass
        (no tracking: ``track_id`` stays -1; :meth:`predict` assigns it).

        Decoding and preprocessing run on a background thread up to ``prefetch_batches`` batches
        ahead of the model (0: in the caller's thread). ``on_frame(frames_decoded, total_or_None)``
        is called (from that thread) after every frame; ``progress`` shows a frame bar. ``source``: a
        :class:`VideoSource`, or anything :meth:`predict` takes, ``fps`` as there."""
        source = open_source(source, fps)
        info = source.info
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=info.num_frames, unit="frame", desc="detect", file=sys.stderr, dynamic_ncols=True)

            def tick(n: int, total: int | None, user=on_frame) -> None:
                bar.update(1)
                if user is not None:
                    user(n, total)

            on_frame = tick
        batches = self._batches(source, keyframes_per_second, on_frame)
        if prefetch_batches > 0:
            batches = prefetch(batches, prefetch_batches, name="bmvit-decode")
        try:
            for keys, clips in batches:
                yield from self._run_batch(keys, clips, info, with_outputs)
        finally:
            batches.close()
            if bar is not None:
                bar.close()

    def predict(self, video: str | Path | np.ndarray | Sequence[np.ndarray] | VideoSource,
                keyframes_per_second: float = 1.0, fps: float | None = None, with_outputs: bool = False,
                progress: bool = False, on_frame: Callable[[int, int | None], None] | None = None) -> VideoResult:
        """Detect actors and actions in every key frame of ``video`` (a video file, a folder of
        frames, a stream URL, an ``(N, H, W, 3)`` uint8 array or a list of frames).

        ``fps`` overrides the video's frame rate (folders and arrays default to 30).
        ``with_outputs`` keeps each key frame's raw per-token outputs (for :mod:`~bmvit.inference.explain`).
        ``on_frame(frames_decoded, total_or_None)``: progress callback (see :meth:`iter_keyframes`).
        Raises :class:`~bmvit.errors.DataError` naming the input if it cannot be read.
        """
        source = open_source(video, fps)
        tracker = IoUTracker()
        keyframes = []
        for kf in self.iter_keyframes(source, keyframes_per_second, with_outputs, progress, on_frame):
            ids = tracker.assign(np.array([a.box_normalized for a in kf.actors]).reshape(-1, 4),
                                 np.array([a.actor_score for a in kf.actors]))
            for a, i in zip(kf.actors, ids):
                a.track_id = i
            keyframes.append(kf)
        settings = {**self.settings(), "keyframes_per_second": keyframes_per_second}
        return VideoResult(source.info, keyframes, self.labels, settings)
