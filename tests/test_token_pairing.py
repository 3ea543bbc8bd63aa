"""Exact token <-> triplet pairing of every token selection (paper §3.2, §5.2).

A stub backbone emits features whose channels *name* their position: channel 0 = output slice s,
1 = row y, 2 = column x, 3 = a per-slice value 10**s (so temporal means are recognisable). Each
triplet l must then read its detection token and its action token from the expected slices at the
same grid cell, and that cell must be ``cells[l]`` (the one its box bias points at).
"""

import pytest
import torch
from torch import nn

from bmvit.models.detector import BMViT
from bmvit.models.heads import BMViTHeads
from bmvit.models.token_selection import grid_cells, select_tokens

B, C, T, H, W = 2, 6, 4, 3, 5  # t = 4 output slices: key slice t//2 = 2


def _named_features():
    s = torch.arange(T).view(T, 1, 1).expand(T, H, W).float()
    y = torch.arange(H).view(1, H, 1).expand(T, H, W).float()
    x = torch.arange(W).view(1, 1, W).expand(T, H, W).float()
    f = torch.zeros(B, C, T, H, W)
    f[:, 0], f[:, 1], f[:, 2], f[:, 3] = s, y, x, 10.0 ** s
    f[1, 4] = 1.0  # second clip differs: pairing must not mix clips
    return f


def _mean_code(slices):
    return sum(10.0 ** s for s in slices) / len(slices)


# strategy -> per block of h*w triplets: (detection slice, action slices averaged)
EXPECTED = {
    "tubelet": [(None, [0, 1, 2, 3])],  # detection = temporal mean too
    "c+t": [(2, [0, 1, 2, 3])],
    "2(c+t)": [(1, [0, 1]), (2, [2, 3])],
}


@pytest.mark.parametrize("strategy", ["tubelet", "c+t", "2(c+t)"])
def test_detection_and_action_tokens_come_from_the_documented_slices(strategy):
    f = _named_features()
    tok = select_tokens(f, strategy)
    hw = H * W
    cells = grid_cells(H, W)
    for block, (det_slice, act_slices) in enumerate(EXPECTED[strategy]):
        for k in range(hw):
            l = block * hw + k
            y, x = divmod(k, W)
            det, act = tok.det[:, l], tok.action[:, l]  # (B, C)
            if det_slice is None:
                assert det[0, 3] == pytest.approx(_mean_code(act_slices))
            else:
                assert det[0, 0] == det_slice and det[0, 3] == 10.0 ** det_slice
            assert act[0, 3] == pytest.approx(_mean_code(act_slices))
            for token in (det, act):  # same cell for box, actor and action
                assert (token[:, 1] == y).all() and (token[:, 2] == x).all()
            assert torch.allclose(tok.cells[l], cells[k])
            assert det[1, 4] == 1.0 and det[0, 4] == 0.0 and act[1, 4] == 1.0
    assert tok.det.shape[1] == len(EXPECTED[strategy]) * hw


def test_singleton_pairs_each_token_with_itself_in_t_h_w_order():
    f = _named_features()
    tok = select_tokens(f, "singleton")
    assert torch.equal(tok.det, tok.action)
    for l in range(T * H * W):
        s, rest = divmod(l, H * W)
        y, x = divmod(rest, W)
        assert tok.det[0, l, :3].tolist() == [s, y, x]
        assert torch.allclose(tok.cells[l], grid_cells(H, W)[rest])


def test_maxpool_detects_on_the_key_slice_and_max_pools_action_logits_over_time():
    f = _named_features()
    tok = select_tokens(f, "maxpool")
    assert tok.action.shape == (B, T, H * W, C)
    for l in range(H * W):
        y, x = divmod(l, W)
        assert tok.det[0, l, :3].tolist() == [T // 2, y, x]
        for s in range(T):
            assert tok.action[0, s, l, :3].tolist() == [s, y, x]
    heads = BMViTHeads(C, 3, hidden=8)
    out = heads(tok)
    per_slice = torch.stack([heads.action(heads.norm(tok.action[:, s])) for s in range(T)], 1)  # (B, T, L, K)
    assert torch.allclose(out["action_logits"], per_slice.amax(1))


class _StubBackbone(nn.Module):
    """Emits the named features plus ``delta`` (a perturbation of one backbone token)."""

    out_dim = C

    def __init__(self):
        super().__init__()
        self.delta = torch.zeros(1, C, T, H, W)

    def forward_features(self, clip):
        return _named_features()[: clip.shape[0]] + self.delta


def _affected(strategy, s, k):
    """Triplets whose (box + actor) and whose action read backbone token (slice s, cell k), per the
    table of :mod:`bmvit.models.token_selection` (key slice t//2 = 2 of T = 4)."""
    hw = H * W
    if strategy == "singleton":
        return {s * hw + k}, {s * hw + k}
    if strategy == "tubelet":
        return {k}, {k}
    if strategy == "c+t":
        return ({k} if s == 2 else set()), {k}
    if strategy == "maxpool":  # action: max over slices of per-slice logits
        return ({k} if s == 2 else set()), {k}
    if strategy == "central":
        return ({k}, {k}) if s == 2 else (set(), set())
    assert strategy == "2(c+t)"  # detection slices 1 | 2; action means over [0, 2) | [2, 4)
    block = 0 if s < 2 else 1
    return ({block * hw + k} if s in (1, 2) else set()), {block * hw + k}


@pytest.mark.parametrize("strategy", ["singleton", "tubelet", "c+t", "maxpool", "2(c+t)", "central"])
def test_detector_triplet_l_uses_token_l_for_all_three_heads(strategy):
    """Through the whole detector: perturbing one backbone token (slice s, cell k) moves the box and the
    actor logit of exactly the triplets whose detection token reads it, and the action logits of
    exactly those whose action token reads it; no other output moves."""
    torch.manual_seed(0)
    backbone = _StubBackbone()
    model = BMViT(backbone, BMViTHeads(C, 3, hidden=8), strategy).eval()
    nn.init.normal_(model.heads.box[-1].weight, std=0.5)  # the box head starts at zero: make it react
    clip = torch.zeros(1, 3, 8, 16, 16)
    with torch.no_grad():
        base = model(clip)
        maxpool_moved = set()
        for s in range(T):
            for k in (1, 8, 13):  # not fixed by a row/column mix-up of the 3 x 5 grid
                backbone.delta.zero_()
                backbone.delta[0, 5, s, k // W, k % W] = 1.0  # one channel (a constant shift would vanish in the LayerNorm)
                out = model(clip)
                backbone.delta.zero_()

                def moved(key):
                    d = (out[key][0] - base[key][0]).abs()  # (L,) or (L, 4) / (L, K)
                    return set((d if d.ndim == 1 else d.sum(-1)).nonzero().flatten().tolist())

                det, act = _affected(strategy, s, k)
                assert moved("boxes") == det, (strategy, s, k)
                assert moved("actor_logits") == det, (strategy, s, k)
                if strategy == "maxpool":  # a slice moves the max only where it is (or becomes) the argmax
                    assert moved("action_logits") <= act, (strategy, s, k)
                    maxpool_moved |= moved("action_logits")
                else:
                    assert moved("action_logits") == act, (strategy, s, k)
        if strategy == "maxpool":
            assert maxpool_moved == {1, 8, 13}
