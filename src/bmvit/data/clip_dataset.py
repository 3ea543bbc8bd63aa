"""What a clip dataset offers: the contract between the readers and everything that uses them.

:func:`bmvit.data.build.build_dataset` returns a :class:`ClipDataset` for every ``data.format`` x
``data.source`` — :class:`~bmvit.data.clips.AvaClips`, :class:`~bmvit.data.clips.KeyFrameClips`
or :class:`~bmvit.data.clips.ActClips`, possibly inside a
:class:`~bmvit.data.skips.SkipBadSamples` (``data.on_error=skip``), which offers the same members.
Training, evaluation (:mod:`bmvit.engine.evaluate`, :mod:`bmvit.evaluation.evaluators`) and the
CLI use only these; what is specific to one format (the ACT pickle's tubes, the frames folder of a
reader) is reached through :func:`bmvit.data.skips.reader_of` by the code that owns that format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:  # annotations only: data/skips.py imports this module, and the readers import skips.py
    from bmvit.data.keyframes import KeyFrameTable
    from bmvit.data.transforms import ClipTransform

__all__ = ["ClipDataset"]


@runtime_checkable
class ClipDataset(Protocol):
    """A split of key frames, each read as ``(clip (3, T, S, S) uint8, target)``.

    ``target``: ``boxes (N, 4)`` normalized cxcywh, ``labels (N, K)`` multi-hot in ``class_ids``
    order, ``video_id``, ``timestamp``, ``orig_size (H, W)`` (docs/architecture.md, "Targets").
    ``dataset[(i, seed)]`` draws sample ``i``'s augmentation from ``seed`` (training sampler).
    """

    labels: dict[int, str]  # class id -> name, in label-map order
    class_ids: list[int]  # column k of labels (N, K) is class class_ids[k]
    class_index: dict[int, int]  # class id -> column
    num_frames: int  # T
    transform: ClipTransform  # size, normalization (mean/std), augmentation
    sizes: dict[str, tuple[int, int]]  # (H, W) of the videos whose size is known so far

    @property
    def keyframes(self) -> KeyFrameTable: ...  # sample i is key frame keyframes[i]

    def __len__(self) -> int: ...

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, dict]: ...
