import pytest
import torch

from bmvit.config import DataConfig, ModelConfig
from bmvit.models.build import build_detector
from bmvit.models.heads import grid_bias
from bmvit.models.mvit import MVIT_SPECS, MViT, block_table
from bmvit.models.token_selection import STRATEGIES, grid_cells, select_tokens


def test_mvitv2_s_table_matches_reference():
    rows = block_table(MVIT_SPECS["mvitv2_s"])
    assert len(rows) == 16
    assert [r.dim_out for r in rows] == [96] + [192] * 2 + [384] * 11 + [768] * 2
    assert [r.num_heads for r in rows] == [1] + [2] * 2 + [4] * 11 + [8] * 2
    assert [i for i, r in enumerate(rows) if r.stride_q != (1, 1, 1)] == [1, 3, 14]
    assert [r.stride_kv for r in rows][:4] == [(1, 8, 8), (1, 4, 4), (1, 4, 4), (1, 2, 2)]
    assert rows[14].stride_kv == (1, 1, 1) and rows[15].stride_kv == (1, 1, 1)
    no_pool = block_table(MVIT_SPECS["mvitv2_s"], remove_last_pool=True)
    assert no_pool[14].stride_q == (1, 1, 1) and no_pool[14].stride_kv == (1, 1, 1)
    assert no_pool[3].stride_q == (1, 2, 2)


def test_mvitv2_s_parameter_count():
    m = MViT(MVIT_SPECS["mvitv2_s"], (16, 224, 224))
    n = sum(p.numel() for p in m.parameters())
    assert 34.0e6 < n < 34.5e6  # reference: 34.5M including the 400-way classifier (0.3M)


@pytest.mark.parametrize("remove_last_pool, grid", [(False, (4, 4, 3)), (True, (4, 8, 6))])
def test_tiny_output_grid_non_square(remove_last_pool, grid):
    torch.manual_seed(0)
    spec = MVIT_SPECS["mvit_tiny"]
    m = MViT(spec, (8, 64, 48), remove_last_pool=remove_last_pool)
    y = m.forward_features(torch.randn(2, 3, 8, 64, 48))
    assert tuple(y.shape) == (2, m.out_dim, *grid)


def test_class_token_and_grad_checkpointing_run():
    from dataclasses import replace

    spec = replace(MVIT_SPECS["mvit_tiny"], cls_token=True)
    m = MViT(spec, (8, 32, 32), grad_checkpointing=True)
    y = m.forward_features(torch.randn(1, 3, 8, 32, 32))
    y.mean().backward()
    assert y.shape[2:] == (4, 2, 2)


def test_abs_pos_is_separable_and_tells_positions_apart():
    """model.abs_pos: PySlowFast's separable table (spatial repeated over time + temporal repeated
    over space) added after the patch embedding; zero tables give exactly the model without them."""
    from dataclasses import replace

    torch.manual_seed(0)
    spec = replace(MVIT_SPECS["mvit_tiny"], abs_pos=True, rel_pos=False, cls_token=True)
    m = MViT(spec, (8, 32, 32))
    assert {n for n, _ in m.named_parameters() if "pos_embed" in n} == {
        "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"}
    assert tuple(m.pos_embed_spatial.shape) == (1, 8 * 8, spec.embed_dim)
    assert tuple(m.pos_embed_temporal.shape) == (1, 4, spec.embed_dim)
    pos = m._abs_pos((4, 8, 8))[0]  # (t*h*w, C)
    t, y, x = 3, 5, 2
    assert torch.equal(pos[t * 64 + y * 8 + x], m.pos_embed_spatial[0, y * 8 + x] + m.pos_embed_temporal[0, t])
    clip = torch.randn(1, 3, 8, 32, 32)
    plain = MViT(replace(spec, abs_pos=False), (8, 32, 32))
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if "pos_embed" not in k})
    assert not torch.allclose(plain.forward_features(clip), m.forward_features(clip), atol=1e-3)
    with torch.no_grad():  # zero tables: exactly the model without them
        for p in (m.pos_embed_spatial, m.pos_embed_temporal, m.pos_embed_class):
            p.zero_()
    assert torch.allclose(plain.forward_features(clip), m.forward_features(clip), atol=1e-6)
    assert m.forward_features(torch.randn(1, 3, 4, 48, 32)).shape[2:] == m.grid(4, 48, 32)  # other sizes: resized


def test_token_selection_shapes_and_key_slices():
    B, C, t, h, w = 2, 5, 4, 3, 2
    f = torch.randn(B, C, t, h, w)
    L = {"singleton": t * h * w, "tubelet": h * w, "c+t": h * w, "maxpool": h * w, "2(c+t)": 2 * h * w, "central": h * w}
    for s in STRATEGIES:
        tok = select_tokens(f, s)
        assert tok.det.shape == (B, L[s], C) and tok.cells.shape == (L[s], 4)
        assert tok.action.shape[-2:] == (L[s], C)
    tok = select_tokens(f, "2(c+t)")
    # first h*w detection tokens: slice t/2-1, then slice t/2; action tokens: past mean, future mean.
    assert torch.equal(tok.det[:, : h * w], f[:, :, 1].flatten(2).transpose(1, 2))
    assert torch.equal(tok.det[:, h * w :], f[:, :, 2].flatten(2).transpose(1, 2))
    assert torch.allclose(tok.action[:, : h * w], f[:, :, :2].mean(2).flatten(2).transpose(1, 2))
    assert torch.allclose(tok.action[:, h * w :], f[:, :, 2:].mean(2).flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="unknown token selection"):
        select_tokens(f, "bogus")


def test_grid_bias_makes_untrained_boxes_their_cells():
    cells = grid_cells(3, 4)
    assert torch.allclose(torch.sigmoid(grid_bias(cells)), cells, atol=1e-5)
    assert torch.allclose(cells[5], torch.tensor([1.5 / 4, 1.5 / 3, 1 / 4, 1 / 3]))
    model = build_detector(ModelConfig(backbone="mvit_tiny", head_hidden=32),
                           DataConfig(num_frames=8, size=64), num_classes=3)
    out = model(torch.randn(1, 3, 8, 64, 64))
    assert out["boxes"].shape == (1, 2 * 8 * 8, 4)  # 2(c+t) on the 8x8 grid (last pool removed)
    assert out["actor_logits"].shape == (1, 128) and out["action_logits"].shape == (1, 128, 3)
    assert torch.allclose(out["boxes"][0], out["cells"], atol=1e-4)  # box head starts at zero
