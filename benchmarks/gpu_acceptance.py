"""GPU acceptance run: the paper configuration on one device, measured in one command.

    PYTHONPATH=src python3 benchmarks/gpu_acceptance.py --device cuda --out OUT     # ~6-8 min on one H200
    PYTHONPATH=src python3 benchmarks/gpu_acceptance.py --device cpu --quick --out OUT   # every section, tiny sizes

Writes ``OUT/gpu_acceptance.json`` (top-level keys = sections) and ``OUT/gpu_acceptance.md``:

* ``device``: name, memory, torch/CUDA versions, peak bf16 matmul rate measured here and the datasheet value.
* ``train``: Table 1a row 4 (``configs/paper/ava/mvitv2s_16x256_out8x16.yaml``: 16×256², MViTv2-S, last pool
  removed, 2(C+T), 80 classes) on synthetic device tensors, bf16 autocast, fused AdamW, the real matcher and loss,
  at batch 8 and 16 (``clips_per_s``, ``mfu`` = counted FLOPs × 3 / step time / peak, ``peak_mem_gib``); batch 8
  with gradient checkpointing and with ``torch.compile``; ViT-B@288 and Hiera-L at batch 8.
* ``infer``: MViTv2-S paper config, bf16, batch 1 and 32: ``clips_per_s`` and latency; bmvit's MViTv2-S against
  torchvision's ``mvit_v2_s`` with the same weights (skipped, with the reason, without torchvision).
* ``parity``: bf16 autocast vs fp32 on one batch (max differences of boxes/logits, losses) and 20 training steps
  of each from one initialisation on a fixed batch (both loss curves).
* ``loader``: AVA-layout JPEG frames written here, the real training loader (all cores as workers, pinned
  memory, persistent workers) feeding the real bf16 training step for ``--loader-seconds``: ``clips_per_s``,
  seconds the step waited for data, ``bound`` (loader | compute).
* ``sdpa``: which scaled-dot-product-attention kernel MViT's attention (relative-position bias as the mask)
  runs by default, and the forward+backward time of the model with each backend forced.

Everything imported works on torch >= 2.4 without PyAV and without bmvit installed (``PYTHONPATH=src``).
On a CPU, ``train.amp``-style bf16 autocast is not what training uses (fp32), so train/infer/loader run fp32
there; parity still compares CPU bf16 autocast with fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # loader.py (fixture), backbone.py (torchvision reference)

from bmvit.config import load_config  # noqa: E402
from bmvit.data.transforms import normalize_clips  # noqa: E402
from bmvit.engine.optim import make_optimizer  # noqa: E402
from bmvit.data.build import make_dataset  # noqa: E402
from bmvit.engine.feed import amp_dtype, make_loader, to_device  # noqa: E402
from bmvit.losses.criterion import SetCriterion  # noqa: E402
from bmvit.models.build import build_detector  # noqa: E402
from bmvit.models.flops import detector_cost  # noqa: E402

PAPER = {"mvitv2s": "configs/paper/ava/mvitv2s_16x256_out8x16.yaml",
         "vitb": "configs/paper/ava/vitb_16x288_central_xattn.yaml",
         "hieral": "configs/paper/ava/hieral_16x224.yaml"}
DATASHEET_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _median_time(fn, dev: torch.device, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _guard(fn, *args, **kwargs) -> dict:
    """Run one measurement; a failure (OOM, unsupported kernel) is recorded, not fatal."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the report names what failed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        where = [ln.strip() for ln in traceback.format_exc().splitlines() if ln.strip().startswith("File ")]
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                "where": where[-1][:200] if where else ""}


QUICK_MODEL = {"mvitv2s": ["model.backbone=mvit_tiny"], "vitb": ["model.backbone=vit_tiny", "model.cross_attn_heads=4"],
               "hieral": ["model.backbone=hiera_tiny"]}  # --quick: the same code paths, CPU-sized


