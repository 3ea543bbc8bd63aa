"""Benchmark ``bmvit eval-ava`` on an AVA-val-sized input, CSV parsing included.

Generates, into a temporary folder (or ``--keep DIR``), a synthetic input shaped like AVA v2.2
val: ``--frames`` key frames (default 50,400 = 56 videos x 900 s), 1-5 actors per frame (about 3)
with 1-3 actions each from the 60 evaluated classes (ids 1-80, as in the 2019 label map), and
per frame 3-7 detected boxes (about 5) x 10 class scores: about 2.5 M detection rows, some
frames above the 50-row cap. ``--floats`` says how boxes and scores are written: ``repr``
(full precision, as Python's ``repr`` writes a float: what ``str(x)`` in a user's script gives),
``3`` (3 decimals, like the AVA annotation files; many equal scores) or ``6``.

Two modes:

* default: times :func:`bmvit.evaluation.ava.evaluate_ava_files` ``--repeats`` times in this
  process and prints the median (the evaluator alone, no process start).
* ``--official DIR``: the command-level comparison. ``DIR`` is a scratch folder *outside the
  project* holding the official evaluator unmodified, ``DIR/Evaluation/get_ava_performance.py``
  and ``DIR/Evaluation/ava/*.py`` of ActivityNet at commit 3fee089, and a Python with
  ``numpy<1.24`` (``--official-python``, default ``DIR/venv/bin/python``); docs/evaluation.md
  shows the three commands that set it up. For each ``--floats`` format it runs
  ``bmvit eval-ava ...`` and ``python -O get_ava_performance.py ...`` as whole processes,
  alternately, ``--repeats`` times each, and prints per command the median wall, CPU
  (user + sys) and peak RSS (from ``wait4``), the wall ratio pair by pair (median), and both
  mAPs with their difference.

    python benchmarks/eval_ava.py [--frames 50400] [--repeats 3] [--keep DIR] [--floats repr]
    python benchmarks/eval_ava.py --official /tmp/official_ava --floats repr 3 --repeats 3 [--keep DIR --reuse]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The 60 action ids evaluated in AVA v2.1/v2.2 (the 80-class list minus 20 rare ones).
AVA60 = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34,
         36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64,
         65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80]


def _floats(values: np.ndarray, floats: str) -> np.ndarray:
    """(N,) or (N, K) floats as text: ``repr`` (shortest round-trip) or a number of decimals."""
    if floats == "repr":
        return np.array(list(map(repr, values.reshape(-1).tolist())), dtype=object).reshape(values.shape)
    return np.char.mod(f"%.{int(floats)}f", values).astype(object)


def _fmt_rows(vids: np.ndarray, ts: np.ndarray, boxes: np.ndarray, acts: np.ndarray, last: np.ndarray,
              floats: str) -> str:
    """CSV text of rows (4-digit timestamps, boxes written as ``floats`` says)."""
    b = _floats(boxes, floats)  # (R, 4)
    cols = [vids.astype(object), np.char.mod("%04d", ts).astype(object), b[:, 0], b[:, 1], b[:, 2], b[:, 3],
            np.char.mod("%d", acts).astype(object), np.asarray(last, dtype=object)]
    out = cols[0]
    for c in cols[1:]:
        out = out + "," + c
    return "\n".join(out.tolist()) + "\n"


def generate(folder: Path, frames: int, seed: int = 0, floats: str = "repr") -> dict[str, Path]:
    """Write ``gt.csv``, ``pred.csv``, ``labels.pbtxt`` and ``excluded.csv`` into ``folder``;
    detection boxes and scores written as ``floats`` says (module docstring)."""
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
    gt_text = _fmt_rows(vid_names[f_vid[gf]], f_ts[gf], a_box[g_actor], g_act, np.char.mod("%d", a_pid[g_actor]), "3")

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
    rf = d_frame[r_box]
    pred_text = _fmt_rows(vid_names[f_vid[rf]], f_ts[rf], d_box[r_box], r_act, _floats(r_score, floats), floats)

    paths = {n: folder / f for n, f in
             (("gt", "gt.csv"), ("pred", "pred.csv"), ("labels", "labels.pbtxt"), ("excluded", "excluded.csv"))}
    paths["gt"].write_text(gt_text)
    paths["pred"].write_text(pred_text)
    # 2-space indentation, as the official reader requires.
    paths["labels"].write_text("".join(f'item {{\n  name: "action{c}"\n  id: {c}\n}}\n' for c in AVA60))
    ex = rng.choice(frames, max(1, frames // 500), replace=False)
    paths["excluded"].write_text("".join(f"{vid_names[f_vid[f]]},{f_ts[f]:04d}\n" for f in sorted(ex)))
    return paths


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, float, str]:
    """Run ``cmd`` as a process: (wall s, user + sys s, peak RSS MiB, stdout + stderr)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{text[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def compare_with_official(folder: Path, p: dict[str, Path], official: Path, python: Path, repeats: int, cap: int) -> None:
    """Time ``bmvit eval-ava`` against the official command, alternately (module docstring)."""
    script = official / "Evaluation" / "get_ava_performance.py"
    if not script.is_file() or not python.is_file():
        raise SystemExit(f"{script} or {python} missing: set up the official evaluator as docs/evaluation.md says")
    bmvit = shutil.which("bmvit", path=str(Path(sys.executable).parent)) or "bmvit"
    ours_cmd = [bmvit, "eval-ava", "--gt", str(p["gt"]), "--pred", str(p["pred"]), "--labelmap", str(p["labels"]),
                "--exclusions", str(p["excluded"]), "--max-dets-per-frame", str(cap), "--json", str(folder / "ours.json")]
    official_cmd = [str(python), "-O", "get_ava_performance.py", "-l", str(p["labels"]), "-g", str(p["gt"]),
                    "-d", str(p["pred"]), "-e", str(p["excluded"])]
    env = {**os.environ, "PYTHONPATH": "ava:."}
    ours, theirs = [], []
    for i in range(repeats):
        ours.append(_run(ours_cmd))
        theirs.append(_run(official_cmd, cwd=official / "Evaluation", env=env))
        print(f"  pair {i + 1}: bmvit {ours[-1][0]:.2f} s, official {theirs[-1][0]:.2f} s wall "
              f"(ratio {theirs[-1][0] / ours[-1][0]:.1f}x)", flush=True)
    import json

    ours_map = json.loads((folder / "ours.json").read_text())["mAP"]
    found = re.search(r"'PascalBoxes_Precision/mAP@0.5IOU': ([0-9.eE+-]+)", theirs[-1][3])
    official_map = float(found.group(1)) if found else float("nan")
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(f"  {'command':<10} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for name, runs in (("bmvit", ours), ("official", theirs)):
        print(f"  {name:<10} {med(runs, 0):8.2f} {med(runs, 1):8.2f} {med(runs, 2):13.0f}")
    ratio = statistics.median(t[0] / o[0] for o, t in zip(ours, theirs))
    print(f"  wall ratio official/bmvit: median of pairs {ratio:.1f}x (medians {med(theirs, 0) / med(ours, 0):.1f}x); "
          f"CPU ratio {med(theirs, 1) / med(ours, 1):.1f}x; peak RSS bmvit/official {med(ours, 2) / med(theirs, 2):.2f}")
    print(f"  mAP bmvit {ours_map!r}, official {official_map!r}, |difference| {abs(ours_map - official_map):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    ap.add_argument("--max-dets-per-frame", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floats", nargs="+", choices=("repr", "3", "6"), default=["repr"],
                    help="how boxes and scores are written (several: one input each)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse inputs generated there before")
    ap.add_argument("--official", type=Path, help="scratch folder with the official evaluator: compare commands")
    ap.add_argument("--official-python", type=Path, help="its Python (default OFFICIAL/venv/bin/python)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from bmvit.evaluation.ava import evaluate_ava_files

    with tempfile.TemporaryDirectory() as tmp:
        for floats in args.floats:
            folder = (args.keep or Path(tmp)) / f"floats_{floats}"
            t0 = time.perf_counter()
            names = {n: folder / f for n, f in (("gt", "gt.csv"), ("pred", "pred.csv"), ("labels", "labels.pbtxt"),
                                                 ("excluded", "excluded.csv"))}
            reuse = args.reuse and all(q.is_file() for q in names.values())
            p = names if reuse else generate(folder, args.frames, args.seed, floats)
            n_det = p["pred"].read_bytes().count(b"\n")
            n_gt = p["gt"].read_bytes().count(b"\n")
            print(f"floats={floats}: {args.frames} frames, {n_gt} GT rows, {n_det} detection rows, "
                  f"{p['pred'].stat().st_size / 2**20:.0f} MiB in {folder} ({time.perf_counter() - t0:.1f} s)", flush=True)
            if args.official:
                python = args.official_python or args.official / "venv" / "bin" / "python"
                compare_with_official(folder, p, args.official, python, args.repeats, args.max_dets_per_frame)
                continue
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
