"""The paper's Table 1 ablations on the synthetic dataset, 3 seeds per row, at the demo's budget.

Every run is ``bmvit train --config configs/synthetic/tiny.yaml`` (the `make demo` recipe: same steps,
batch, aids and evaluation) on a common base — the recipe with the tubelet selection (``BASE``; the
demo's selection when these runs were made; the demo now uses C+T, the 1b row of that name) — with
one key changed and ``train.seed`` set; the final validation frame-mAP@0.5 and actor AP@0.5 are read
from the run's ``metrics.jsonl``. The rows:

==  ========================  =====================================================================
1a  last pool removed / kept  ``model.remove_last_pool`` (output 2×12×12 vs 2×6×6 at 8×96²)
1b  token selection           ``model.token_selection``: 2(c+t), c+t, tubelet, maxpool, singleton
1c  fixed / variable aspect   ``data.resize``: square 96² vs keep_aspect (training short side
                              90–128, the paper's 240–340 at 256 scaled by 96/256; eval short side 96)
==  ========================  =====================================================================

The base (tubelet, last pool removed, square) is one run set shared by all three tables.
Finished runs are reused, so the command can be stopped and started again (an interrupted run is
redone from its start); a run is reused only if its resolved training config, seed and data are
what they were (``<run>.recipe.json``), so changing the recipe's training redoes every run, while
a change of its ``eval`` section only re-evaluates the finished runs' weights (where the run
folder is still there). Each finished run's result is also appended to a ledger kept in the
repository (``--ledger``, default ``benchmarks/ablations_runs.jsonl``: recipe key, evaluation
settings, variant, seed, final metrics): a run whose key is in the ledger is not trained again,
even on another machine whose ``--out`` is empty, so the hours of trainings can be spread over
several sittings (commit the ledger). ``--jobs N``
trains N runs at once with the cores split between them. At the end it prints the table, writes ``results.json`` under ``--out`` and, with
``--write-docs``, replaces the block between the markers in ``docs/ablations.md`` and writes the
plot ``docs/ablations.png``.

    bmvit synth --out data/synthetic --videos 320
    python benchmarks/ablations.py --data data/synthetic --out runs/ablations --jobs 1 --write-docs
    python benchmarks/ablations.py --data data/synthetic --report --write-docs   # the runs done so far
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / "benchmarks" / "ablations_runs.jsonl"
DOC = ROOT / "docs" / "ablations.md"
PLOT = ROOT / "docs" / "ablations.png"
BEGIN, END = "<!-- ablations:begin -->", "<!-- ablations:end -->"

# Every run: the demo recipe with the tubelet selection; name -> overrides of that base.
BASE = ["model.token_selection=tubelet"]
VARIANTS: dict[str, list[str]] = {
    "tubelet": [],
    "2ct": ["model.token_selection=2(c+t)"],
    "ct": ["model.token_selection=c+t"],
    "maxpool": ["model.token_selection=maxpool"],
    "singleton": ["model.token_selection=singleton"],
    "pool_kept": ["model.remove_last_pool=false"],
    "keep_aspect": ["data.resize=keep_aspect", "data.short_side=[90,128]"],
}
# (table, row label, variant, paper mAP of the corresponding Table 1 row)
TABLE: list[tuple[str, str, str, float]] = [
    ("1a", "last pool kept (out 2×6²)", "pool_kept", 27.5),
    ("1a", "last pool removed (out 2×12²)", "tubelet", 30.0),
    ("1b", "singleton", "singleton", 28.5),
    ("1b", "tubelet", "tubelet", 28.7),
    ("1b", "C+T", "ct", 29.1),
    ("1b", "max pooling", "maxpool", 28.3),
    ("1b", "2(C+T)", "2ct", 30.0),
    ("1c", "variable aspect", "keep_aspect", 28.5),
    ("1c", "fixed aspect", "tubelet", 30.0),
]
DEMO = "ct"  # the variant that is the `make demo` recipe itself (tiny.yaml's own selection)


def final_record(run: Path) -> dict | None:
    """The ``final`` line of a finished run's metrics.jsonl, or None."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a killed run: that run is redone
            continue
        if isinstance(rec, dict) and rec.get("final"):
            return rec
    return None


