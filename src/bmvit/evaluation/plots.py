"""Precision/recall plots of an evaluation, as PNG (matplotlib, Agg backend: no display needed).

Contract: :func:`plot_pr_curves` takes per-class ``(precision (N,), recall (N,))`` arrays in
rank order and per-class APs, and writes one PNG with two panels: the precision/recall curve of
every class (left; the legend lists classes when there are at most 12) and per-class AP as
horizontal bars (right). ``interpolated=True`` draws precision made non-increasing (the curve
whose area is VOC/AVA AP); ``False`` draws the raw points from (R=0, P=1) (ACT's trapezoid AP).
Curves are thinned to at most ``max_points`` points per class, keeping every recall step.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bmvit.atomic import atomic_output

__all__ = ["plot_pr_curves"]


def _thin(precision: np.ndarray, recall: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Points where recall changes (plus the last one), subsampled evenly to ``max_points``."""
    if recall.size == 0:
        return precision, recall
    keep = np.flatnonzero(np.diff(recall, append=np.inf) != 0)  # last point of each recall level
    keep = np.union1d(keep, [0, recall.size - 1])
    if keep.size > max_points:
        keep = keep[np.linspace(0, keep.size - 1, max_points).round().astype(np.int64)]
    return precision[keep], recall[keep]


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    aps: dict[str, float],
    path: str | Path,
    title: str,
    interpolated: bool = True,
    max_points: int = 2000,
) -> Path:
    """Write the PNG described in the module docstring to ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = [k for k in aps if not math.isnan(aps[k])]
    fig_h = max(4.5, 0.18 * len(names) + 1.5)
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(13, fig_h), gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        precision, recall = curves.get(name, (np.zeros(0), np.zeros(0)))
        if interpolated and precision.size:
            precision = np.maximum.accumulate(precision[::-1])[::-1]
        p, r = _thin(precision, recall, max_points)
        if interpolated:  # from recall 0 at the first precision (a class without detections: the point (0, 0))
            p, r = np.concatenate((p[:1] if p.size else [0.0], p)), np.concatenate(([0.0], r))
        else:
            p, r = np.concatenate(([1.0], p)), np.concatenate(([0.0], r))
        ax.plot(r, p, lw=1.0, color=cmap(i % cmap.N), label=f"{name} ({100 * aps[name]:.1f})",
                drawstyle="steps-post" if interpolated else "default")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    if 0 < len(names) <= 12:
        ax.legend(fontsize=8, loc="upper right")
    order = sorted(names, key=lambda k: aps[k])
    bars.barh(range(len(order)), [100 * aps[k] for k in order], color="tab:blue")
    bars.set_yticks(range(len(order)), order, fontsize=7 if len(order) > 30 else 9)
    bars.set(xlabel="AP (%)", xlim=(0, 100), title="per-class AP")
    bars.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:  # a file where the folder should be: one OutputError line
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
