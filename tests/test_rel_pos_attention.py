"""MViTv2 attention with decomposed relative positions folded into extra query/key channels
(models/rel_pos_attention.py) equals attention with the dense additive bias of the reference
(values and gradients, with and without a class token, query and key grids of different sizes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bmvit.models.position import interpolate_rel_pos
from bmvit.models.rel_pos_attention import rel_pos_attention, rel_pos_bias, rel_pos_index, rel_pos_keys, rel_pos_terms


def dense_bias(q, q_thw, k_thw, rt, rh, rw, has_cls):
    """The reference's bias, written out: (B, H, [1+]Nq, [1+]Nk) = q·Rt + q·Rh + q·Rw broadcast over the keys."""
    c = int(has_cls)
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    tables = [interpolate_rel_pos(r, 2 * max(a, b) - 1)[rel_pos_index(a, b)] for r, a, b in ((rt, qt, kt), (rh, qh, kh), (rw, qw, kw))]
    r_q = q[:, :, c:].reshape(*q.shape[:2], qt, qh, qw, -1)
    bt = torch.einsum("bnthwc,tkc->bnthwk", r_q, tables[0])[..., :, None, None]
    bh = torch.einsum("bnthwc,hkc->bnthwk", r_q, tables[1])[..., None, :, None]
    bw = torch.einsum("bnthwc,wkc->bnthwk", r_q, tables[2])[..., None, None, :]
    inner = (bt + bh + bw).reshape(*q.shape[:2], qt * qh * qw, kt * kh * kw)
    return F.pad(inner, (c, 0, c, 0))


CASES = [((2, 4, 4), (2, 2, 2), True), ((2, 4, 6), (1, 2, 3), False), ((1, 3, 3), (2, 6, 6), True), ((2, 2, 2), (2, 2, 2), False)]


@pytest.mark.parametrize("q_thw,k_thw,has_cls", CASES)
def test_folded_attention_equals_the_dense_bias(q_thw, k_thw, has_cls):
    torch.manual_seed(0)
    B, H, d, c = 2, 3, 16, int(has_cls)
    q = torch.randn(B, H, c + math.prod(q_thw), d, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(B, H, c + math.prod(k_thw), d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    tables = [(torch.randn(2 * max(a, b) - 1, d, dtype=torch.float64) * 0.5).requires_grad_() for a, b in zip(q_thw, k_thw)]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_bias(q, q_thw, k_thw, *tables, has_cls))
    got = rel_pos_attention(q, k, v, q_thw, k_thw, *tables, has_cls)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-12)
    g = torch.randn_like(want)
    grads_want = torch.autograd.grad(want, [q, k, v, *tables], g)
    grads_got = torch.autograd.grad(got, [q, k, v, *tables], g)
    for a, b in zip(grads_got, grads_want):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(rel_pos_bias(q, q_thw, k_thw, *tables, has_cls), dense_bias(q, q_thw, k_thw, *tables, has_cls), atol=1e-12)


def test_terms_and_keys_layout():
    q_thw, k_thw = (2, 3, 3), (2, 3, 4)
    keys = rel_pos_keys(k_thw, True, width=16)
    assert keys.shape == (1 + 24, 16) and keys[0].abs().sum() == 0 and keys[:, 9:].abs().sum() == 0
    assert torch.equal(keys[1:].sum(1), torch.full((24,), 3.0))
    j = 1 + (1 * 3 + 2) * 4 + 3  # key (t=1, h=2, w=3)
    assert keys[j].nonzero().flatten().tolist() == [1, 2 + 2, 2 + 3 + 3]
    q = torch.randn(1, 2, 1 + 18, 8)
    terms = rel_pos_terms(q, q_thw, k_thw, *(torch.randn(2 * max(a, b) - 1, 8) for a, b in zip(q_thw, k_thw)), True, 16)
    assert terms.shape == (1, 2, 19, 16) and terms[:, :, 0].abs().sum() == 0 and terms[..., 9:].abs().sum() == 0


def test_bf16_is_closer_to_float64_than_a_bf16_dense_bias():
    torch.manual_seed(1)
    q_thw, k_thw, d = (2, 8, 8), (2, 4, 4), 32
    q, k, v = (torch.randn(1, 2, 1 + math.prod(s), d, dtype=torch.float64) for s in (q_thw, k_thw, k_thw))
    tables = [torch.randn(2 * max(a, b) - 1, d, dtype=torch.float64) for a, b in zip(q_thw, k_thw)]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_bias(q, q_thw, k_thw, *tables, True))
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    folded = rel_pos_attention(qb, kb, vb, q_thw, k_thw, *tables, True)
    dense = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=dense_bias(qb, q_thw, k_thw, *(t.bfloat16() for t in tables), True))
    assert folded.dtype == torch.bfloat16
    err_folded, err_dense = ((x.double() - ref).abs().max().item() for x in (folded, dense))
    assert err_folded < 0.1 and err_folded <= err_dense
