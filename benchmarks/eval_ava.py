"""Benchmark ``bmvit eval-ava`` on an AVA-val-sized input, CSV parsing included.

Generates, into a temporary folder (or ``--keep DIR``), a synthetic input shaped like AVA v2.2
val: ``--frames`` key frames (default 50,400 = 56 videos x 900 s), 1-5 actors per frame (about 3)
with 1-3 actions each from the 60 evaluated classes (ids 1-80, as in the 2019 label map), and
per frame 3-7 detected boxes (about 5) x 10 class scores: about 2.5 M detection rows, some
frames above the 50-row cap. Scores have 6 decimals, like a typical results file.

Then times :func:`bmvit.evaluation.ava.evaluate_ava_files` (reading the label map, both CSVs
and the exclusions, and the evaluation) ``--repeats`` times in this process and prints the
median. Run with ``--keep DIR`` to reuse the files for the official script (see
``docs/evaluation.md``).

    python benchmarks/eval_ava.py [--frames 50400] [--repeats 3] [--keep DIR] [--unique-scores]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# The 60 action ids evaluated in AVA v2.1/v2.2 (the 80-class list minus 20 rare ones).
AVA60 = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34,
         36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64,
         65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80]


def _fmt_rows(vids: np.ndarray, ts: np.ndarray, boxes: np.ndarray, acts: np.ndarray, last: list[str]) -> str:
    """CSV text of rows; numbers formatted like the AVA files (boxes 3 decimals, 4-digit time)."""
    b = np.char.mod("%.3f", boxes)  # (R, 4)
    cols = [vids, np.char.mod("%04d", ts), b[:, 0], b[:, 1], b[:, 2], b[:, 3], np.char.mod("%d", acts), np.asarray(last)]
    out = cols[0].astype(object)
    for c in cols[1:]:
        out = out + "," + c.astype(object)
    return "\n".join(out.tolist()) + "\n"


def generate(folder: Path, frames: int, seed: int = 0, unique_scores: bool = False) -> dict[str, Path]:
    """Write ``gt.csv``, ``pred.csv``, ``labels.pbtxt`` and ``excluded.csv`` into ``folder``.

    ``unique_scores`` makes every detection score distinct (9 decimals), which removes the
    only freedom the official evaluator leaves (its order among equal scores).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    videos = max(1, frames // 900)
    vid_names = np.array([f"vid{v:07d}_x" for v in range(videos)])
    f_vid = np.arange(frames) % videos  # (F,)
    f_ts = 902 + np.arange(frames) // videos  # (F,)
    class_p = rng.dirichlet(np.full(len(AVA60), 0.4))  # skewed class frequencies
    classes = np.array(AVA60)

    def random_boxes(n: int) -> np.ndarray:
        c = rng.uniform(0.1, 0.9, (n, 2))
        wh = rng.uniform(0.1, 0.5, (n, 2))
        return np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1)  # (n, 4)

    # Ground truth: 1-5 actors per frame, 1-3 actions per actor, person ids per video.
    actors = rng.integers(1, 6, frames)  # (F,)
    a_frame = np.repeat(np.arange(frames), actors)  # (A,)
    a_box = random_boxes(len(a_frame))
    a_pid = np.arange(len(a_frame)) - np.repeat(np.cumsum(actors) - actors, actors)
    n_act = rng.integers(1, 4, len(a_frame))
    g_actor = np.repeat(np.arange(len(a_frame)), n_act)
    g_act = rng.choice(classes, len(g_actor), p=class_p)
    gf = a_frame[g_actor]
    gt_text = _fmt_rows(vid_names[f_vid[gf]], f_ts[gf], a_box[g_actor], g_act, np.char.mod("%d", a_pid[g_actor]))

    # Detections: 3-7 boxes per frame (jittered GT boxes or random ones) x 10 class scores.
    nd = rng.integers(3, 8, frames)
    d_frame = np.repeat(np.arange(frames), nd)  # (B,)
    first_actor = np.cumsum(actors) - actors
    src = first_actor[d_frame] + rng.integers(0, 1 << 30, len(d_frame)) % actors[d_frame]
    near = rng.random(len(d_frame)) < 0.7
    d_box = np.where(near[:, None], np.clip(a_box[src] + rng.normal(0, 0.04, (len(d_frame), 4)), 0, 1),
                     random_boxes(len(d_frame)))
    k = 10
    r_box = np.repeat(np.arange(len(d_frame)), k)  # (R,)
    r_act = rng.choice(classes, len(r_box), p=class_p)
    r_score = rng.random(len(r_box)) ** 2
    # A box near an actor scores one of that actor's actions higher (first of its 10 rows).
    first_action = g_act[np.cumsum(n_act) - n_act]  # (A,) first action of each actor
    head = np.flatnonzero(near) * k
    r_act[head] = first_action[src[near]]
    r_score[head] = rng.random(len(head)) ** 0.5
    if unique_scores:  # same ranking, no two scores equal
        r_score = (np.argsort(np.argsort(r_score, kind="stable")) + 1) / (len(r_score) + 1)
    r_score = np.round(r_score, 9 if unique_scores else 6)
    rf = d_frame[r_box]
    pred_text = _fmt_rows(vid_names[f_vid[rf]], f_ts[rf], d_box[r_box], r_act,
                          np.char.mod("%.9f" if unique_scores else "%.6f", r_score))

    paths = {n: folder / f for n, f in
             (("gt", "gt.csv"), ("pred", "pred.csv"), ("labels", "labels.pbtxt"), ("excluded", "excluded.csv"))}
    paths["gt"].write_text(gt_text)
    paths["pred"].write_text(pred_text)
    # 2-space indentation, as the official reader requires.
    paths["labels"].write_text("".join(f'item {{\n  name: "action{c}"\n  id: {c}\n}}\n' for c in AVA60))
    ex = rng.choice(frames, max(1, frames // 500), replace=False)
    paths["excluded"].write_text("".join(f"{vid_names[f_vid[f]]},{f_ts[f]:04d}\n" for f in sorted(ex)))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    ap.add_argument("--max-dets-per-frame", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unique-scores", action="store_true", help="no two detection scores equal")
    args = ap.parse_args()
    import os

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from bmvit.evaluation.ava import evaluate_ava_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        t0 = time.perf_counter()
        p = generate(folder, args.frames, args.seed, args.unique_scores)
        n_det = p["pred"].read_bytes().count(b"\n")
        n_gt = p["gt"].read_bytes().count(b"\n")
        print(f"generated {args.frames} frames, {n_gt} GT rows, {n_det} detection rows in {folder} "
              f"({time.perf_counter() - t0:.1f} s)")
        times, cpu = [], []
        for i in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            res = evaluate_ava_files(p["gt"], p["pred"], p["labels"], p["excluded"], args.max_dets_per_frame)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            print(f"run {i + 1}: {times[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU  frame-mAP@0.5 {res.mean_ap:.6f}")
        print(f"median {statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU over "
              f"{args.repeats} run(s); mAP {res.mean_ap!r} (cap {args.max_dets_per_frame})")


if __name__ == "__main__":
    main()
