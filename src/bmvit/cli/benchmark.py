"""``bmvit benchmark``: inference latency and throughput of a config's backbone or whole detector.

The clip is ``data.num_frames × data.size²`` and the model is built as configured (e.g.
``configs/paper/ava/mvitv2s_16x256_out8x16.yaml``: 16×256², last pool removed) with random
weights — latency does not depend on them. A few warm-up runs, then ``--runs`` timed runs of
the forward pass under ``torch.inference_mode``; the median is the figure to quote.
``benchmarks/backbone.py`` compares against the reference implementation.

Options: ``--model backbone|detector`` (default backbone: ``forward_features``; detector: backbone
+ token selection + heads), ``--batch B``, ``--dtype fp32|bf16`` (bf16: the backbone converted to
bfloat16, as ``bmvit detect --dtype bf16`` runs it, :mod:`bmvit.inference.precision`; with
``--autocast``: ``torch.autocast`` instead), ``--quantize int8`` (dynamic int8 linear layers),
``--compile`` (the backbone through ``torch.compile`` with frozen weights, as ``bmvit detect
--compile`` runs it, :func:`~bmvit.inference.precision.compile_backbone`; the compilation is
reported as ``compile_s`` and not timed), ``--onnx`` (export to a temporary ONNX file and time onnxruntime
instead of PyTorch; fp32, or with ``--quantize int8`` its MatMuls in dynamic int8 by
:func:`~bmvit.inference.precision.quantize_onnx`). Reported: median/min latency per batch, clips/s (``batch / median``),
GMACs per clip and GFLOPs per clip (``2 × MACs``; the papers' "FLOPs" are MACs), achieved
TFLOP/s (``2 × MACs × batch / median``), peak memory (CUDA: ``max_memory_allocated``; CPU: the
process's peak resident set size, which includes Python and everything loaded) and the machine's
1-minute load average (other processes skew CPU timings).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from bmvit.cli.argtypes import count
from bmvit.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="inference latency / throughput of a backbone or detector")
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--model", choices=("backbone", "detector"), default="backbone",
                   help="time the backbone (default) or the whole detector")
    p.add_argument("--batch", type=count(1), default=1, help="clips per forward pass (default: 1)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="fp32 (default) | bf16 (the backbone in bfloat16, as `bmvit detect --dtype bf16`)")
    p.add_argument("--autocast", action="store_true", help="bf16 through torch.autocast instead of a bf16 backbone")
    p.add_argument("--quantize", choices=("int8",), help="int8: dynamic int8 linear layers (CPU), as `bmvit detect --quantize int8`")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone first (frozen weights, one fixed batch size; not offered by `bmvit detect`)")
    p.add_argument("--onnx", action="store_true", help="time onnxruntime on the exported model instead of PyTorch")
    p.add_argument("--num-classes", type=count(1), default=80, help="detector: action classes (default: 80, AVA)")
    p.add_argument("--warmup", type=count(0), default=2, help="untimed runs first (default: 2)")
    p.add_argument("--runs", type=count(1), default=5, help="timed runs (default: 5)")
    p.add_argument("--threads", type=count(0), default=0, help="torch / onnxruntime CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.size=224")
    p.set_defaults(func=run)


def measure_latency(fn: Callable[[], object], warmup: int, runs: int, device: torch.device) -> list[float]:
    """Seconds per call of ``fn`` for ``runs`` timed calls after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 2**10


