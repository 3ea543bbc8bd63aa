"""Table 1b on the synthetic dataset: train the demo model once per token selection, same budget.

Each run is ``bmvit train --config configs/synthetic/tiny.yaml model.token_selection=<s>`` (the demo
recipe: 800 steps, seed 0) without the periodic evaluations; the final validation frame-mAP@0.5 is
read from the run's ``metrics.jsonl``. Runs that already finished are reused (delete the folder to
redo one). Prints a Markdown table for ``docs/ablations.md``.

    python benchmarks/token_selection_ablation.py --data data/synthetic --out runs/ablation
    python benchmarks/token_selection_ablation.py --selections "c+t" tubelet "2(c+t)"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ["2(c+t)", "c+t", "tubelet", "maxpool", "singleton"]


def folder_name(selection: str) -> str:
    return selection.replace("(", "").replace(")", "").replace("+", "")


def final_record(run: Path) -> dict | None:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return next((r for r in reversed(records) if r.get("final")), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synthetic", help="synthetic dataset (make it with `bmvit synth`)")
    ap.add_argument("--out", default="runs/ablation", help="one run folder per selection under this")
    ap.add_argument("--config", default="configs/synthetic/tiny.yaml")
    ap.add_argument("--selections", nargs="+", default=ALL)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args()
    if not (Path(args.data) / "annotations").is_dir():
        sys.exit(f"{args.data}: no synthetic dataset there; run `bmvit synth --out {args.data} --videos 320` first")
    rows = []
    for sel in args.selections:
        run = Path(args.out) / folder_name(sel)
        rec = final_record(run)
        if rec is None:
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "bmvit", "train", "--config", args.config, "--overwrite", "--no-progress",
                   f"data.root={args.data}", f"train.out_dir={run}", f"model.token_selection={sel}",
                   "train.eval_at_minutes=[]", *args.overrides]
            print("$", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
            print(f"{sel}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            rec = final_record(run)
        rows.append((sel, rec))
    print("| token selection | triplets L (8×12×12 output) | val frame-mAP@0.5 | training minutes |")
    print("|---|---|---|---|")
    L = {"2(c+t)": 2 * 144, "c+t": 144, "tubelet": 144, "maxpool": 144, "singleton": 4 * 144}
    for sel, rec in rows:
        print(f"| {sel} | {L.get(sel, '?')} | {rec['val_frame_map']:.4f} | {rec['train_minutes']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
