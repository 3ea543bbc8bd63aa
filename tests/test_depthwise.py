"""The depthwise convolution of MViT's pooling: its hand-written CPU backward equals autograd's."""

import pytest
import torch
import torch.nn.functional as F

from bmvit.models.depthwise import _UnstridedDepthwiseConv3d, depthwise_conv3d


def _grads(fn, x, w, g):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fn(x, w)
    y.backward(g)
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("shape, kernel, channels_last", [
    ((2, 6, 4, 7, 5), (3, 3, 3), True),   # the pooling layout: a channels-last view of the tokens
    ((3, 4, 2, 6, 6), (3, 3, 3), False),
    ((2, 5, 3, 4, 9), (1, 3, 3), True),   # kernel 1 in time, padding 0 there
    ((1, 3, 5, 5, 5), (3, 1, 3), False),
])
def test_unstrided_backward_equals_autograd(shape, kernel, channels_last):
    torch.manual_seed(0)
    C = shape[1]
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(C, 1, *kernel, dtype=torch.float64)
    pad = tuple(k // 2 for k in kernel)
    g = torch.randn_like(F.conv3d(x, w, None, 1, pad, groups=C))
    ref = _grads(lambda a, b: F.conv3d(a, b, None, 1, pad, groups=C), x, w, g)
    ours = _grads(lambda a, b: depthwise_conv3d(a, b, (1, 1, 1), pad), x, w, g)
    for r, o, name in zip(ref, ours, ("output", "input grad", "weight grad")):
        assert o.shape == r.shape, name
        assert torch.allclose(o, r, rtol=1e-10, atol=1e-10), name


def test_only_weight_or_only_input_needs_grad():
    torch.manual_seed(1)
    x, w = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64), torch.randn(4, 1, 3, 3, 3, dtype=torch.float64)
    wr = w.clone().requires_grad_()
    depthwise_conv3d(x, wr, (1, 1, 1), (1, 1, 1)).sum().backward()
    wref = w.clone().requires_grad_()
    F.conv3d(x, wref, None, 1, 1, groups=4).sum().backward()
    assert torch.allclose(wr.grad, wref.grad, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a: depthwise_conv3d(a, w, (1, 1, 1), (1, 1, 1)),
                                    (x.clone().requires_grad_(),))


def test_strided_no_grad_and_autocast_paths_are_plain_conv3d(monkeypatch):
    calls = []
    monkeypatch.setattr(_UnstridedDepthwiseConv3d, "apply", lambda *a: calls.append(a) or F.conv3d(
        a[0], a[1], None, 1, a[2], groups=a[0].shape[1]))
    x, w = torch.randn(1, 2, 4, 6, 6, requires_grad=True), torch.randn(2, 1, 3, 3, 3, requires_grad=True)
    depthwise_conv3d(x, w, (1, 2, 2), (1, 1, 1))  # strided: autograd's backward
    with torch.no_grad():
        depthwise_conv3d(x, w, (1, 1, 1), (1, 1, 1))
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's casts stay in autograd's hands
        y = depthwise_conv3d(x, w, (1, 1, 1), (1, 1, 1))
    y.float().sum().backward()
    assert calls == [] and x.grad.dtype == w.grad.dtype == torch.float32
    depthwise_conv3d(x, w, (1, 1, 1), (1, 1, 1))
    assert len(calls) == 1


def test_mvit_training_gradients_unchanged(monkeypatch):
    """A whole backbone's parameter gradients with the fast backward equal those of autograd's."""
    from bmvit.models import mvit as mvit_module
    from bmvit.models.mvit import build_mvit

    torch.manual_seed(0)
    m = build_mvit("mvit_tiny_fast", (8, 64, 64), remove_last_pool=True).double()
    clip = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)

    def grads():
        m.zero_grad()
        m.forward_features(clip).pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    ours = grads()
    monkeypatch.setattr(mvit_module, "depthwise_conv3d",
                        lambda x, w, s, p: F.conv3d(x, w, None, s, p, groups=x.shape[1]))
    ref = grads()
    for n in ref:
        assert torch.allclose(ours[n], ref[n], rtol=1e-9, atol=1e-12), n
