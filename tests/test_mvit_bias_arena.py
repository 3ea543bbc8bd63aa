"""The shared rel-pos bias buffer of CPU inference (models/mvit.py ``_BiasArena``): the same outputs
as a fresh buffer per block, released after the pass, never shared between threads, unused in training."""

from __future__ import annotations

import threading

import torch

import bmvit.models.mvit as mvit
from bmvit.models.mvit import build_mvit


def _model():
    torch.manual_seed(0)
    # class token on, rel-pos on, two stages with different bias shapes
    return build_mvit("mvit_tiny", (4, 64, 64), cls_token=True, rel_pos=True).eval()


def test_inference_with_the_shared_buffer_equals_fresh_buffers(monkeypatch):
    model, x = _model(), torch.randn(2, 3, 4, 64, 64)
    sizes = []
    real_take = mvit._BiasArena.take

    def spy(self, q, shape):
        out = real_take(self, q, shape)
        sizes.append((tuple(shape), out.data_ptr() == (self.buf.data_ptr() if self.buf is not None else None)))
        return out

    monkeypatch.setattr(mvit._BiasArena, "take", spy)
    with torch.inference_mode():
        shared = model.forward_features(x)
    assert len(sizes) == len(model.blocks) and all(in_arena for _, in_arena in sizes)
    assert len({shape for shape, _ in sizes}) > 1  # blocks of different bias shapes shared it
    assert mvit._ARENA.buf is None and mvit._ARENA.depth == 0  # released after the pass
    sizes.clear()
    with torch.enable_grad():  # autograd on: one fresh buffer per block (kept for the backward pass)
        model.forward_features(x)
    assert sizes and not any(in_arena for _, in_arena in sizes)
    monkeypatch.setattr(mvit._BiasArena, "take", lambda self, q, shape: q.new_empty(shape))  # the code before
    with torch.inference_mode():
        fresh = model.forward_features(x)
    assert torch.equal(shared, fresh)


def test_concurrent_threads_get_their_own_buffer():
    model = _model()
    xs = [torch.randn(1, 3, 4, 64, 64) for _ in range(4)]
    with torch.inference_mode():
        want = [model.forward_features(x) for x in xs]
    got: dict[int, torch.Tensor] = {}

    def work(i):
        with torch.inference_mode():
            for _ in range(3):
                got[i] = model.forward_features(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(got[i], want[i]) for i in range(len(xs)))
