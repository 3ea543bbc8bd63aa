"""The ACT / MOC-Detector ground-truth pickle of UCF101-24 and JHMDB51-21 (``UCF101v2-GT.pkl``,
``JHMDB-GT.pkl``), read safely and checked.

The pickle is a dict with these keys (the format ACT introduced and MOC-Detector reuses)::

    labels        list of K class names; a class *index* is a position in this list (0-based)
    nframes       {video: number of frames}                  video = "<Class>/<clip name>"
    resolution    {video: (H, W)}                            pixel size of the frames
    train_videos  [split][i] -> video   (UCF101-24: 1 split, JHMDB51-21: 3 splits)
    test_videos   [split][i] -> video
    gttubes       {video: {class index: [tube, ...]}}        tube = array (M, 5) of rows
                                                             frame (1-based), x1, y1, x2, y2 (pixels)

Frames are ``<frames_root>/<video>/%05d.jpg`` (UCF101-24, ``rgb-images``) or ``.png``
(JHMDB, ``Frames``). The Python 2 strings of the released files load as ``str`` (latin-1); a copy
re-pickled with them as ``bytes`` (loaded with ``encoding="bytes"``) reads the same.

Contract: :func:`read_act_pkl` loads the file with the restricted unpickler
(:mod:`bmvit.data.formats.safe_pickle`) and returns :class:`ActAnnotations`, or raises one
:class:`~bmvit.errors.DataError` naming the file and the offending key path (e.g.
``gttubes['Basketball/v_x'][0][1] row 7``): a missing key, a video of a split without
``nframes`` / ``resolution`` / ``gttubes`` entry, a class index outside ``labels``, a tube that is
not an ``(M, 5)`` array, a frame number outside ``[1, nframes]``, a non-finite box, or a box
that is empty after clipping to the frame. Boxes are clipped to the frame (``[0, W] x [0, H]``)
without comment; the annotations of both datasets touch the border. Under ``on_error="skip"``
bad tubes/rows are dropped and reported through a :class:`~bmvit.data.skips.SkipLog` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmvit.data.formats.safe_pickle import load_pickle
from bmvit.data.skips import SkipLog
from bmvit.errors import DataError

__all__ = ["REQUIRED_KEYS", "ActAnnotations", "ActTube", "read_act_pkl"]

REQUIRED_KEYS = ("labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution")


@dataclass
class ActTube:
    """One ground-truth tube: a class index and its per-frame boxes."""

    label: int  # 0-based index into ActAnnotations.labels
    frames: np.ndarray  # (M,) int64, 1-based, strictly increasing
    boxes: np.ndarray  # (M, 4) float64 pixel x1, y1, x2, y2, clipped to the frame


@dataclass
class ActAnnotations:
    path: Path
    labels: list[str]  # (K,)
    nframes: dict[str, int]
    resolution: dict[str, tuple[int, int]]  # (H, W)
    tubes: dict[str, list[ActTube]]
    train_videos: list[list[str]]
    test_videos: list[list[str]]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_splits(self) -> int:
        return len(self.train_videos)

    def split_videos(self, split: int, train: bool) -> list[str]:
        """Videos of ``split`` (1-based) for training or testing."""
        if not 1 <= split <= self.num_splits:
            raise DataError(f"{self.path}: split {split} requested, the file has splits 1..{self.num_splits}")
        return list((self.train_videos if train else self.test_videos)[split - 1])


def _key(path: Path, obj: dict, key: str, kind: type | tuple[type, ...]):
    if key not in obj:
        raise DataError(f"{path}: missing key '{key}' (an ACT ground-truth pickle has {', '.join(REQUIRED_KEYS)})")
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(f"{path}: key '{key}' should be a {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _show(value) -> str:
    """A short one-line description of a value for an error message."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value, where: str) -> int:
    try:
        out = int(value)
        same = bool(out == value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise DataError(f"{where}: expected an integer, got {_show(value)}") from None
    if not same:
        raise DataError(f"{where}: expected an integer, got {_show(value)}")
    return out


def _as_text(value):
    """``value`` with every ``bytes`` (in dict keys, lists, tuples) decoded to ``str``: the Python 2
    strings of a file loaded with ``encoding="bytes"`` and pickled again (UTF-8, else latin-1)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {_as_text(k): _as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_text(v) for v in value)
    return value


def read_act_pkl(path: str | Path, on_error: str = "error") -> ActAnnotations:
    """Read and check an ACT-style ground-truth pickle (module docstring)."""
    path = Path(path)
    obj = load_pickle(path)
    if isinstance(obj, dict) and any(isinstance(k, bytes) for k in obj):
        obj = _as_text(obj)  # keys, class names and video names stored as bytes
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with keys {', '.join(REQUIRED_KEYS)}, got {type(obj).__name__}")
    skips = SkipLog(on_error, str(path))
    labels = [str(x) for x in _key(path, obj, "labels", (list, tuple))]
    nframes_raw = _key(path, obj, "nframes", dict)
    res_raw = _key(path, obj, "resolution", dict)
    gt_raw = _key(path, obj, "gttubes", dict)
    splits = {}
    for name in ("train_videos", "test_videos"):
        value = _key(path, obj, name, (list, tuple))
        if value and isinstance(value[0], str):  # a single split stored flat
            value = [value]
        for i, split_list in enumerate(value):
            if not isinstance(split_list, (list, tuple)) or not all(isinstance(v, str) for v in split_list):
                raise DataError(f"{path}: {name}[{i}] should be a list of video names, got {_show(split_list)}")
        splits[name] = [list(s) for s in value]
    if len(splits["train_videos"]) != len(splits["test_videos"]):
        raise DataError(f"{path}: 'train_videos' has {len(splits['train_videos'])} splits, "
                        f"'test_videos' {len(splits['test_videos'])}")
    K = len(labels)
    used = sorted({v for s in splits["train_videos"] + splits["test_videos"] for v in s})
    nframes: dict[str, int] = {}
    resolution: dict[str, tuple[int, int]] = {}
    tubes: dict[str, list[ActTube]] = {}
    for v in used:
        for key, table in (("nframes", nframes_raw), ("resolution", res_raw), ("gttubes", gt_raw)):
            if v not in table:
                raise DataError(f"{path}: video '{v}' is in a split list but has no entry in '{key}'")
        n = _int(nframes_raw[v], f"{path}: nframes['{v}']")
        if n < 1:
            raise DataError(f"{path}: nframes['{v}'] = {n}; a video needs at least one frame")
        r = res_raw[v]
        if not (isinstance(r, (tuple, list, np.ndarray)) and len(r) == 2):
            raise DataError(f"{path}: resolution['{v}'] should be (H, W), got {_show(r)}")
        H, W = _int(r[0], f"{path}: resolution['{v}'][0]"), _int(r[1], f"{path}: resolution['{v}'][1]")
        nframes[v], resolution[v] = n, (H, W)
        per_label = gt_raw[v]
        if not isinstance(per_label, dict):
            raise DataError(f"{path}: gttubes['{v}'] should be a dict {{class index: [tubes]}}, got {type(per_label).__name__}")
        out: list[ActTube] = []
        for label, tube_list in per_label.items():
            where = f"{path}: gttubes['{v}'][{_show(label)}]"
            lab = _int(label, where + " (class index)")
            if not 0 <= lab < K:
                raise DataError(f"{where}: class index {lab} outside 'labels' (0..{K - 1})")
            if not isinstance(tube_list, (list, tuple)):
                tube_list = [tube_list]
            for j, tube in enumerate(tube_list):
                t = _check_tube(np.asarray(tube), f"{where}[{j}]", n, H, W, skips)
                if t is not None:
                    out.append(ActTube(lab, *t))
        tubes[v] = out
    return ActAnnotations(path, labels, nframes, resolution, tubes, splits["train_videos"], splits["test_videos"],
                          skips.messages)


def _check_tube(a: np.ndarray, where: str, n: int, H: int, W: int, skips: SkipLog):
    """Validated ``(frames (M,), boxes (M, 4))`` of one tube, or None when skipped."""
    if a.ndim != 2 or a.shape[1] != 5 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.number):
        skips.handle(f"{where}: expected a non-empty (M, 5) numeric array of frame, x1, y1, x2, y2; "
                     f"got shape {a.shape} dtype {a.dtype}")
        return None
    a = a.astype(np.float64)
    finite = np.isfinite(a).all(axis=1)  # (M,)
    f = a[:, 0]
    frame_ok = finite & (f == np.floor(f)) & (f >= 1) & (f <= n)
    clipped = np.clip(a[:, 1:], 0, [W, H, W, H])  # (M, 4)
    box_ok = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep = finite & frame_ok & box_ok
    for r in np.flatnonzero(~keep):  # only bad rows cost Python time
        if not finite[r]:
            msg = f"non-finite value {a[r].tolist()}"
        elif not frame_ok[r]:
            msg = f"frame {f[r]:g} is not a frame number in 1..{n} (nframes)"
        else:
            msg = f"box {a[r, 1:].tolist()} is empty inside the {W}x{H} frame (needs x1 < x2, y1 < y2)"
        skips.handle(f"{where} row {r} (frame {f[r]:g}): {msg}")
    rows = np.flatnonzero(keep)  # original row numbers of the kept rows
    a = a[keep]
    if len(a) == 0:
        return None
    frames = a[:, 0].astype(np.int64)
    if np.any(np.diff(frames) <= 0):
        k = int(np.flatnonzero(np.diff(frames) <= 0)[0]) + 1
        skips.handle(f"{where} row {rows[k]}: frame {frames[k]} after frame {frames[k - 1]} "
                     "(a tube lists each frame once, in increasing order); tube dropped")
        return None
    return frames, np.clip(a[:, 1:], 0, [W, H, W, H])
