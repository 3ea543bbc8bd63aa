"""Reduced-precision inference: the backbone in bfloat16 or its linear layers in dynamic int8, and
the backbone compiled.

:func:`prepare_model` turns a float32 detector into the model ``bmvit detect --dtype / --quantize``
and ``bmvit benchmark`` run. Inputs and outputs stay float32 in both modes, so the rest of the
pipeline (post-processing, evaluation) is unchanged.

* ``bf16``: the backbone's weights are *converted* to bfloat16 and the clip is cast once on the way
  in; its features are cast back to float32 for token selection and the heads (a few per cent of
  the FLOPs; boxes and scores keep float32 precision). Chosen over ``torch.autocast``, which
  keeps LayerNorm, additions and the attention bias in float32 and casts activations (and every
  weight, on every call) around each linear layer: in the CPU profile at paper size that casting
  made ``copy_`` the largest item (28% of the time; 18% here), and the float32 weights plus their
  bf16 copies cost ~140 MiB more memory. Speed against autocast was within the noise of the
  loaded machine it was measured on (docs/inference.md, *Reduced precision*).
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` on the ``nn.Linear`` layers of the MLPs,
  the attention output projections and the heads (int8 weights per output channel-tensor,
  activations quantized per call; fbgemm/x86 kernels). The fused ``qkv`` projection stays float32:
  the attention reads its weight in three slices. It needs no export and runs the same PyTorch
  graph as fp32. CPU only.

:func:`compile_backbone` (``bmvit benchmark --compile``) runs the backbone of any of these through
``torch.compile`` (inductor, weights frozen as constants) at one fixed batch size, fewer clips padded
with zeros so a short last batch never triggers a second compilation. Compilation takes minutes on
the first call (:meth:`CompiledBackbone.warm_up` does it up front and returns the seconds; inductor's
on-disk cache makes a later process faster). On 2 CPU cores it did not pay against the eager bf16
backbone (docs/inference.md), so ``bmvit detect`` has no such option.

:func:`quantize_onnx` gives ``bmvit benchmark --onnx --quantize int8`` an int8 ONNX model (dynamic
quantization of its MatMuls by onnxruntime). Measured at paper size on 2 CPU cores, onnxruntime
(fp32 or int8) was slower than the PyTorch bf16 and int8 modes, so ``bmvit detect`` has no ONNX
runtime option (docs/inference.md, *Reduced precision*).
"""

from __future__ import annotations

import shutil
import time

import torch
from torch import Tensor, nn

from bmvit.errors import ConfigError

DTYPES = ("fp32", "bf16")
QUANTIZE = (None, "int8")


