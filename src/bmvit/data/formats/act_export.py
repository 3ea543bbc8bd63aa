"""Ground truth of an ACT pickle's test split, written in the CSV formats bmvit evaluates.

Contract: :func:`write_act_gt` writes, for split ``split`` of ``ann`` (all frames of the test
videos that a tube covers), into ``out``:

=================================  ============================================================
file                               for
=================================  ============================================================
``<prefix>_classes.txt``           ``bmvit eval-frame`` / ``eval-video`` (``--classes``)
``<prefix>_split<N>_test_tubes.csv``  their ``--gt``: ``video,frame,class_name,tube_id,x1,y1,x2,y2``
                                   (pixels, tube id = position of the tube in the video)
``<prefix>_split<N>_test.csv``     the AVA-style evaluation inside ``bmvit train`` / ``bmvit eval``
                                   (``data.val_csv``): ``video,frame,x1,y1,x2,y2,class_id,tube_id``
                                   with boxes normalized by the resolution, class id = index + 1
``<prefix>_label_map.pbtxt``       the class ids 1..K in the AVA label-map format
=================================  ============================================================

The AVA-style evaluation is frame-AP@0.5 with VOC interpolation over the same boxes; the
paper's protocol for UCF101-24 / JHMDB51-21 is ``bmvit eval-frame`` (ACT's frame-mAP).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bmvit.atomic import atomic_output, write_text
from bmvit.data.formats.act import ActAnnotations
from bmvit.data.formats.ava import AvaRows, write_label_map, write_rows

__all__ = ["write_act_gt"]


def write_act_gt(ann: ActAnnotations, split: int, out: str | Path, prefix: str) -> dict[str, Path]:
    """The files of the module docstring, each written atomically (an output that cannot be written
    is an :class:`~bmvit.errors.OutputError` naming it)."""
    out = Path(out)
    videos = ann.split_videos(split, train=False)
    paths = {
        "classes": out / f"{prefix}_classes.txt",
        "tubes": out / f"{prefix}_split{split}_test_tubes.csv",
        "ava": out / f"{prefix}_split{split}_test.csv",
        "label_map": out / f"{prefix}_label_map.pbtxt",
    }
    write_text(paths["classes"], "".join(f"{name}\n" for name in ann.labels))
    write_label_map(paths["label_map"], {i + 1: name for i, name in enumerate(ann.labels)})
    vids, ts, boxes, acts, tube_ids = [], [], [], [], []
    with atomic_output(paths["tubes"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for v in videos:
            H, W = ann.resolution[v]
            for j, tube in enumerate(ann.tubes[v]):
                name = ann.labels[tube.label]
                f.writelines(f"{v},{fr},{name},{j},{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}\n" for fr, (x1, y1, x2, y2) in zip(tube.frames.tolist(), tube.boxes.tolist()))
                n = len(tube.frames)
                vids += [v] * n
                ts.append(tube.frames)
                boxes.append(tube.boxes / np.array([W, H, W, H]))
                acts.append(np.full(n, tube.label + 1))
                tube_ids.append(np.full(n, j, np.float64))
    if vids:
        rows = AvaRows(vids, np.concatenate(ts), np.concatenate(boxes), np.concatenate(acts), np.concatenate(tube_ids))
    else:
        rows = AvaRows.empty()
    write_rows(paths["ava"], rows, person_or_score_format="{:d}")
    return paths