def recipe_key(variant: str, seed: int, args: argparse.Namespace) -> tuple[dict, str]:
    """What a run's result depends on: ``(key, eval_sha256)``. ``key``: the resolved training config
    (recipe file + ``base:`` chain + ``BASE`` + the variant's and the command line's overrides, the
    ``eval`` section left out), the seed and the data; ``eval_sha256``: the ``eval`` section. Output
    folder and thread count are left out. A finished run is reused only under the same key, so a
    change to the recipe's training redoes every run (a comment does not); a change of ``eval`` only
    re-evaluates (:func:`finished`)."""
    from bmvit.config import load_config, to_dict

    cfg = to_dict(load_config(args.config, [*BASE, *VARIANTS[variant], *args.overrides, f"train.seed={seed}"]))
    cfg.get("train", {}).pop("out_dir", None)
    cfg.get("train", {}).pop("threads", None)
    cfg.get("data", {}).pop("root", None)
    evaluation = cfg.pop("eval", {})
    text = json.dumps(cfg, sort_keys=True, default=str)
    manifest = Path(args.data) / "manifest.json"  # the generator's settings: the same data wherever it is made
    data = (hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else str(args.data))
    key = {"config_sha256": hashlib.sha256(text.encode()).hexdigest(), "seed": seed, "data": data}
    return key, hashlib.sha256(json.dumps(evaluation, sort_keys=True, default=str).encode()).hexdigest()


def read_ledger(path: Path) -> list[dict]:
    """The ledger's entries ``{"key", "eval_sha256", "variant", "seed", "record"}``; lines that do not
    parse are skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and {"key", "record"} <= entry.keys():
            out.append(entry)
    return out


def ledger_entry(path: Path, key: dict) -> dict | None:
    for entry in read_ledger(path):
        if entry["key"] == key:
            return entry
    return None


_LEDGER_LOCK = threading.Lock()


def append_ledger(path: Path, variant: str, seed: int, key: dict, eval_sha: str, rec: dict) -> None:
    """Add one finished run (rewritten atomically; entries with the same key are replaced)."""
    with _LEDGER_LOCK:
        keep = [e for e in read_ledger(path) if e["key"] != key]
        keep.append({"variant": variant, "seed": seed, "key": key, "eval_sha256": eval_sha, "record": rec})
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in keep))
        os.replace(tmp, path)


def write_stamp(stamp: Path, key: dict, eval_sha: str) -> None:
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "eval_sha256": eval_sha}))
    os.replace(tmp, stamp)


def read_stamp(stamp: Path) -> dict:
    try:
        doc = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def reevaluate(variant: str, seed: int, args: argparse.Namespace, old: dict) -> dict:
    """The final record of a finished run's weights under the recipe's current ``eval`` section (the
    same evaluation as the end of ``bmvit train``); ``train_minutes`` and ``step`` stay the run's."""
    import torch

    from bmvit.config import load_config
    from bmvit.data.build import make_dataset
    from bmvit.engine.checkpoint import load_weights
    from bmvit.engine.evaluate import evaluate_split
    from bmvit.models.build import build_detector

    run = Path(args.out) / f"{variant}_seed{seed}"
    cfg = load_config(args.config, [*BASE, *VARIANTS[variant], *args.overrides, f"train.seed={seed}",
                                    f"data.root={args.data}"])
    state, _, _ = load_weights(run / "model.safetensors")
    ds = make_dataset(cfg, "val")
    model = build_detector(cfg.model, cfg.data, len(ds.labels), load_pretrained=False)
    model.load_state_dict(state)
    torch.set_num_threads(os.cpu_count() or 1)
    res, _ = evaluate_split(model.eval(), ds, cfg.data.path(cfg.data.val_csv), cfg, torch.device("cpu"), progress=False)
    rec = {"step": old.get("step"), "train_minutes": old.get("train_minutes"), **res.metrics(),
           "val_frame_map": res.mean_ap, "final": True, "reevaluated": True}
    print(f"{variant} seed {seed}: re-evaluated {old.get('val_frame_map', float('nan')):.4f} -> {res.mean_ap:.4f}",
          file=sys.stderr, flush=True)
    return rec