class CastBackbone(nn.Module):
    """A backbone run in ``dtype``: ``forward_features(clip float32) -> features float32``."""

    def __init__(self, backbone: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = backbone.to(dtype)
        self.dtype = dtype
        self.out_dim = getattr(backbone, "out_dim", None)

    def grid(self, *args, **kwargs):
        return self.inner.grid(*args, **kwargs)

    def forward_features(self, clip: Tensor) -> Tensor:
        return self.inner.forward_features(clip.to(self.dtype)).float()  # (B, C, t, h, w)

    def forward(self, clip: Tensor) -> Tensor:
        return self.forward_features(clip)


def _quantizable_linears(model: nn.Module) -> set[str]:
    """Names of the ``nn.Linear`` modules that may be swapped for dynamic int8 ones (not ``qkv``)."""
    return {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and not name.endswith("qkv")}


def prepare_model(model: nn.Module, dtype: str = "fp32", quantize: str | None = None,
                  device: torch.device | str = "cpu") -> nn.Module:
    """The detector ``model`` (float32, eval mode) made ready for inference in ``dtype`` /
    ``quantize`` on ``device`` (module docstring). ``fp32`` without quantization returns it as is."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize: {quantize!r} is not one of int8")
    if quantize and dtype != "fp32":
        raise ConfigError("--quantize int8 runs the other layers in float32: drop --dtype bf16")
    if quantize and device.type != "cpu":
        raise ConfigError("--quantize int8 is for CPU inference (dynamic quantization kernels); on CUDA use --dtype bf16")
    model = model.eval()
    if dtype == "bf16":
        if not hasattr(model, "backbone"):
            raise ConfigError("--dtype bf16: the model has no backbone to convert")
        model.backbone = CastBackbone(model.backbone, torch.bfloat16)
    if quantize == "int8":
        model = quantize_linears(model)
    return model


def quantize_linears(model: nn.Module) -> nn.Module:
    """``model`` with its linear layers except ``qkv`` in dynamic int8 (a new module)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch >= 2.10 flags its quantized tensor API as deprecated (docs/inference.md)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*", category=DeprecationWarning)
        return quantize_dynamic(model, _quantizable_linears(model), dtype=torch.qint8)


class _Features(nn.Module):
    """``forward = backbone.forward_features`` (what is compiled)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, clip: Tensor) -> Tensor:
        return self.backbone.forward_features(clip)


class CompiledBackbone(nn.Module):
    """``backbone.forward_features`` compiled for ``batch`` clips: ``forward_features(clip (n, 3, T, H, W))
    -> (n, C, t, h, w)`` for any ``n`` (padded to ``batch`` with zero clips, or split into batches)."""

    def __init__(self, backbone: nn.Module, batch: int) -> None:
        super().__init__()
        self.inner = backbone
        self.batch = batch
        self.out_dim = getattr(backbone, "out_dim", None)
        # Not a registered submodule: the weights stay once in state_dict(), under ``inner``.
        self.__dict__["compiled"] = torch.compile(_Features(backbone), dynamic=False, options={"freezing": True})

    def grid(self, *args, **kwargs):
        return self.inner.grid(*args, **kwargs)

    def forward_features(self, clip: Tensor) -> Tensor:
        n = clip.shape[0]
        if n > self.batch:
            return torch.cat([self.forward_features(part) for part in clip.split(self.batch)])
        if n < self.batch:
            clip = torch.cat((clip, clip.new_zeros(self.batch - n, *clip.shape[1:])))  # (batch, 3, T, H, W)
        return self.compiled(clip)[:n]  # (n, C, t, h, w)

    def forward(self, clip: Tensor) -> Tensor:
        return self.forward_features(clip)

    @torch.inference_mode()
    def warm_up(self, clip_shape: tuple[int, int, int, int], device: torch.device | str = "cpu") -> float:
        """Compile now, on a zero clip of ``(3, T, H, W)``; returns the seconds it took."""
        t0 = time.perf_counter()
        self.forward_features(torch.zeros(self.batch, *clip_shape, device=device))
        return time.perf_counter() - t0


def compile_backbone(model: nn.Module, batch: int, device: torch.device | str = "cpu") -> CompiledBackbone:
    """Replace ``model.backbone`` (after :func:`prepare_model`) by a :class:`CompiledBackbone` for
    ``batch`` clips and return it (call its ``warm_up`` to compile before timing anything)."""
    device = torch.device(device)
    if not hasattr(model, "backbone"):
        raise ConfigError("--compile: the model has no backbone to compile")
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        raise ConfigError("--compile: torch.compile needs a C++ compiler on the CPU and none (g++/c++) is on PATH; "
                          "install one (e.g. apt-get install g++) or drop --compile")
    if any("quantized" in type(m).__module__ for m in model.backbone.modules()):
        raise ConfigError("--compile runs the fp32 or bf16 backbone; drop --quantize int8")
    model.backbone = CompiledBackbone(model.backbone, batch)
    return model.backbone


def quantize_onnx(src, dst):
    """``src`` (ONNX file) with its MatMul weights in int8 and activations quantized per call
    (``onnxruntime.quantization.quantize_dynamic``, signed int8 weights) written to ``dst``; returns ``dst``."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it warns once per integer tensor it leaves alone (shapes, indices)
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst
