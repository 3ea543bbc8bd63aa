"""Reduced-precision inference: the backbone in bfloat16, or its linear layers in dynamic int8.

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
  the attention reads its weight in three slices. Chosen over a quantized ONNX model because it
  needs no export and runs the same PyTorch graph (relative-position attention, pooling) as fp32.
  CPU only.
"""

from __future__ import annotations

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
