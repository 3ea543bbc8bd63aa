"""Depthwise 3-D convolution with a fast CPU backward for the unstrided case (MViT's Q/K/V pooling).

``depthwise_conv3d(x, weight, stride, padding)`` computes exactly ``F.conv3d(x, weight, None,
stride, padding, groups=C)`` — the forward *is* that call. Only one backward differs: PyTorch
2.13's CPU ``convolution_backward`` for a grouped 3-D kernel at stride 1 takes 15–40× the
forward's time (the depthwise pooling convolutions' backward was ~30% of a training step of the
demo's ``mvit_tiny_fast``), so for stride 1 on CPU both gradients come from fast *forward*
convolutions instead:

* input gradient: the transposed convolution at stride 1 is the forward convolution of the output
  gradient, padded by ``K - 1 - p``, with the spatially flipped kernel;
* weight gradient: one grouped forward convolution of the padded input with the output gradient as
  the kernel (batch folded into the groups, summed afterwards): ``(B·C)`` correlations whose
  outputs are the ``kt × kh × kw`` taps.

Strided convolutions keep PyTorch's backward (the ways of writing it tried here — zero-spreading
the gradient, one multiply-add per tap — were not faster). Measured on the shapes of
``mvit_tiny_fast`` at batch 8, one thread: forward + backward 3.4× faster at ``(64, 2, 12, 12)``
and 4.8× at ``(32, 4, 24, 24)``. The gradients equal autograd's up to float rounding
(``tests/test_depthwise.py``, float64). Everywhere else the plain ``F.conv3d`` runs, so nothing
changes there: CUDA, no gradient, tracing for export, ``torch.compile``, CPU autocast (its casts
belong to autograd's graph) and mixed input/weight dtypes. No double backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["depthwise_conv3d"]

Shape3 = tuple[int, int, int]


def depthwise_conv3d(x: Tensor, weight: Tensor, stride: Shape3, padding: Shape3) -> Tensor:
    """``x (B, C, T, H, W)``, ``weight (C, 1, kt, kh, kw)`` -> ``F.conv3d(x, weight, None, stride,
    padding, groups=C)``, with the fast backward above where it applies."""
    fast = (x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
            and x.dtype == weight.dtype and not torch.is_autocast_enabled("cpu")
            and all(s == 1 for s in stride) and all(0 <= p < k for p, k in zip(padding, weight.shape[2:]))
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())
    if fast:
        return _UnstridedDepthwiseConv3d.apply(x, weight, tuple(padding))
    if x.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing() \
            and not torch.compiler.is_compiling():
        weight = _DenseGrad.apply(weight)
    return F.conv3d(x, weight, None, stride, padding, groups=x.shape[1])


class _DenseGrad(torch.autograd.Function):
    """Identity whose gradient has the row-major strides of the weight. PyTorch's CPU backward of
    a strided depthwise convolution returns a ``(C, 1, k, k, k)`` weight gradient with stride 1 on
    the size-1 axis, which DistributedDataParallel copies into its bucket with a warning."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.clone(memory_format=torch.contiguous_format)  # C * k^3 values: a negligible copy


def _pad3(x: Tensor, pad: Shape3) -> Tensor:
    return F.pad(x, (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]))


class _UnstridedDepthwiseConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: Shape3) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv3d(x, weight, None, 1, padding, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):  # g: (B, C, t, h, w), t = T + 2p - kt + 1 (same for h, w)
        x, weight = ctx.saved_tensors
        B, C = g.shape[:2]
        K = tuple(weight.shape[2:])
        gx = gw = None
        if ctx.needs_input_grad[0]:
            flipped_pad = tuple(k - 1 - p for k, p in zip(K, ctx.padding))  # >= 0 (checked by the caller)
            gx = F.conv3d(_pad3(g, flipped_pad), weight.flip(2, 3, 4), None, 1, 0, groups=C)  # (B, C, T, H, W)
        if ctx.needs_input_grad[1]:
            xin = x.contiguous().reshape(1, B * C, *x.shape[2:])  # batch folded into the groups
            kern = g.contiguous().reshape(B * C, 1, *g.shape[2:])
            taps = F.conv3d(xin, kern, None, 1, ctx.padding, groups=B * C)  # (1, B*C, kt, kh, kw)
            gw = taps.reshape(B, C, *K).sum(0).unsqueeze(1)  # (C, 1, kt, kh, kw)
        return gx, gw, None