def finished(variant: str, seed: int, args: argparse.Namespace) -> dict | None:
    """The final record of this run at the current recipe, or None if it has to be trained.

    Found in the ledger or in its folder under ``--out`` (then also put in the ledger). A run
    trained under the current key but evaluated with other ``eval`` settings is re-evaluated when
    its folder (weights) is here; without them it counts as not done."""
    run = Path(args.out) / f"{variant}_seed{seed}"
    key, eval_sha = recipe_key(variant, seed, args)
    stamp = read_stamp(Path(args.out) / f"{variant}_seed{seed}.recipe.json")
    ledger = Path(args.ledger)
    entry = ledger_entry(ledger, key)
    here = stamp.get("key") == key and (rec := final_record(run)) is not None
    if entry is None and here:
        entry = {"record": rec, "eval_sha256": stamp.get("eval_sha256")}
        append_ledger(ledger, variant, seed, key, entry["eval_sha256"], rec)
    if entry is None:
        return None
    if entry.get("eval_sha256") == eval_sha:
        return entry["record"]
    if here and (run / "model.safetensors").is_file():
        rec = reevaluate(variant, seed, args, entry["record"])
        append_ledger(ledger, variant, seed, key, eval_sha, rec)
        return rec
    return None


def train_one(variant: str, seed: int, args: argparse.Namespace, threads: int) -> dict:
    rec = finished(variant, seed, args)
    if rec is not None:
        return rec
    run = Path(args.out) / f"{variant}_seed{seed}"
    key, eval_sha = recipe_key(variant, seed, args)
    stamp = Path(args.out) / f"{variant}_seed{seed}.recipe.json"
    ledger = Path(args.ledger)
    stamp.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bmvit", "train", "--config", args.config, "--overwrite", "--no-progress",
           f"data.root={args.data}", f"train.out_dir={run}", f"train.seed={seed}", f"train.threads={threads}",
           "train.eval_at_minutes=[]", *BASE, *VARIANTS[variant], *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    with open(Path(args.out) / f"{variant}_seed{seed}.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    rec = final_record(run)
    if done.returncode != 0 or rec is None:
        raise SystemExit(f"error: run {run} failed (exit {done.returncode}); see {run}.log")
    write_stamp(stamp, key, eval_sha)
    append_ledger(ledger, variant, seed, key, eval_sha, rec)
    print(f"{variant} seed {seed}: {rec['val_frame_map']:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return rec


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for table, label, variant, paper in TABLE:
        recs = results.get(variant, [])
        maps = [r["val_frame_map"] for r in recs]
        actor = [r.get("val_actor_ap", float("nan")) for r in recs]
        rows.append({"table": table, "row": label, "variant": variant, "paper": paper, "seeds": len(maps),
                     "map": maps, "mean": statistics.fmean(maps) if maps else float("nan"),
                     "std": statistics.stdev(maps) if len(maps) > 1 else float("nan"),
                     "actor_ap": statistics.fmean(actor) if actor else float("nan")})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| table | row | seeds | val frame-mAP@0.5 (mean ± std) | per seed | actor AP@0.5 (mean) | paper mAP (AVA) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["seeds"]:
            out.append(f"| {r['table']} | {r['row']} | 0 | not run | | | {r['paper']:.1f} |")
            continue
        per_seed = " / ".join(f"{m:.3f}" for m in r["map"])
        spread = f" ± {r['std']:.3f}" if r["seeds"] > 1 else " (one seed: no spread)"
        out.append(f"| {r['table']} | {r['row']} | {r['seeds']} | **{r['mean']:.3f}**{spread} | {per_seed} "
                   f"| {r['actor_ap']:.3f} | {r['paper']:.1f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 5, 2]}, sharey=True)
    for ax, table in zip(axes, ("1a", "1b", "1c")):
        sel = [r for r in rows if r["table"] == table and r["seeds"]]
        xs = range(len(sel))
        ax.bar(xs, [r["mean"] for r in sel], yerr=[0 if r["std"] != r["std"] else r["std"] for r in sel],
               capsize=4, color=["#4c72b0" if r["variant"] != DEMO else "#dd8452" for r in sel])
        for x, r in zip(xs, sel):
            ax.scatter([x] * len(r["map"]), r["map"], color="black", s=8, zorder=3)
        ax.set_xticks(list(xs), [r["row"].split(" (")[0] for r in sel], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"Table {table} analogue", fontsize=9)
    axes[0].set_ylabel("val frame-mAP@0.5 (synthetic)")
    fig.suptitle("Synthetic Table 1: mean ± std over seeds (dots: single seeds; orange: the demo recipe)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def write_docs(table_md: str, args: argparse.Namespace) -> None:
    doc = Path(args.doc)
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {doc}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    done, total = getattr(args, "runs_done", None), getattr(args, "runs_total", None)
    status = "" if done is None or done == total else f" **{done} of {total} runs finished so far**; the others are still to run."
    block = f"{BEGIN}\n{table_md}\n\nSeeds: {' '.join(map(str, args.seeds))}; data `{args.data}`.{status}\n{END}"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(head + block + tail)
    os.replace(tmp, doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synthetic", help="synthetic dataset (make it with `bmvit synth --videos 320`)")
    ap.add_argument("--out", default="runs/ablations", help="one run folder per variant and seed under this")
    ap.add_argument("--config", default="configs/synthetic/tiny.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (the cores are split between them)")
    ap.add_argument("--ledger", default=str(LEDGER), help="JSON-lines record of finished runs, reused by recipe key")
    ap.add_argument("--write-docs", action="store_true", help="update --doc (its marked block) and --plot")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: tabulate the runs finished so far (rows say how many seeds they have; "
                         "finished weights are re-evaluated if the recipe's eval settings changed)")
    ap.add_argument("--doc", default=str(DOC), help="Markdown file whose marked block gets the table")
    ap.add_argument("--plot", default=str(PLOT), help="PNG written with --write-docs")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args()
    if not (Path(args.data) / "annotations").is_dir():
        raise SystemExit(f"error: {args.data}: no synthetic dataset there; run `bmvit synth --out {args.data} --videos 320`")
    if args.jobs < 1:
        raise SystemExit("error: --jobs: expected an integer >= 1")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [(v, s) for s in args.seeds for v in args.variants]  # seed-major: a complete table appears early
    recs = [finished(*job, args) for job in jobs]  # one at a time: ledger, run folders, re-evaluations
    todo = [i for i, rec in enumerate(recs) if rec is None]
    if todo and not args.report:
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, rec in zip(todo, pool.map(lambda i: train_one(*jobs[i], args, threads), todo)):
                recs[i] = rec
    results: dict[str, list[dict]] = {}
    for (variant, _), rec in zip(jobs, recs):
        if rec is not None:
            results.setdefault(variant, []).append(rec)
    args.runs_done, args.runs_total = sum(r is not None for r in recs), len(jobs)
    rows = summarize(results)
    table_md = markdown(rows)
    tmp = Path(args.out) / "results.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, Path(args.out) / "results.json")
    print(table_md)
    if args.write_docs:
        write_docs(table_md, args)
        plot(rows, Path(args.plot))
        print(f"wrote {args.doc} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
