"""What every checkpoint converter shares: reading a weights file safely and reporting a conversion.

* :func:`read_weights` — the raw mapping of a ``.safetensors`` file (safetensors) or of anything
  else (``torch.load(weights_only=True)``: tensors and plain containers only; a pickled object is
  refused with a :class:`~bmvit.errors.CheckpointError` naming it, never executed);
* :func:`read_state_dict` — its tensors, opened from a ``model_state`` / ``state_dict`` / ``model``
  wrapper, a bmvit detector checkpoint reduced to its ``backbone.*`` weights;
* :class:`ConversionReport` / :class:`ConvertedStateDict` — what a conversion did (dropped,
  unexpected, missing and resized keys), riding along with the converted weights;
* :func:`refuse_foreign_keys` — the rule every backbone loader applies: a checkpoint weight with no
  place in the chosen backbone is refused, naming the key (never silently ignored).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from bmvit.errors import CheckpointError

__all__ = ["ConversionReport", "ConvertedStateDict", "read_state_dict", "read_weights", "refuse_foreign_keys"]

# Wrappers whose weights sit under another key in a checkpoint file.
NESTED = ("model_state", "state_dict", "model")


@dataclass
class ConversionReport:
    """What a conversion did; ``str()`` gives a short human-readable summary."""

    source: str
    target: str
    converted: int = 0
    dropped: list[str] = field(default_factory=list)  # source keys dropped on purpose (classifier head)
    unexpected: list[str] = field(default_factory=list)  # source keys with no place in the target
    missing: list[str] = field(default_factory=list)  # target keys the source does not provide
    resized: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # (key, from, to)

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "converted": self.converted, "dropped": self.dropped,
                "unexpected": self.unexpected, "missing": self.missing, "resized": self.resized}

    def __str__(self) -> str:
        lines = [f"{self.source} -> {self.target}: {self.converted} tensors converted"]
        for name in ("dropped", "unexpected", "missing"):
            keys = getattr(self, name)
            if keys:
                more = f", ... (+{len(keys) - 6})" if len(keys) > 6 else ""
                lines.append(f"  {name} ({len(keys)}): {', '.join(keys[:6])}{more}")
        if self.resized:
            shown = "; ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.resized[:3])
            more = f"; ... (+{len(self.resized) - 3})" if len(self.resized) > 3 else ""
            lines.append(f"  resized ({len(self.resized)}, linear interpolation): {shown}{more}")
        return "\n".join(lines)


class ConvertedStateDict(dict):
    """A state dict (``dict[str, Tensor]``) carrying the :class:`ConversionReport` that produced it."""

    report: ConversionReport


def read_weights(path: str | Path) -> Mapping:
    """The raw mapping stored in a weights file, read safely: ``.safetensors`` with safetensors,
    anything else with ``torch.load(weights_only=True)`` (tensors and plain containers only; a
    pickled object is refused with a :class:`CheckpointError` naming it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it references {found.group(1)}" if found else "it is not a plain weights file"
        raise CheckpointError(
            f"{path}: refused to load: {what}, and only tensors and plain containers are unpickled "
            "(torch.load weights_only=True), never arbitrary objects. Re-save just its state dict in a "
            "trusted environment."
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (RuntimeError of the zip reader,
        # EOFError, KeyError / IndexError of a cut pickle stream, ...); weights_only ran no code, so each
        # means the same: not a readable checkpoint
        detail = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {detail})") from None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: expected a mapping of weights, found {type(sd).__name__}")
    return sd


def unwrap(sd: Mapping) -> Mapping[str, Tensor]:
    """The weights under the first :data:`NESTED` wrapper found, else ``sd`` itself."""
    for key in NESTED:
        if key in sd and isinstance(sd[key], Mapping):
            return sd[key]
    return sd


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors stored in ``path`` (:func:`read_weights`), unwrapped; a bmvit detector
    checkpoint contributes its ``backbone.*`` weights (prefix removed). ``CheckpointError`` when
    the file holds no tensor."""
    sd = unwrap(read_weights(path))
    if any(k.startswith("backbone.") for k in sd):  # a bmvit detector checkpoint
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    tensors = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (keys: {', '.join(list(sd)[:5])}...)")
    return tensors


def refuse_foreign_keys(path: str | Path, report: ConversionReport, backbone: str, layout: str) -> None:
    """``CheckpointError`` naming the first checkpoint weight that has no place in ``backbone``
    (``report.unexpected``): a checkpoint of another backbone, size or depth is refused, not
    partly loaded."""
    if report.unexpected:
        more = f" (and {len(report.unexpected) - 1} more)" if len(report.unexpected) > 1 else ""
        raise CheckpointError(f"{path}: '{report.unexpected[0]}'{more}: the checkpoint ({layout} layout) holds weights "
                              f"that the {backbone} backbone does not have; is it a checkpoint of another backbone "
                              f"or size? Check model.backbone / model.pretrained")
