"""The arguments of the Python API (:class:`~bmvit.inference.detector.Detector`), checked.

Contract: each function returns the value in the form the detector uses, or raises one
:class:`~bmvit.errors.ConfigError` naming the argument, the value given and the valid range — the
API's counterpart of the CLI's range-checked option types (:mod:`bmvit.cli.argtypes`), so that a
wrong type or an out-of-range value never surfaces as a ``TypeError`` deep inside post-processing
or, worse, as silently empty or unfiltered results (``threshold=2``, ``nms_iou=-1``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from bmvit.errors import ConfigError

__all__ = ["count", "flag", "probability", "resolve_device"]


def probability(name: str, value: object, allow_none: bool = False) -> float | None:
    """A number in ``[0, 1]`` (``None`` too when ``allow_none``: e.g. ``nms_iou=None`` = no NMS)."""
    if value is None and allow_none:
        return None
    try:
        number = float(value) if isinstance(value, (numbers.Real, str)) and not isinstance(value, bool) else math.nan
    except ValueError:  # a string that is not a number
        number = math.nan
    if not 0 <= number <= 1:  # NaN fails too
        none = " or None" if allow_none else ""
        raise ConfigError(f"{name}: expected a number in [0, 1]{none}, got {value!r}")
    return number


def count(name: str, value: object) -> int:
    """An integer ``>= 1``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: expected an integer ≥ 1, got {value!r}")
    return int(value)


def flag(name: str, value: object) -> bool:
    """``True`` / ``False`` (numpy's too); a string such as ``"off"`` would be truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name}: expected True or False (leave it out for the checkpoint's setting), got {value!r}")
    return bool(value)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``) if this machine has it;
    else one ``ConfigError`` (a misspelt name, no CUDA, a CUDA index past the last GPU, ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r}: not a device name; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA device available (use the cpu device)")
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:  # torch not built for it, an index past the last device, ...
        detail = " ".join(str(e).split()).split(". ")[0][:160]
        raise ConfigError(f"device {device}: not usable on this machine ({detail}); use the cpu device") from None
    return dev