def _cfg(name: str, quick: bool, extra: list[str] = ()) -> object:
    """The paper config ``name`` with random weights; ``quick``: 4×64² clips and the tiny backbone of the family."""
    over = ["model.pretrained=null"]
    if quick:
        over += ["data.num_frames=4", "data.size=64", *QUICK_MODEL[name]]
    return load_config(ROOT / PAPER[name], over + list(extra))


def _peak_gib(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None


def _reset_mem(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _targets(B: int, K: int, dev: torch.device, g: torch.Generator) -> list[dict]:
    """Two actors per clip: boxes (2, 4) cxcywh inside the frame, multi-hot labels (2, K)."""
    out = []
    for _ in range(B):
        c = 0.25 + 0.5 * torch.rand(2, 2, generator=g)
        wh = 0.1 + 0.3 * torch.rand(2, 2, generator=g)
        lab = (torch.rand(2, K, generator=g) < 0.05).float()
        lab[:, 0] = 1
        out.append({"boxes": torch.cat([c, wh], 1).to(dev), "labels": lab.to(dev)})
    return out


class _Step:
    """One training step of the real pipeline on a fixed device batch: normalize -> autocast forward ->
    Hungarian matching -> loss -> backward -> fused AdamW (CUDA)."""

    def __init__(self, cfg, dev: torch.device, B: int, K: int = 80, autocast: torch.dtype | None = None,
                 compile_model: bool = False, model=None, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = model if model is not None else build_detector(cfg.model, cfg.data, K, load_pretrained=False)
        self.model = self.model.to(dev).train()
        self.net = torch.compile(self.model) if compile_model else self.model
        self.opt = make_optimizer(self.model, cfg.train.lr, cfg.train.weight_decay, 1.0, dev)
        self.criterion = SetCriterion.from_config(cfg.loss)  # the training step's criterion (matching included)
        g = torch.Generator().manual_seed(seed)
        T, S = cfg.data.num_frames, cfg.data.size
        self.clips = torch.randint(0, 256, (B, 3, T, S, S), generator=g, dtype=torch.uint8).to(dev)
        self.targets = _targets(B, K, dev, g)
        self.mean, self.std = cfg.data.mean, cfg.data.std
        self.dev, self.autocast = dev, autocast

    def loss(self, clips=None, targets=None) -> torch.Tensor:
        x = normalize_clips(self.clips if clips is None else clips, self.mean, self.std)  # (B, 3, T, S, S)
        targets = self.targets if targets is None else targets
        with torch.autocast(self.dev.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            out = self.net(x)
        n = float(sum(len(t["boxes"]) for t in targets))
        return self.criterion(out, targets, n)["loss"]

    def __call__(self, clips=None, targets=None) -> torch.Tensor:
        loss = self.loss(clips, targets)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


# --- sections ------------------------------------------------------------------------------------

def section_device(dev: torch.device, quick: bool) -> dict:
    info = {"type": dev.type, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_count": len(os.sched_getaffinity(0))}
    n = 512 if quick else 8192
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(name=platform.processor() or platform.machine(), memory_gib=None)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    reps = 2 if quick else 50
    t = _median_time(lambda: [torch.mm(a, b, out=c) for _ in range(reps)], dev, 1, 3 if quick else 5)
    info["peak_bf16_tflops_measured"] = round(2 * n**3 * reps / t / 1e12, 3)
    info["matmul_size"] = n
    info["peak_bf16_tflops_datasheet"] = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in info["name"]), None)
    return info


def _train_one(cfg, dev, B: int, quick: bool, peak: float, datasheet: float | None, compile_model=False) -> dict:
    _reset_mem(dev)
    autocast = amp_dtype("bf16", dev)
    step = _Step(cfg, dev, B, 80, autocast, compile_model)
    warm, runs = (0, 1) if quick else ((3, 10) if compile_model else (2, 8))
    t = _median_time(step, dev, warm, runs)
    gmacs = detector_cost(cfg, 80).gmacs_total
    flops = 2 * gmacs * 1e9 * 3 * B  # forward + backward = 3 x forward
    res = {"batch": B, "step_s": round(t, 4), "clips_per_s": round(B / t, 2), "gmacs_per_clip": round(gmacs, 2),
           "mfu": round(flops / t / (peak * 1e12), 4), "peak_mem_gib": _peak_gib(dev),
           "dtype": "bf16" if autocast is not None else "fp32", "input": [cfg.data.num_frames, cfg.data.size],
           "backbone": cfg.model.backbone}
    if datasheet:
        res["mfu_datasheet"] = round(flops / t / (datasheet * 1e12), 4)
    del step
    if compile_model:
        torch._dynamo.reset()  # drop the compiled graphs (and the model they hold)
    _reset_mem(dev)
    return res


def section_train(dev: torch.device, quick: bool, peak: float, datasheet: float | None) -> dict:
    """Every training variant but ``torch.compile`` (:func:`train_compile` runs last: its build time varies)."""
    out = {}
    mv = _cfg("mvitv2s", quick)
    for B in ((1, 2) if quick else (8, 16)):
        out[f"mvitv2s_b{B}"] = _guard(_train_one, mv, dev, B, quick, peak, datasheet)
    B8 = 1 if quick else 8
    out[f"mvitv2s_b{B8}_grad_checkpointing"] = _guard(_train_one, _cfg("mvitv2s", quick, ["model.grad_checkpointing=true"]),
                                                      dev, B8, quick, peak, datasheet)
    for name in ("vitb", "hieral"):
        out[f"{name}_b{B8}"] = _guard(_train_one, _cfg(name, quick), dev, B8, quick, peak, datasheet)
    return out


def train_compile(dev: torch.device, quick: bool, peak: float, datasheet: float | None) -> tuple[str, dict]:
    """The row-4 config at batch 8 under ``torch.compile`` (its compile time is included in no figure)."""
    B8 = 1 if quick else 8
    key = f"mvitv2s_b{B8}_compile"
    if quick and dev.type == "cpu":
        return key, {"skipped": "--quick on CPU: torch.compile (inductor) takes minutes to build"}
    t0 = time.perf_counter()
    res = _guard(_train_one, _cfg("mvitv2s", quick), dev, B8, quick, peak, datasheet, compile_model=True)
    res["compile_and_measure_s"] = round(time.perf_counter() - t0, 1)
    return key, res


def _torchvision_compare(dev: torch.device, quick: bool) -> dict:
    from backbone import build_reference, load_reference

    from bmvit.models.checkpoints.mvit import from_torchvision
    from bmvit.models.mvit import mvitv2_s

    try:
        module = load_reference(None)
    except Exception as e:  # noqa: BLE001 - a broken torchvision is a reason to skip
        module, why = None, f"torchvision import failed: {e}"
    else:
        why = "torchvision is not importable here"
    if module is None:
        return {"skipped": why}
    T, S, B = (4, 64, 1) if quick else (16, 224, 8)
    torch.manual_seed(0)
    ref = build_reference(module, T, S, True).to(dev)
    ours = mvitv2_s((T, S, S), remove_last_pool=True).eval()
    ours.load_state_dict(from_torchvision(ref.state_dict(), target=ours), strict=True)
    ours = ours.to(dev)
    x = torch.randn(B, 3, T, S, S, device=dev)
    tokens = {}
    hook = ref.norm.register_forward_hook(lambda m, i, o: tokens.__setitem__("ref", o))
    with torch.inference_mode():
        ref(x)
        diff = (ours.forward_tokens(x)[0].float() - tokens["ref"].float()).abs().max().item()  # fp32
        ac = amp_dtype("bf16", dev)
        with torch.autocast(dev.type, dtype=ac or torch.float32, enabled=ac is not None):
            t_ours = _median_time(lambda: ours.forward_tokens(x), dev, 1, 2 if quick else 10)
            t_ref = _median_time(lambda: ref(x), dev, 1, 2 if quick else 10)
    hook.remove()
    return {"input": [T, S, S], "batch": B, "max_abs_diff_fp32": diff, "bmvit_s": round(t_ours, 5),
            "torchvision_s": round(t_ref, 5), "speed_ratio_torchvision_over_bmvit": round(t_ref / t_ours, 3)}


def section_infer(dev: torch.device, quick: bool) -> dict:
    cfg = _cfg("mvitv2s", quick)
    model = build_detector(cfg.model, cfg.data, 80, load_pretrained=False).to(dev).eval()
    ac = amp_dtype("bf16", dev)
    out = {"dtype": "bf16" if ac is not None else "fp32", "input": [cfg.data.num_frames, cfg.data.size]}
    for B in ((1, 2) if quick else (1, 32)):
        def run(B=B):
            _reset_mem(dev)
            x = torch.randint(0, 256, (B, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size), dtype=torch.uint8,
                              device=dev)
            with torch.inference_mode(), torch.autocast(dev.type, dtype=ac or torch.float32, enabled=ac is not None):
                t = _median_time(lambda: model(normalize_clips(x, cfg.data.mean, cfg.data.std)), dev, 1 if quick else 3,
                                 1 if quick else 20)
            return {"batch": B, "latency_ms": round(1e3 * t, 2), "clips_per_s": round(B / t, 2), "peak_mem_gib": _peak_gib(dev)}
        out[f"b{B}"] = _guard(run)
    del model
    out["torchvision_mvit_v2_s"] = _guard(_torchvision_compare, dev, quick)
    return out


def section_parity(dev: torch.device, quick: bool) -> dict:
    cfg = _cfg("mvitv2s", quick)
    B, steps = (2, 3) if quick else (8, 20)
    torch.manual_seed(0)
    init = build_detector(cfg.model, cfg.data, 80, load_pretrained=False)
    fp32 = _Step(cfg, dev, B, 80, None, model=copy.deepcopy(init))
    bf16 = _Step(cfg, dev, B, 80, torch.bfloat16, model=copy.deepcopy(init))
    x = normalize_clips(fp32.clips, cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        o32 = fp32.model(x)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            o16 = bf16.model(x)
        l32, l16 = fp32.loss().item(), bf16.loss().item()
    res = {"batch": B, **{f"max_abs_diff_{k}": (o32[k].float() - o16[k].float()).abs().max().item()
                          for k in ("boxes", "actor_logits", "action_logits")},
           "loss_fp32": l32, "loss_bf16": l16}
    curves = {}
    for name, step in (("fp32", fp32), ("bf16", bf16)):
        curves[name] = [round(step().item(), 5) for _ in range(steps)]
    res.update(steps=steps, loss_curve_fp32=curves["fp32"], loss_curve_bf16=curves["bf16"],
               final_loss_rel_diff=abs(curves["fp32"][-1] - curves["bf16"][-1]) / max(abs(curves["fp32"][-1]), 1e-12))
    return res


def section_loader(dev: torch.device, quick: bool, seconds: float, workers: int) -> dict:
    from loader import make_fixture

    from bmvit.engine.sampler import ResumableBatchSampler
    from bmvit.data.collate import collate_fn

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        if quick:
            make_fixture(root, videos=2, seconds=3, width=160, height=90, video=False)
        else:  # 6 x 9 key frames of 568x320 JPEGs (AVA's 16:9 at short side 320), repeated below
            make_fixture(root, videos=6, seconds=10, width=568, height=320, video=False)
        fixture_s = time.perf_counter() - t0
        cfg = _cfg("mvitv2s", quick, [f"data.root={root}", "data.train_csv=annotations/train.csv",
                                      "data.val_csv=annotations/train.csv", "data.label_map=annotations/label_map.pbtxt",
                                      "data.exclusions=null", "data.keyframe_range=null", "data.hflip_prob=0.5",
                                      f"data.num_workers={workers}"])
        ds = _Repeat(make_dataset(cfg, "train", augment=True), 1 if quick else 200)  # long epochs: no restarts
        B = 2 if quick else cfg.train.batch_size
        sampler = ResumableBatchSampler(len(ds), B, 0)
        loader = make_loader(ds, sampler, collate_fn(cfg.data.resize), workers, dev, 0)
        step = _Step(cfg, dev, 1, len(ds.labels), amp_dtype("bf16", dev))
        mean, std = cfg.data.mean, cfg.data.std
        clips = waited = 0.0
        steps, epoch = 0, 0
        start = time.perf_counter()

        def done() -> bool:
            return steps >= 3 if quick else time.perf_counter() - start >= seconds

        warm = True  # the first step (worker start-up, CUDA warm-up) is not counted

        while not done():
            sampler.set_epoch(epoch)
            it = iter(loader)
            while not done():
                w0 = time.perf_counter()
                batch = next(it, None)
                waited += time.perf_counter() - w0  # the step (and so the device) waits for data
                if batch is None:
                    break
                x, targets = to_device(batch[0], batch[1], dev, mean, std)  # uint8 -> normalized on the device
                _loader_step(step, x, targets)
                if warm:
                    _sync(dev)
                    warm, start, waited = False, time.perf_counter(), 0.0
                    continue
                clips += len(targets)
                steps += 1
            epoch += 1
        _sync(dev)
        elapsed = time.perf_counter() - start
        del loader
    return {"workers": workers, "batch": B, "frames": "568x320 JPEG q90" if not quick else "160x90 JPEG q90",
            "input": [cfg.data.num_frames, cfg.data.size], "fixture_s": round(fixture_s, 1), "seconds": round(elapsed, 1),
            "steps": steps, "clips_per_s": round(clips / elapsed, 2), "data_wait_s": round(waited, 2),
            "data_wait_fraction": round(waited / elapsed, 3), "bound": "loader" if waited > 0.1 * elapsed else "compute"}


class _Repeat(Dataset):
    """``dataset`` ``n`` times over (sample ``i`` is ``i mod len``; the ``(index, seed)`` items of the sampler kept)."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.labels = dataset.labels

    def __len__(self) -> int:
        return self.n * len(self.dataset)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        j = i % len(self.dataset)
        return self.dataset[(j, seed) if seed is not None else j]


def _loader_step(step: _Step, x: torch.Tensor, targets: list[dict]) -> None:
    """The training step on a real (already normalized) batch."""
    with torch.autocast(step.dev.type, dtype=step.autocast or torch.float32, enabled=step.autocast is not None):
        out = step.net(x)
    n = float(sum(len(t["boxes"]) for t in targets))
    step.criterion(out, targets, n)["loss"].backward()
    step.opt.step()
    step.opt.zero_grad(set_to_none=True)


_SDPA_OPS = {"flash": "flash_attention", "memory_efficient": "efficient_attention", "cudnn": "cudnn_attention",
             "math": "attention_math"}


def section_sdpa(dev: torch.device, quick: bool) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = _cfg("mvitv2s", quick)
    B = 1 if quick else 8
    step = _Step(cfg, dev, B, 80, amp_dtype("bf16", dev))
    step()
    _sync(dev)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
        _sync(dev)
    names = {e.name for e in prof.events() if "scaled_dot_product" in e.name}
    default = sorted(k for k, op in _SDPA_OPS.items() if any(op in n for n in names)) or ["unknown"]
    res = {"batch": B, "default_kernel": ",".join(default), "aten_ops": sorted(names), "backends": {}}
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "memory_efficient": SDPBackend.EFFICIENT_ATTENTION,
                "math": SDPBackend.MATH}
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends["cudnn"] = SDPBackend.CUDNN_ATTENTION
    for name, be in backends.items():
        def timed(be=be):
            with sdpa_kernel([be]):
                t = _median_time(step, dev, 1, 1 if quick else 5)
            return {"step_s": round(t, 4)}
        r = _guard(timed)
        res["backends"][name] = r if "error" not in r else {"available": False, "why": r["error"][:200]}
    return res


# --- report ----------------------------------------------------------------------------------------

def _markdown(rep: dict) -> str:
    d = rep["device"]
    lines = [f"# GPU acceptance run — {d.get('name')} ({d['type']})", "",
             f"torch {d['torch']}, CUDA {d['cuda']}, peak bf16 measured {d['peak_bf16_tflops_measured']} TFLOP/s "
             f"(datasheet {d['peak_bf16_tflops_datasheet']}); quick={rep['quick']}; {rep['seconds']:.0f} s in all.", "",
             "## train", "", "| run | batch | clips/s | step s | MFU (measured peak) | MFU (datasheet) | peak GiB |",
             "|---|---|---|---|---|---|---|"]
    for k, v in rep["train"].items():
        if not isinstance(v, dict):
            continue
        if "clips_per_s" in v:
            lines.append(f"| {k} | {v['batch']} | {v['clips_per_s']} | {v['step_s']} | {v['mfu']} | "
                         f"{v.get('mfu_datasheet', '')} | {v['peak_mem_gib']} |")
        else:
            lines.append(f"| {k} | | {v.get('skipped') or v.get('error')} | | | | |")
    lines += ["", "## other sections", ""]
    for sec in ("infer", "parity", "loader", "sdpa"):
        lines.append(f"- **{sec}**: `{json.dumps(rep[sec])[:1500]}`")
    return "\n".join(lines) + "\n"


def _write(out: Path, name: str, text: str) -> None:
    tmp = out / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="every section at tiny sizes (the CPU test)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--loader-seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=0, help="loader workers (0: one per core)")
    ap.add_argument("--sections", default="device,train,infer,parity,loader,sdpa")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device (use --device cpu --quick)", file=sys.stderr)
        return 2
    dev = torch.device(args.device)  # fp32 stays fp32 (no TF32): parity and the torchvision check compare exact fp32
    args.out.mkdir(parents=True, exist_ok=True)
    workers = args.workers or len(os.sched_getaffinity(0))
    start = time.perf_counter()
    rep: dict = {"quick": args.quick}
    wanted = args.sections.split(",")
    rep["device"] = section_device(dev, args.quick)
    peak, sheet = rep["device"]["peak_bf16_tflops_measured"], rep["device"]["peak_bf16_tflops_datasheet"]
    run = {"train": lambda: section_train(dev, args.quick, peak, sheet),
           "infer": lambda: section_infer(dev, args.quick),
           "parity": lambda: section_parity(dev, args.quick),
           "loader": lambda: section_loader(dev, args.quick, args.loader_seconds, workers),
           "sdpa": lambda: section_sdpa(dev, args.quick)}
    for name, fn in run.items():
        t0 = time.perf_counter()
        rep[name] = _guard(fn) if name in wanted else {"skipped": "not in --sections"}
        rep[name]["section_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        rep["seconds"] = time.perf_counter() - start
        _write(args.out, "gpu_acceptance.json", json.dumps(rep, indent=1))  # partial results survive a kill
    if "train" in wanted and "error" not in rep["train"]:  # last: the compile time is the least predictable
        key, res = train_compile(dev, args.quick, peak, sheet)
        rep["train"][key] = res
        print(f"train ({key}): {res.get('compile_and_measure_s', 0)} s", file=sys.stderr, flush=True)
    rep["seconds"] = time.perf_counter() - start
    _write(args.out, "gpu_acceptance.json", json.dumps(rep, indent=1))
    _write(args.out, "gpu_acceptance.md", _markdown(rep))
    print(f"wrote {args.out / 'gpu_acceptance.json'} and .md in {rep['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
