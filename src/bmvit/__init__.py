"""bmvit: single-stage spatio-temporal action localization (BMViT).

``from bmvit import Detector`` is the inference API (:class:`bmvit.inference.detector.Detector`);
it is imported lazily, so ``import bmvit`` stays cheap (no torch import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "__version__"]

if TYPE_CHECKING:
    from bmvit.inference.detector import Detector


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from bmvit.inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'bmvit' has no attribute {name!r}")
