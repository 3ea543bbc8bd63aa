"""MViTv2's attention with decomposed relative positions (MViTv2 Eq. 4), without a dense bias.

The reference adds to the attention logits ``q·kᵀ/√d`` a bias ``B[i, j] = q_i·Rt[t(i), t(j)] +
q_i·Rh[h(i), h(j)] + q_i·Rw[w(i), w(j)]`` (class-token row and column zero). Each term depends on
the key only through one of its three grid indices, so with

* ``terms (B, heads, [1+]Nq, kt+kh+kw)``: each query contracted with the three per-axis tables
  (:func:`rel_pos_terms`, small), and
* ``keys ([1+]Nk, kt+kh+kw)``: each key's ``t``, ``h`` and ``w`` index one-hot (:func:`rel_pos_keys`),

the bias is ``terms @ keysᵀ``. :func:`rel_pos_attention` never builds it: it appends ``√d·terms``
to the queries and the one-hot columns to the keys, so that one scaled-dot-product attention with
the usual ``1/√d`` scale computes ``q·kᵀ/√d + B`` inside its tiles (``v`` is zero-padded to the
same head size, which the fused CPU and CUDA kernels need; the extra output channels are dropped).
Mathematically the reference's attention; numerically closer to float64 than the dense bias in
bf16 (the three terms are summed in the kernel's float32 accumulator instead of rounded to bf16
twice). Measured on the paper-size detector: ``docs/inference.md`` ("Round 4").

:func:`rel_pos_bias` builds the dense bias; inside :func:`dense_bias` the attention uses it (the
reference's formulation: cost counting, tests and benchmarks compare against it).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bmvit.models.position import interpolate_rel_pos

Shape3 = tuple[int, int, int]
_dense_depth = 0  # > 0 inside dense_bias() (a plain global: torch.compile traces it, not a ContextVar)

__all__ = ["dense_bias", "rel_pos_attention", "rel_pos_bias", "rel_pos_index", "rel_pos_keys", "rel_pos_terms"]


def rel_pos_index(q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
    """Index ``(q_len, k_len)`` into a ``2·max(q, k) − 1`` table for query/key grids of different lengths."""
    q_ratio, k_ratio = max(k_len / q_len, 1.0), max(q_len / k_len, 1.0)
    dist = torch.arange(q_len, device=device)[:, None] * q_ratio - torch.arange(k_len, device=device)[None, :] * k_ratio
    return (dist + (k_len - 1) * k_ratio).long()


def rel_pos_terms(q: Tensor, q_thw: Shape3, k_thw: Shape3, rel_t: Tensor, rel_h: Tensor, rel_w: Tensor,
                  has_cls: bool, width: int | None = None) -> Tensor:
    """``(B, heads, [1+]Nq, width)``: the queries contracted with the three per-axis tables.

    Columns ``[0, kt)`` hold ``q·Rt``, ``[kt, kt+kh)`` ``q·Rh``, ``[kt+kh, kt+kh+kw)`` ``q·Rw``; the
    rest (up to ``width``, default ``kt+kh+kw``) and the class-token row are zero.
    """
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    r_q = q[:, :, 1 if has_cls else 0:].unflatten(2, (qt, qh, qw))  # (B, H, qt, qh, qw, d); no batch size baked into an export
    parts = []
    for eq, table, a, b in (("bnthwc,tkc->bnthwk", rel_t, qt, kt), ("bnthwc,hkc->bnthwk", rel_h, qh, kh),
                            ("bnthwc,wkc->bnthwk", rel_w, qw, kw)):
        R = interpolate_rel_pos(table, 2 * max(a, b) - 1)[rel_pos_index(a, b, q.device)]  # (a, b, d)
        parts.append(torch.einsum(eq, r_q, R.to(q.dtype)).flatten(2, 4))  # (B, H, Nq, b)
    pad_cols = (width or kt + kh + kw) - (kt + kh + kw)
    # no in-place writes: the ONNX exporter and torch.compile take this as it is
    return F.pad(torch.cat(parts, -1), (0, pad_cols, 1 if has_cls else 0, 0))  # (B, H, [1+]Nq, width)


def rel_pos_keys(k_thw: Shape3, has_cls: bool, width: int | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> Tensor:
    """``([1+]Nk, width)``: each key's ``t``, ``h`` and ``w`` index one-hot in the column blocks of
    :func:`rel_pos_terms`; the class-token row and the padding columns zero."""
    kt, kh, kw = k_thw
    j = torch.arange(kt * kh * kw, device=device)  # keys in (t, h, w) row-major order
    hot = [(torch.arange(n, device=device) == idx[:, None]) for n, idx in ((kt, j // (kh * kw)), (kh, (j // kw) % kh), (kw, j % kw))]
    out = torch.cat(hot, 1).to(dtype)  # (Nk, kt+kh+kw)
    return F.pad(out, (0, (width or kt + kh + kw) - (kt + kh + kw), 1 if has_cls else 0, 0))


def rel_pos_bias(q: Tensor, q_thw: Shape3, k_thw: Shape3, rel_t: Tensor, rel_h: Tensor, rel_w: Tensor, has_cls: bool) -> Tensor:
    """The dense bias ``(B, heads, [1+]Nq, [1+]Nk)`` of MViTv2 Eq. 4 (zero class-token row and column),
    summed by broadcasting the three terms over the key grid, as the reference does."""
    kt, kh, kw = k_thw
    terms = rel_pos_terms(q, q_thw, k_thw, rel_t, rel_h, rel_w, has_cls)  # (B, H, [1+]Nq, kt+kh+kw)
    bt, bh, bw = terms.split((kt, kh, kw), -1)
    bias = bt[..., :, None, None] + bh[..., None, :, None] + bw[..., None, None, :]  # (B, H, [1+]Nq, kt, kh, kw)
    return F.pad(bias.flatten(3), (1 if has_cls else 0, 0))  # zero class-token column (the row is zero in terms)


@contextlib.contextmanager
def dense_bias():
    """Within this context :func:`rel_pos_attention` builds the dense bias of :func:`rel_pos_bias`
    and passes it to attention as an additive mask — the reference's formulation (slower, and a
    ``(heads, Nq, Nk)`` tensor per block). :mod:`bmvit.models.flops` counts the cost under it, so
    the extra channels of the folded form are not counted as the model's; tests compare the two.
    Process-wide (not per thread)."""
    global _dense_depth
    _dense_depth += 1
    try:
        yield
    finally:
        _dense_depth -= 1


def rel_pos_attention(q: Tensor, k: Tensor, v: Tensor, q_thw: Shape3, k_thw: Shape3,
                      rel_t: Tensor, rel_h: Tensor, rel_w: Tensor, has_cls: bool) -> Tensor:
    """``softmax(q·kᵀ/√d + rel_pos_bias) · v`` for ``q (B, heads, [1+]Nq, d)``, ``k, v (B, heads, [1+]Nk, d)``.

    Returns ``(B, heads, [1+]Nq, d)``. The augmented head size is rounded up to a multiple of 8
    (the fused CUDA kernels need it; the padding columns are zero on both sides). Inside
    :func:`dense_bias` the reference's formulation runs instead.
    """
    if _dense_depth:
        bias = rel_pos_bias(q, q_thw, k_thw, rel_t, rel_h, rel_w, has_cls)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    # Plain ints, constants in an ONNX trace (there sizes are traced values, and ONNX's integer
    # division truncates where Python's floors).
    d, key_cols = int(q.shape[-1]), sum(int(n) for n in k_thw)
    extra = key_cols + (-(d + key_cols)) % 8  # kt+kh+kw, padded so that d + extra is a multiple of 8
    terms = rel_pos_terms(q, q_thw, k_thw, rel_t, rel_h, rel_w, has_cls, extra)  # (B, H, [1+]Nq, extra)
    keys = rel_pos_keys(k_thw, has_cls, extra, q.dtype, q.device)  # ([1+]Nk, extra)
    qa = torch.cat((q, terms.to(q.dtype) * math.sqrt(d)), -1)  # (B, H, [1+]Nq, d+extra)
    ka = F.pad(k, (0, extra)) + F.pad(keys, (d, 0))  # (B, H, [1+]Nk, d+extra); no batch size in an export
    out = F.scaled_dot_product_attention(qa, ka, F.pad(v, (0, extra)), scale=1 / math.sqrt(d))
    return out[..., :d]  # (B, H, [1+]Nq, d)
