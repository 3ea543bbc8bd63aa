"""ONNX export of the whole detector: backbone + token selection + heads + box decoding.

The exported graph maps ``clip (B, 3, T, S, S)`` float32 — frames resized to ``S × S`` and
normalized with the checkpoint's ``data.mean``/``data.std`` (Kinetics 0.45/0.225 by default), as :class:`~bmvit.data.transforms.ClipTransform` does — to

* ``boxes (B, L, 4)``: normalized ``(x1, y1, x2, y2)`` of the key frame, clipped to [0, 1];
* ``actor_scores (B, L)``: ``p(actor)``;
* ``action_scores (B, L, K)``: ``p(action)`` (independent sigmoids; multiply by ``p(actor)`` for
  the ``actor*action`` score mode).

Thresholding (``p(actor) > θ``) and optional NMS stay with the caller: they have data-dependent
output sizes. These are exactly the tensors :func:`~bmvit.models.postprocess.postprocess` selects
from, so ``boxes[b, actor_scores[b] > θ]`` reproduces the PyTorch detections.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` (opset 17). The
torch.export-based exporter (the default since PyTorch 2.9) needs ``onnxscript`` and, with PyTorch
2.13, fails to decompose the attention reshape of MViT with a symbolic batch; the traced export
works for every backbone, with a dynamic batch dimension when asked. The backbone has two
export-only branches (``torch.jit.is_tracing()`` in ``models/mvit.py``) that compute the same
values without in-place writes into batch-sized buffers.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bmvit.atomic import atomic_output, make_folder
from bmvit.boxes import cxcywh_to_xyxy
from bmvit.errors import BmvitError, ConfigError

OUTPUT_NAMES = ("boxes", "actor_scores", "action_scores")
OPSET = 17


class ExportModel(nn.Module):
    """The detector with box decoding and sigmoids: ``clip -> (boxes xyxy, actor_scores, action_scores)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.detector(clip)
        boxes = cxcywh_to_xyxy(out["boxes"]).clamp(0, 1)  # (B, L, 4)
        return boxes, out["actor_logits"].sigmoid(), out["action_logits"].sigmoid()  # (B, L), (B, L, K)


def require_onnx() -> None:
    """Raise a one-line error when ``onnx`` / ``onnxruntime`` are not installed."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}: pip install 'bmvit[export]' "
                          f"(or pip install onnx onnxruntime)")


def export_onnx(detector: nn.Module, path: str | Path, input_shape: tuple[int, int, int, int, int],
                dynamic_batch: bool = False) -> Path:
    """Export ``detector`` (a :class:`~bmvit.models.detector.BMViT`) for clips of ``input_shape``
    ``(B, 3, T, S, S)``; with ``dynamic_batch`` the batch dimension is symbolic (``batch``).

    Weights are stored inside the file (models above 2 GB would need external data). The model is
    moved to the CPU and exported in eval mode in float32."""
    return export_module(detector, path, input_shape, dynamic_batch, detector=True)


def export_module(module: nn.Module, path: str | Path, input_shape: tuple[int, ...], dynamic_batch: bool = False,
                  detector: bool = True) -> Path:
    """Export ``module``: a detector (outputs :data:`OUTPUT_NAMES`, see :class:`ExportModel`) or, with
    ``detector=False``, any module mapping ``clip`` to one tensor (output ``features``, e.g. a
    backbone's ``forward_features``). Raises :class:`~bmvit.errors.BmvitError` naming ``path``."""
    require_onnx()
    path = Path(path)
    make_folder(path.parent)  # an unwritable --out fails now, not after the trace
    model = (ExportModel(module) if detector else module).eval().to("cpu").float()
    names = list(OUTPUT_NAMES) if detector else ["features"]
    clip = torch.randn(*input_shape)
    axes = {n: {0: "batch"} for n in ["clip", *names]} if dynamic_batch else None
    try:
        with atomic_output(path) as tmp, warnings.catch_warnings():  # OSError (no folder, a file in the way): OutputError
            warnings.simplefilter("ignore")  # TracerWarnings on shape-dependent Python branches; legacy-exporter notice
            with torch.no_grad():
                torch.onnx.export(model, (clip,), str(tmp), dynamo=False, input_names=["clip"], output_names=names,
                                  dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    except Exception as e:
        if isinstance(e, BmvitError):
            raise
        raise BmvitError(f"{path}: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return path


class OnnxModel:
    """An onnxruntime session over an exported file: ``run(clip (B, 3, T, S, S)) -> (boxes, actor, action)``."""

    def __init__(self, path: str | Path, threads: int = 0, device: str = "cpu") -> None:
        require_onnx()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:
            raise BmvitError(f"{path}: onnxruntime cannot load the model ({str(e).splitlines()[0]})") from None

    def run(self, clip: Tensor | np.ndarray) -> list[np.ndarray]:
        x = clip.detach().cpu().numpy() if isinstance(clip, Tensor) else np.asarray(clip)
        return self.session.run(list(OUTPUT_NAMES), {"clip": x.astype(np.float32, copy=False)})


def parity(detector: nn.Module, path: str | Path, clip: Tensor, threads: int = 0) -> dict[str, float]:
    """Max abs difference between PyTorch (fp32, CPU) and onnxruntime on ``clip``, per output and overall."""
    model = ExportModel(detector).eval().to("cpu").float()
    with torch.no_grad():
        ref = [t.numpy() for t in model(clip.float().cpu())]
    got = OnnxModel(path, threads).run(clip)
    diffs = {n: float(np.abs(r - g).max()) if r.size else 0.0 for n, r, g in zip(OUTPUT_NAMES, ref, got)}
    for n, r, g in zip(OUTPUT_NAMES, ref, got):
        if r.shape != g.shape:
            raise BmvitError(f"{path}: onnxruntime output '{n}' is {g.shape}, PyTorch's {r.shape}")
    diffs["max"] = max(diffs.values())
    return diffs


def export_and_check(detector: nn.Module, path: str | Path, input_shape: tuple[int, int, int, int, int],
                     dynamic_batch: bool = False, seed: int = 0, threads: int = 0) -> dict[str, float]:
    """Export, then compare with onnxruntime on a random clip (a batch of 2 when the batch is
    dynamic, to exercise it). Returns the differences and ``export_s`` (seconds)."""
    t0 = time.perf_counter()
    export_onnx(detector, path, input_shape, dynamic_batch)
    elapsed = time.perf_counter() - t0
    shape = ((2 if dynamic_batch else input_shape[0]),) + tuple(input_shape[1:])
    clip = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return {**parity(detector, path, clip, threads), "export_s": elapsed}
