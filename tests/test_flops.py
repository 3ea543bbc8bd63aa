"""Cost counting (MACs, torchvision convention) and the output token grid of every named backbone."""

import json
import math

import pytest
import torch

from bmvit.models.flops import count_macs
from bmvit.models.mvit import MVIT_SPECS, MViT, build_mvit, mvitv2_b, mvitv2_s, output_grid

# (name, input T×H×W, remove_last_pool) -> output grid (t, h, w)
GRIDS = {
    ("mvitv2_s", (16, 224, 224), False): (8, 7, 7),
    ("mvitv2_s", (16, 224, 224), True): (8, 14, 14),
    ("mvitv2_s", (16, 256, 256), False): (8, 8, 8),
    ("mvitv2_s", (16, 256, 256), True): (8, 16, 16),
    ("mvitv2_s", (16, 256, 320), True): (8, 16, 20),  # non-square
    ("mvitv2_s", (8, 224, 160), False): (4, 7, 5),
    ("mvitv2_b", (32, 224, 224), False): (16, 7, 7),
    ("mvitv2_b", (32, 224, 224), True): (16, 14, 14),
    ("mvitv2_b", (16, 256, 192), True): (8, 16, 12),
    ("mvit_tiny", (8, 96, 96), False): (4, 6, 6),
    ("mvit_tiny", (8, 96, 64), True): (4, 12, 8),
}


@pytest.mark.parametrize("key", list(GRIDS), ids=lambda k: f"{k[0]}-{'x'.join(map(str, k[1]))}-{'nopool' if k[2] else 'pool'}")
def test_named_backbone_output_shape_and_grid(key):
    name, size, remove = key
    with torch.device("meta"):  # shapes only: nothing allocated, nothing computed
        model = build_mvit(name, size, remove_last_pool=remove)
        y = model.forward_features(torch.empty(2, 3, *size))
    assert tuple(y.shape) == (2, model.out_dim, *GRIDS[key])
    assert model.grid(*size) == GRIDS[key] == output_grid(MVIT_SPECS[name], size, remove)
    assert model.out_dim == {"mvitv2_s": 768, "mvitv2_b": 768, "mvit_tiny": 128}[name]


def test_contract_builders_real_forward_non_square():
    torch.manual_seed(0)
    m = mvitv2_s(input_size=(4, 64, 96), remove_last_pool=True).eval()
    with torch.no_grad():
        y = m.forward_features(torch.randn(1, 3, 4, 64, 96))
        tokens, thw = m.forward_tokens(torch.randn(1, 3, 4, 64, 96))
    assert y.shape == (1, 768, 2, 4, 6) and thw == (2, 4, 6)
    assert tokens.shape == (1, 1 + 2 * 4 * 6, 768)  # class token first, then (t, h, w) row-major
    assert torch.isfinite(y).all()
    assert mvitv2_b.__name__ == "mvitv2_b" and len(MVIT_SPECS["mvitv2_b"].pool_q_stride) == 3


def test_mvitv2_s_cost_matches_torchvision():
    with torch.device("meta"):
        model = mvitv2_s()
        macs = count_macs(model.forward_features, torch.empty(1, 3, 16, 224, 224))
    head = 768 * 400  # torchvision's 400-way classifier, not part of the backbone
    assert round((macs + head) / 1e9, 2) == 64.22  # torchvision MViT_V2_S_Weights: _ops = 64.224
    params = sum(p.numel() for p in model.parameters())
    assert params + 768 * 400 + 400 == 34_537_744  # torchvision num_params, head included


def test_attention_counting_convention():
    """One pooled attention layer: linear + pooling convs + QKᵀ + AV + rel-pos contractions, nothing else."""
    spec = MVIT_SPECS["mvit_tiny"]
    model = MViT(spec, (8, 32, 32))
    attn, s = model.blocks[1].attn, model.table[1]  # Q pooled 1×2×2, K/V pooled 1×2×2, 2 heads
    thw, d = (4, 8, 8), s.dim_out // s.num_heads
    n, nq, nk = math.prod(thw), 4 * 4 * 4, 4 * 4 * 4
    x = torch.randn(1, n, s.dim_in)
    expected = (
        n * s.dim_in * 3 * s.dim_out  # qkv
        + nq * s.dim_out * s.dim_out  # output projection
        + (nq + 2 * nk) * s.num_heads * d * 27  # depthwise 3×3×3 pooling of Q, K, V
        + 2 * s.num_heads * nq * nk * d  # QKᵀ and AV
        + s.num_heads * nq * d * (4 + 4 + 4)  # rel-pos: q against kt, kh, kw table rows
    )
    assert count_macs(lambda t: attn(t, thw), x) == expected
    with torch.device("meta"):  # same count on meta tensors (a different SDPA kernel underneath)
        meta_attn = MViT(spec, (8, 32, 32)).blocks[1].attn
        assert count_macs(lambda t: meta_attn(t, thw), torch.empty(1, n, s.dim_in)) == expected


def test_flops_cli_json(capsys):
    from bmvit.cli.main import main as bmvit

    assert bmvit(["flops", "model.backbone=mvit_tiny", "data.size=64", "data.num_frames=8", "--json", "--num-classes", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == [8, 64, 64] and out["tokens"] == [4, 8, 8]  # default remove_last_pool=true
    assert 0 < out["gmacs_backbone"] < out["gmacs_total"] and out["params"] > 0 and out["num_classes"] == 5


def test_benchmark_cli_json(capsys):
    from bmvit.cli.main import main as bmvit

    argv = ["benchmark", "--device", "cpu", "--runs", "2", "--warmup", "0", "--json",
            "model.backbone=mvit_tiny", "data.size=32", "data.num_frames=8"]
    assert bmvit(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == [8, 32, 32] and len(out["times_s"]) == 2 and out["median_s"] > 0 and out["batch"] == 1
