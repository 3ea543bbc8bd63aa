"""Typed configuration: dataclasses loaded from YAML, with ``section.key=value`` overrides.

Unknown keys, wrong types, names outside a key's list (:data:`CHOICES`; the lists of backbones,
token selections, action heads and extra positives are the tables of the modules that implement
them) and values outside a key's valid range (:data:`RANGES`, :data:`LENGTHS`; non-finite numbers
are never valid) raise :class:`~bmvit.errors.ConfigError` naming the key (and
the file) and stating the valid alternatives or range. The resolved config is saved with every run
(``config.yaml``) and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from bmvit.atomic import write_text
from bmvit.errors import ConfigError


@dataclass
class DataConfig:
    """Where clips come from and how they are sampled (AVA on-disk layout)."""

    root: str = "data/synthetic"
    frames_dir: str = "frames"
    train_csv: str = "annotations/train.csv"
    val_csv: str = "annotations/val.csv"
    label_map: str = "annotations/label_map.pbtxt"
    exclusions: str | None = None  # excluded-timestamps CSV for evaluation, relative to root
    fps: int = 30
    first_second: int = 900  # second of frame 1 (AVA: 900)
    num_frames: int = 16  # T
    stride: int = 4  # τ
    size: int = 256  # frames resized to size × size without cropping (paper §4)
    hflip_prob: float = 0.0
    hflip_swap: list[list[int]] = field(default_factory=list)  # action-id pairs swapped by a flip
    color_jitter: float = 0.0
    cache_frames: bool = False  # keep decoded, resized frames in memory (small datasets)
    num_workers: int = 0
    # --- real-dataset readers (bmvit.data.build; docs/datasets.md) ------------------------------
    format: str = "ava"  # ava: AVA layout (AVA v2.2, own data) | act: UCF101-24 / JHMDB51-21 (ACT pkl)
    source: str = "frames"  # frames: image files | video: decode <video_dir>/<id>.<ext> with PyAV
    video_dir: str = "videos"  # source=video: folder of video files, relative to root
    video_offset: float = 0.0  # source=video: second of each file where frame 1 is (AVA full movies: 900)
    annotations: str = "UCF101v2-GT.pkl"  # act: the ground-truth pickle, relative to root
    split: int = 1  # act: split number (UCF101-24: 1; JHMDB51-21: 1, 2, 3)
    frame_template: str = "{video}/{frame:05d}.jpg"  # act, source=frames: frame file under frames_dir
    keyframe_step: int = 1  # act: every n-th frame is a key frame (1: all)
    keyframe_range: list[int] | None = None  # ava: allowed timestamps [first, last] (AVA v2.2: [902, 1798])
    on_error: str = "error"  # error | skip: bad rows, missing videos/frames, corrupt data (skips logged + counted)
    unknown_actions: str = "error"  # ava: action ids outside the label map: error | ignore (counted)
    box_jitter: float = 0.0  # training: GT boxes jittered by up to this fraction of their size (paper §4)
    time_jitter: int = 0  # training: each clip's frames shifted by a uniform integer in [-j, j] (not in the paper)
    resize: str = "square"  # square: size x size (paper §4) | keep_aspect: random short side (Table 1c)
    short_side: list[int] = field(default_factory=lambda: [240, 340])  # keep_aspect, training: short-side range
    # Per-channel (RGB) normalization of [0, 1] pixels; must match the backbone's pre-training:
    # PySlowFast/MViTv2 Kinetics checkpoints 0.45/0.225 (default); VideoMAE/Hiera ImageNet's values.
    mean: list[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: list[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])

    def path(self, rel: str) -> Path:
        return Path(self.root) / rel


@dataclass
class ModelConfig:
    backbone: str = "mvitv2_s"  # a name of bmvit.models.build.BACKBONES
    remove_last_pool: bool = True  # paper §3.2: 8×16×16 output at 16×256²
    token_selection: str = "2(c+t)"  # a name of bmvit.models.token_selection.SELECTIONS (§3.2, §5.2, §6.1)
    head_hidden: int = 256
    box_layers: int = 3
    cls_layers: int = 2
    drop_path: float | None = None  # None: the backbone spec's value
    rel_pos: bool = True
    abs_pos: bool = False  # MViT: add a learned separable absolute position embedding (PySlowFast USE_ABS_POS; not MViTv2's)
    kv_stride: list[int] | None = None  # initial adaptive K/V stride; None: the spec's value
    grad_checkpointing: bool = False
    # Action head (§6.1), a name of bmvit.models.heads.ACTION_HEADS
    action_head: str = "mlp"
    cross_attn_heads: int = 8  # heads of that cross-attention layer (must divide the backbone width)
    # ViT: position table for inputs other than the pre-training size (bmvit.models.vit):
    # interpolate (EVAD: bicubic from the 224² table) | regenerate (VideoMAE: a new 1-D table)
    pos_embed: str = "interpolate"
    # Backbone initialization (e.g. the Kinetics-400 MViTv2-S checkpoint; paper §4): a file in
    # bmvit (.safetensors from `bmvit convert`), PySlowFast (.pyth) or torchvision layout.
    pretrained: str | None = None
    pretrained_format: str = "auto"  # auto | bmvit | slowfast | torchvision | videomae (ViT: VideoMAE / V2) | hiera (official Hiera .pth)


@dataclass
class LossConfig:
    """λs of Eq. 3, cost weights of Eq. 1, and optional assignment aids."""

    actor: float = 2.0
    action: float = 6.0
    l1: float = 5.0
    giou: float = 2.0
    cost_actor: float = 1.0
    cost_action: float = 1.0
    cost_l1: float = 1.0
    cost_giou: float = 1.0
    extra_positives: str = "none"  # a name of bmvit.losses.matcher.EXTRA_POSITIVES (training aids, not in the paper)
    positive_radius: float = 1.0  # centre_region: cells within this many cells of a GT centre (and inside it)
    focal_gamma: float = 0.0  # > 0: sigmoid focal loss for actor/action instead of BCE (not in the paper)
    focal_alpha: float = 0.25  # focal α for positives (negatives get 1 - α); < 0 disables it


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    epochs: float = 25.0
    max_steps: int | None = None  # overrides epochs when set
    max_minutes: float = 0.0  # > 0: also stop after this many training minutes, the lr cosine ending there (engine/train.py)
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = None
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = one per free core
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16: autocast on CUDA; ignored on CPU (fp32)
    log_every: int = 20
    ckpt_every: int = 0  # optimizer steps between resumable checkpoints (0: only at epoch ends / the end)
    ckpt_each_epoch: bool = True  # also checkpoint at every epoch end
    keep_checkpoints: int = 3  # newest K checkpoints kept (0: all)
    eval_at_minutes: list[float] = field(default_factory=list)  # evaluate on val after these training minutes
    eval_every: int = 0  # also evaluate every N steps (0: off); the best result is kept as best.safetensors
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    layer_decay: float = 1.0  # layer-wise lr decay of the backbone (1.0: off; not in the paper)
    ema_decay: float = 0.0  # EMA of weights (0: off; e.g. 0.999); evaluation then uses the EMA weights
    compile: bool = False  # torch.compile the model
    tensorboard: bool = False  # also write TensorBoard scalars to <out_dir>/tensorboard (needs tensorboard)
    nan_policy: str = "stop"  # stop | skip: what a non-finite loss does
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)


@dataclass
class EvalConfig:
    threshold: float = 0.2  # keep tokens with p(actor) > θ (paper §3.2)
    nms_iou: float | None = None  # class-agnostic NMS on p(actor); None = off (paper)
    score: str = "action"  # action: p(a_c) (paper) | actor*action: p(α)·p(a_c)
    hflip_tta: bool = False  # average each clip's outputs with its mirror image's (not in the paper; 2x the passes)
    # frame offsets of the clips averaged per key frame (models/time_tta.py; not in the paper; one pass
    # each): [] = the centred clip only; e.g. [-1, 1] = the clips moved one frame back and forward
    time_tta: list[int] = field(default_factory=list)
    max_dets_per_frame: int = 50  # AVA: cap of the headline mAP (50: ActivityNet 2019; 0: uncapped, PySlowFast); both are reported
    batch_size: int = 16
    # AVA: the evaluated classes, a label map relative to data.root (None: data.label_map). AVA v2.2
    # trains on 80 classes and is evaluated on 60: ava_action_list_v2.2_for_activitynet_2019.pbtxt
    label_map: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class _Choices(Mapping):
    """``key -> valid names``. Keys of :data:`_IMPLEMENTED_BY` take their names from the table of the
    module that implements them, imported on first use (those modules import torch; reading a config
    that does not set such a key, as the evaluation verbs do, imports nothing)."""

    def __init__(self, fixed: dict[str, tuple[str, ...]], implemented_by: dict[str, tuple[str, str]]) -> None:
        self._fixed, self._implemented_by = fixed, implemented_by

    def __getitem__(self, key: str) -> tuple[str, ...]:
        if key in self._fixed:
            return self._fixed[key]
        module, table = self._implemented_by[key]  # KeyError for a key without a list of names
        return tuple(getattr(importlib.import_module(module), table))

    def __contains__(self, key: object) -> bool:
        return key in self._fixed or key in self._implemented_by

    def __iter__(self):
        return iter([*self._fixed, *self._implemented_by])

    def __len__(self) -> int:
        return len(self._fixed) + len(self._implemented_by)


# Option lists that live with their implementation: key -> (module, name of its table).
_IMPLEMENTED_BY: dict[str, tuple[str, str]] = {
    "model.backbone": ("bmvit.models.build", "BACKBONES"),
    "model.token_selection": ("bmvit.models.token_selection", "SELECTIONS"),
    "model.action_head": ("bmvit.models.heads", "ACTION_HEADS"),
    "loss.extra_positives": ("bmvit.losses.matcher", "EXTRA_POSITIVES"),
}
CHOICES: Mapping[str, tuple[str, ...]] = _Choices({
    "model.pretrained_format": ("auto", "bmvit", "slowfast", "torchvision", "hiera", "videomae"),
    "model.pos_embed": ("interpolate", "regenerate"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.nan_policy": ("stop", "skip"),
    "eval.score": ("action", "actor*action"),
    # real-dataset readers
    "data.format": ("ava", "act"),
    "data.source": ("frames", "video"),
    "data.on_error": ("error", "skip"),
    "data.unknown_actions": ("error", "ignore"),
    "data.resize": ("square", "keep_aspect"),
}, _IMPLEMENTED_BY)


# Valid range of each numeric key (for a list: of each element): (minimum, maximum, minimum excluded?);
# None: unbounded on that side.
_GE0, _GE1, _GT0, _PROB = (0, None, False), (1, None, False), (0, None, True), (0, 1, False)
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "data.fps": _GE1, "data.first_second": _GE0, "data.num_frames": _GE1, "data.stride": _GE1,
    "data.size": (16, None, False), "data.hflip_prob": _PROB, "data.hflip_swap": _GE0, "data.color_jitter": _PROB,
    "data.num_workers": _GE0, "data.video_offset": _GE0, "data.split": _GE1, "data.keyframe_step": _GE1,
    "data.keyframe_range": _GE0, "data.box_jitter": _PROB, "data.time_jitter": _GE0, "data.short_side": (16, None, False),
    "model.head_hidden": _GE1, "model.box_layers": _GE1, "model.cls_layers": _GE1, "model.drop_path": (0, 1, False),
    "model.kv_stride": _GE1, "model.cross_attn_heads": _GE1,
    "loss.actor": _GE0, "loss.action": _GE0, "loss.l1": _GE0, "loss.giou": _GE0, "loss.cost_actor": _GE0,
    "loss.cost_action": _GE0, "loss.cost_l1": _GE0, "loss.cost_giou": _GE0, "loss.positive_radius": _GE0,
    "loss.focal_gamma": _GE0, "loss.focal_alpha": (None, 1, False),
    "train.epochs": _GT0, "train.max_steps": _GE1, "train.max_minutes": _GE0, "train.batch_size": _GE1, "train.lr": _GT0,
    "train.weight_decay": _GE0, "train.warmup_steps": _GE0, "train.min_lr_ratio": _PROB, "train.grad_clip": _GT0,
    "train.seed": (0, 2**32 - 1, False), "train.threads": _GE0, "train.log_every": _GE1, "train.ckpt_every": _GE0,
    "train.keep_checkpoints": _GE0, "train.eval_at_minutes": _GE0, "train.eval_every": _GE0,
    "train.accum_steps": _GE1, "train.layer_decay": (0, 1, True), "train.ema_decay": _PROB,
    "eval.threshold": _PROB, "eval.nms_iou": (0, 1, True), "eval.max_dets_per_frame": _GE0, "eval.batch_size": _GE1,
    "eval.time_tta": (-1000, 1000, False),
}
# Keys whose list must have this many elements (what each element means).
LENGTHS: dict[str, tuple[int, str]] = {
    "data.keyframe_range": (2, "[first, last] timestamps"), "data.short_side": (2, "[min, max] short side"),
    "model.kv_stride": (3, "(t, h, w) strides"),
}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _valid_range(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '≥'} {_fmt(lo)}"
    if lo is None:
        return f"≤ {_fmt(hi)}"
    return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"


def _check_value(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if ``value`` (a converted value of ``key``) is outside RANGES / LENGTHS."""
    if value is None:
        return
    if key in LENGTHS and len(value) != LENGTHS[key][0]:
        n, what = LENGTHS[key]
        raise ConfigError(f"{where}'{key}': expected {n} values ({what}), got {value!r}")
    if key in ("data.mean", "data.std") and (len(value) != 3 or (key == "data.std" and min(value) <= 0)):
        raise ConfigError(f"{where}'{key}': expected 3 per-channel (RGB) values{' > 0' if key == 'data.std' else ''}, "
                          f"got {value!r}")
    if key == "data.hflip_swap" and any(len(pair) != 2 for pair in value):
        raise ConfigError(f"{where}'{key}': expected pairs of action ids [[a, b], ...], got {value!r}")
    if key == "eval.time_tta" and len(set(value)) != len(value):
        raise ConfigError(f"{where}'{key}': frame offsets must be distinct, got {value!r}")
    if key in ("data.keyframe_range", "data.short_side") and value[0] > value[1]:
        raise ConfigError(f"{where}'{key}': first value {value[0]} must be ≤ the second {value[1]}")
    if key not in RANGES:
        return
    lo, hi, lo_open = RANGES[key]
    items = value if isinstance(value, list) else [value]
    for v in (x for item in items for x in (item if isinstance(item, list) else [item])):
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise ConfigError(f"{where}'{key}': {v!r} must be {_valid_range(lo, hi, lo_open)}")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}'{key}': invalid value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}'{key}': expected a list, got {value!r}")
        return [_convert(v, inner, key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            try:
                number = float(number)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}'{key}': expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{where}'{key}': expected {tp.__name__}, got {value!r} ({type(value).__name__})")


def _apply(obj: Any, data: dict, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"{where}unknown key {key!r}; valid keys here: {', '.join(prefix + n for n in names)}")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}'{key}' is a section; expected a mapping of its keys")
            _apply(current, v, key + ".", where)
            continue
        v = _convert(v, hints[k], key, where)
        if key in CHOICES and v not in (valid := CHOICES[key]):
            raise ConfigError(f"{where}'{key}': {v!r} is not one of {', '.join(valid)}")
        _check_value(key, v, where)
        setattr(obj, k, v)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), then apply ``section.key=value`` overrides."""
    cfg = Config()
    if path is not None:
        _apply_file(cfg, Path(path), [])
    return apply_overrides(cfg, overrides or [])


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """One line: ``file:line:column: invalid YAML (problem)``."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or type(e).__name__
    return f"{where}: invalid YAML ({' '.join(str(problem).split())})"


def _apply_file(cfg: Config, path: Path, chain: list[Path]) -> None:
    """Apply one YAML file to ``cfg``; a top-level ``base: other.yaml`` (relative to this file)
    is applied first, so a config states only what differs from its base (e.g. one Table 1 row)."""
    if not path.is_file():
        via = f" (the 'base' of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{via}")
    if path.resolve() in [p.resolve() for p in chain]:
        raise ConfigError(f"{path}: 'base' chain loops: {' -> '.join(map(str, chain + [path]))}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(path, e)) from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: invalid YAML value ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, loss, train, eval)")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base': expected a path to another YAML config, got {base!r}")
        _apply_file(cfg, path.parent / base, chain + [path])
    _apply(cfg, data, "", f"{path}: ")


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML) to ``cfg`` in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: an integer of > 4300 digits
            value = text
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        shown = item if len(item) <= 80 else item[:77] + "..."
        _apply(cfg, nested, "", f"override {shown!r}: ")
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML atomically (:mod:`bmvit.atomic`: a kill leaves the old file or the new one)."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
