"""What the evaluation of a dataset split measured, whatever the format: :class:`SplitEvaluation`.

The headline frame-mAP (``mean_ap``, the number that selects ``best.safetensors`` and that
``bmvit eval`` prints last), the AVA protocols reported side by side (:data:`PROTOCOLS`; none for
ACT data) and the actor detector's precision/recall/AP. Built by the split evaluators of
:mod:`bmvit.evaluation.evaluators`.
"""

from __future__ import annotations

import dataclasses

from bmvit.evaluation.actor_metrics import ActorResult
from bmvit.evaluation.ava import AvaEvalResult, format_table
from bmvit.evaluation.frame_map import FrameMapResult
from bmvit.evaluation.report import json_number, markdown_table

__all__ = ["PROTOCOLS", "PROTOCOL_TITLES", "SplitEvaluation", "protocol_name"]

# AVA protocols reported side by side: name -> detections kept per frame (0 = all).
PROTOCOLS = {"official": 50, "uncapped": 0}
PROTOCOL_TITLES = {"official": "ActivityNet 2019 evaluator (<= 50 detections per frame)",
                   "uncapped": "PySlowFast (uncapped)"}


def protocol_name(cap: int) -> str:
    """``official`` (50), ``uncapped`` (0) or ``capN``."""
    return next((n for n, c in PROTOCOLS.items() if c == cap), f"cap{cap}")


@dataclasses.dataclass
class SplitEvaluation:
    """Everything a split evaluation measured; ``mean_ap`` is the headline frame-mAP."""

    frame_map: AvaEvalResult | FrameMapResult  # headline: AVA under eval.max_dets_per_frame, or ACT frame-mAP
    protocols: dict[str, AvaEvalResult]  # AVA: "official" (cap 50), "uncapped" [, "capN"]; empty for ACT
    actor: ActorResult | None
    headline: str  # key of ``protocols`` behind ``frame_map`` ("act" for ACT data)

    @property
    def mean_ap(self) -> float:
        return self.frame_map.mean_ap

    @property
    def per_class_ap(self) -> dict:
        return self.frame_map.per_class_ap

    def without_curves(self) -> SplitEvaluation:
        """The same numbers without precision/recall curves (what is broadcast to other ranks)."""
        strip = {name: dataclasses.replace(r, pr_curves={}) for name, r in self.protocols.items()}
        return dataclasses.replace(self, frame_map=dataclasses.replace(self.frame_map, pr_curves={}), protocols=strip)

    def metrics(self) -> dict:
        """Flat numbers for ``metrics.jsonl`` (``None`` for NaN): the headline ``val_frame_map``,
        each AVA protocol's ``val_frame_map_<name>``, and ``val_actor_{precision,recall,ap}``."""
        out = {"val_frame_map": json_number(self.mean_ap), "eval_protocol": self.headline}
        out.update({f"val_frame_map_{name}": json_number(r.mean_ap) for name, r in self.protocols.items()})
        if self.actor is not None:
            out.update({"val_actor_precision": json_number(self.actor.precision),
                        "val_actor_recall": json_number(self.actor.recall), "val_actor_ap": json_number(self.actor.ap)})
        return out

    def to_json(self) -> dict:
        doc = {**self.frame_map.to_json(), "headline_protocol": self.headline}
        if self.protocols:
            doc["protocols"] = {name: {"title": PROTOCOL_TITLES.get(name, f"at most {r.max_dets_per_frame} detections "
                                                                          f"per frame"),
                                       "max_dets_per_frame": r.max_dets_per_frame, "mAP": json_number(r.mean_ap),
                                       "num_classes": len(r.per_class_ap)}
                                for name, r in self.protocols.items()}
        if self.actor is not None:
            doc["actor"] = self.actor.to_json()
        return doc

    def table(self) -> str:
        """The headline's per-class table: AVA's (ids, names, AP, #GT), or ACT's as ``bmvit eval-frame`` prints it."""
        head = self.frame_map
        if isinstance(head, FrameMapResult):
            return markdown_table(list(head.per_class_ap), {"AP@0.5": head.per_class_ap}, head.num_gt, head.num_det)
        return format_table(head)

    def lines(self) -> list[str]:
        """Labelled summary lines: one per AVA protocol, then the actor line."""
        out = []
        for name, r in self.protocols.items():
            title = PROTOCOL_TITLES.get(name, f"at most {r.max_dets_per_frame} detections per frame")
            mark = "  <- headline" if name == self.headline else ""
            out.append(f"frame-mAP@0.5 [{title}, {len(r.per_class_ap)} classes]: {r.mean_ap:.4f}{mark}")
        if self.actor is not None:
            out.append(self.actor.line())
        return out
