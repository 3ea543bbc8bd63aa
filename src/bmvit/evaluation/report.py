"""Human- and machine-readable outputs shared by the evaluation commands.

Contract: every evaluation (AVA frame-mAP, UCF/JHMDB frame-mAP, video-mAP) reduces to per-class
APs (NaN for a class without ground truth) plus GT/detection counts. From those this module
writes

- a per-class markdown table, one AP column per metric (in percent, ``n/a`` without GT), and a
  last row with the mean over classes that have GT (the mAP), and
- JSON documents, written atomically; NaN never reaches JSON (:func:`json_number` makes it
  ``null``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["json_number", "markdown_table", "nan_mean", "write_json"]


def json_number(x: float) -> float | None:
    """``None`` for NaN, else a plain float."""
    return None if math.isnan(x) else float(x)


def nan_mean(values) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    valid = [v for v in values if not math.isnan(v)]
    return float(np.mean(valid)) if valid else math.nan


def markdown_table(
    classes: list[str],
    columns: dict[str, dict[str, float]],
    num_gt: dict[str, int],
    num_det: dict[str, int] | None = None,
) -> str:
    """Markdown table: a row per class with each AP column (percent), #GT [and #det], then means.

    ``columns`` maps a column title (e.g. ``"AP@0.5"``) to ``{class: AP}``.
    """
    titles = list(columns)
    head = "| class | " + " | ".join(f"{t} (%)" for t in titles) + " | #GT |" + (" #det |" if num_det else "")
    rule = "|---|" + "---:|" * len(titles) + "---:|" + ("---:|" if num_det else "")
    lines = [head, rule]

    def pct(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{100 * x:.2f}"

    for c in classes:
        cells = " | ".join(pct(columns[t][c]) for t in titles)
        det = f" {num_det.get(c, 0)} |" if num_det else ""
        lines.append(f"| {c} | {cells} | {num_gt.get(c, 0)} |{det}")
    n = sum(num_gt.get(c, 0) > 0 for c in classes)
    means = " | ".join(f"**{pct(nan_mean(columns[t][c] for c in classes))}**" for t in titles)
    total_det = f" {sum(num_det.values())} |" if num_det else ""
    lines.append(f"| **mean ({n} classes with GT)** | {means} | {sum(num_gt.values())} |{total_det}")
    return "\n".join(lines)


def write_json(path: str | Path, doc: dict) -> Path:
    """Write ``doc`` as indented JSON (NaN is rejected: convert with :func:`json_number`)."""
    from bmvit.atomic import write_text  # temporary name + rename; an unwritable folder is an OutputError

    return write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
