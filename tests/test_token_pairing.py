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
            det, act = tok.det[:, l], tok.act[:, l]  # (B, C)
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
    assert torch.equal(tok.det, tok.act)
    for l in range(T * H * W):
        s, rest = divmod(l, H * W)
        y, x = divmod(rest, W)
        assert tok.det[0, l, :3].tolist() == [s, y, x]
        assert torch.allclose(tok.cells[l], grid_cells(H, W)[rest])


def test_maxpool_detects_on_the_key_slice_and_max_pools_action_logits_over_time():
    f = _named_features()
    tok = select_tokens(f, "maxpool")
    assert tok.act.shape == (B, T, H * W, C)
    for l in range(H * W):
        y, x = divmod(l, W)
        assert tok.det[0, l, :3].tolist() == [T // 2, y, x]
        for s in range(T):
            assert tok.act[0, s, l, :3].tolist() == [s, y, x]
    heads = BMViTHeads(C, 3, hidden=8)
    out = heads(tok)
    per_slice = torch.stack([heads.action(heads.norm(tok.act[:, s])) for s in range(T)], 1)  # (B, T, L, K)
    assert torch.allclose(out["action_logits"], per_slice.amax(1))


class _StubBackbone(nn.Module):
    out_dim = C

    def forward_features(self, clip):
        return _named_features()[: clip.shape[0]]


@pytest.mark.parametrize("strategy", ["singleton", "tubelet", "c+t", "maxpool", "2(c+t)"])
def test_detector_triplet_l_uses_token_l_for_all_three_heads(strategy):
    """Through the whole detector: perturbing the backbone feature that triplet l's detection token
    reads changes box and actor of l only; its action scores follow its action token."""
    torch.manual_seed(0)
    model = BMViT(_StubBackbone(), BMViTHeads(C, 3, hidden=8), strategy).eval()
    nn.init.normal_(model.heads.box[-1].weight, std=0.5)  # the box head starts at zero: make it react
    base = model(torch.zeros(1, 3, 8, 16, 16))
    L = base["boxes"].shape[1]
    tok = select_tokens(_named_features()[:1], strategy)
    for l in range(0, L, 7):
        det_code = tok.det[0, l, :3].tolist()  # (s or mean, y, x) this triplet detects from
        changed = {k: v.clone() for k, v in tok._asdict().items()}
        changed["det"][0, l, 5] += 1.0  # one channel (a constant shift would vanish in the LayerNorm)
        out = model.heads(type(tok)(**changed))
        moved = (out["boxes"][0] - base["boxes"][0]).abs().sum(-1) > 0  # (L,)
        assert moved.nonzero().flatten().tolist() == [l], (strategy, l, det_code)
        assert torch.equal(out["action_logits"], base["action_logits"])  # detection token only feeds box/actor
