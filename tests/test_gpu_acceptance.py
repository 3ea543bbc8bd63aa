"""benchmarks/gpu_acceptance.py --device cpu --quick: every section runs and is written, nothing fails.

Runs the script as the GPU machine would (``PYTHONPATH=src``, a fresh interpreter), so the command that
measures a GPU cannot rot between GPU runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("device", "train", "infer", "parity", "loader", "sdpa")


def _errors(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "error":
                yield f"{path}: {v}"
            yield from _errors(v, f"{path}.{k}")


def test_quick_cpu_run_writes_all_sections(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--device", "cpu", "--quick",
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert all(s in rep for s in SECTIONS)
    assert not list(_errors(rep)), list(_errors(rep))
    assert rep["device"]["peak_bf16_tflops_measured"] > 0
    train = rep["train"]
    assert {"mvitv2s_b1", "mvitv2s_b2", "mvitv2s_b1_grad_checkpointing", "vitb_b1", "hieral_b1"} <= set(train)
    assert all(train[k]["clips_per_s"] > 0 and 0 < train[k]["mfu"] for k in ("mvitv2s_b1", "vitb_b1", "hieral_b1"))
    assert rep["infer"]["b1"]["latency_ms"] > 0
    tv = rep["infer"]["torchvision_mvit_v2_s"]
    assert "skipped" in tv or tv["max_abs_diff_fp32"] < 1e-3
    p = rep["parity"]
    assert len(p["loss_curve_fp32"]) == len(p["loss_curve_bf16"]) == p["steps"] and p["final_loss_rel_diff"] < 0.1
    assert rep["loader"]["clips_per_s"] > 0 and rep["loader"]["bound"] in ("loader", "compute")
    sd = rep["sdpa"]
    assert sd["default_kernel"] != "unknown" and "step_s" in sd["backends"]["math"]
    md = (tmp_path / "gpu_acceptance.md").read_text()
    assert md.startswith("# GPU acceptance run") and all(f"**{s}**" in md for s in SECTIONS[2:])


def test_every_paper_config_trains_in_bf16():
    from bmvit.config import load_config

    paths = sorted((ROOT / "configs" / "paper").glob("*/*.yaml"))
    assert len(paths) >= 20
    for p in paths:
        assert load_config(p).train.amp == "bf16", p.name