class _Features(torch.nn.Module):
    """A backbone whose ``forward`` is ``forward_features`` (for compile / export)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(clip)


def _build(cfg, what: str, num_classes: int) -> torch.nn.Module:
    from bmvit.models.build import BACKBONES, build_detector

    size = (cfg.data.num_frames, cfg.data.size, cfg.data.size)
    if what == "detector":
        return build_detector(cfg.model, cfg.data, num_classes, load_pretrained=False)
    return _Features(BACKBONES[cfg.model.backbone](cfg.model, size))


def _macs_per_clip(cfg, what: str, num_classes: int) -> int:
    """MACs of one clip (meta device: nothing is computed)."""
    from bmvit.models.flops import count_macs

    with torch.device("meta"):
        model = _build(cfg, what, num_classes).eval()
        clip = torch.empty(1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)
    return count_macs(model, clip)


def run(args) -> int:
    from bmvit.config import load_config

    if args.onnx and (args.dtype != "fp32" or args.compile):
        raise ConfigError("--onnx times the fp32 (or --quantize int8) ONNX export with onnxruntime: drop --dtype bf16 / --compile")
    cfg = load_config(args.config, args.overrides)
    from bmvit.inference.arguments import resolve_device

    device = resolve_device(args.device)  # one error line for a misspelt / absent device
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (cfg.data.num_frames, cfg.data.size, cfg.data.size)
    torch.manual_seed(0)
    model = _build(cfg, args.model, args.num_classes).eval().to(device)
    if args.autocast and args.dtype == "fp32":
        raise ConfigError("--autocast needs --dtype bf16")
    if (args.dtype != "fp32" and not args.autocast) or (args.quantize and not args.onnx):
        from bmvit.inference.precision import prepare_model  # as `bmvit detect` runs it (detector or _Features)

        model = prepare_model(model, "fp32" if args.autocast else args.dtype, args.quantize, device)
    clip = torch.randn(args.batch, 3, *size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_s = export_s = None
    runtime = "pytorch"
    if args.onnx:
        from bmvit.inference.export import OnnxModel, export_module, require_onnx

        require_onnx()
        runtime = "onnxruntime"
        tmp = tempfile.TemporaryDirectory(prefix="bmvit-bench-")
        path = Path(tmp.name) / "model.onnx"
        t0 = time.perf_counter()
        export_module(model, path, tuple(clip.shape), detector=args.model == "detector")
        if args.quantize:
            from bmvit.inference.precision import quantize_onnx

            path = quantize_onnx(path, path.with_name("model_int8.onnx"))
        export_s = time.perf_counter() - t0
        session = OnnxModel(path, threads=torch.get_num_threads(), device=device.type)
        x = clip.cpu().numpy()
        fn = lambda: session.session.run(None, {"clip": x})  # noqa: E731
    else:
        autocast = args.autocast
        if args.compile:
            from bmvit.inference.precision import compile_backbone

            with torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=autocast):
                compile_s = compile_backbone(model, args.batch, device).warm_up(tuple(clip.shape[1:]), device)

        def fn():
            with torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=autocast):
                return model(clip)
    times = measure_latency(fn, args.warmup, args.runs, device)
    median = statistics.median(times)
    macs = _macs_per_clip(cfg, args.model, args.num_classes)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
    result = {
        "config": args.config, "backbone": cfg.model.backbone, "remove_last_pool": cfg.model.remove_last_pool,
        "model": args.model, "runtime": runtime, "compiled": args.compile,
        "input": list(size), "device": str(device), "threads": torch.get_num_threads(),
        "dtype": {"fp32": "float32", "bf16": "bfloat16"}[args.dtype], "autocast": args.autocast,
        "quantize": args.quantize,
        "batch": args.batch, "warmup": args.warmup, "runs": args.runs, "median_s": median,
        "min_s": min(times), "times_s": times, "clips_per_s": args.batch / median,
        "gmacs_per_clip": macs / 1e9, "gflops_per_clip": 2 * macs / 1e9,
        "tflops_achieved": 2 * macs * args.batch / median / 1e12,
        "peak_memory_mb": peak_mb, "peak_memory_kind": "cuda_allocated" if device.type == "cuda" else "process_rss",
        "compile_s": compile_s, "export_s": export_s, "load_avg_1min": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        t, h, w = size
        what = cfg.model.backbone if args.model == "backbone" else f"detector ({cfg.model.backbone})"
        extra = (" + torch.compile" if args.compile else "") + (" (autocast)" if args.autocast else "")
        extra += f", {args.quantize} linear layers" if args.quantize else ""
        print(f"{what} (last pool {'removed' if cfg.model.remove_last_pool else 'kept'}) at {t}×{h}×{w}, "
              f"batch {args.batch}, {args.dtype}, {runtime}{extra}, {device} ({torch.get_num_threads()} threads): "
              f"median {median * 1e3:.0f} ms over {args.runs} runs (min {result['min_s'] * 1e3:.0f} ms, {args.warmup} warm-up)")
        print(f"  {result['clips_per_s']:.2f} clips/s, {result['gflops_per_clip']:.1f} GFLOPs/clip "
              f"({result['gmacs_per_clip']:.1f} GMACs), {result['tflops_achieved'] * 1e3:.1f} GFLOP/s achieved, "
              f"peak memory {peak_mb:.0f} MiB ({result['peak_memory_kind']}), load average {result['load_avg_1min']:.1f}"
              + (f", compile {compile_s:.1f} s" if compile_s is not None else "")
              + (f", export {export_s:.1f} s" if export_s is not None else ""))
    return 0
