"""Dev check: bmvit Hiera vs the official hiera-transformer 0.1.4 (timm layers shimmed).

Random weights in the official layout -> bmvit importer -> compare every stage output (official
return_intermediates, rerolled to [B, T, H, W, C]) and the final features.
Usage (benchmarks/reference/README.md): REF=/tmp/ref_hiera python benchmarks/reference/hiera_crosscheck.py MODEL SIZE Q_POOL...
"""
import os, sys, time
sys.path[:0] = [os.environ.get("REF", "/tmp/ref_hiera"), os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm_shim")]
import torch
torch.set_num_threads(1)
import hiera as official
from bmvit.models.checkpoints.hiera import from_hiera
from bmvit.models.hiera import HIERA_SPECS, Hiera

name, size = sys.argv[1], int(sys.argv[2])
q_pools = [int(q) for q in sys.argv[3:]] or [3]
T = 16 if name != "hiera_tiny" else 8
for q_pool in q_pools:
    # the arguments of official hiera_base_16x224 / hiera_large_16x224, at this input size
    video = lambda **kw: official.Hiera(num_classes=400, input_size=(T, size, size), q_stride=(1, 2, 2),
                                        mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
                                        patch_padding=(1, 3, 3), sep_pos_embed=True, q_pool=q_pool, **kw)
    torch.manual_seed(0)
    if name == "hiera_b_16x224":
        ref = video(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3))
    elif name == "hiera_l_16x224":
        ref = video(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4))
    else:
        ref = official.Hiera(input_size=(T, size, size), num_classes=5, embed_dim=32, num_heads=1, stages=(1, 2, 2),
                             q_pool=q_pool, q_stride=(1, 2, 2), mask_unit_size=(1, 4, 4),
                             mask_unit_attn=(True, False, False), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
                             patch_padding=(1, 3, 3), sep_pos_embed=True)
    ref.eval()
    # random, non-trivial weights everywhere (LayerNorm affine included)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "pos_embed" in n:
                p.copy_(0.5 * torch.randn_like(p))
            elif p.ndim >= 2:  # N(0, 1/fan_in): peaky attention, so a wrong window/order would show
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            elif p.ndim == 1 and n.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn_like(p))
    sd = {"model_state": ref.state_dict()}
    ours = Hiera(HIERA_SPECS[name], (T, size, size), q_pool=q_pool).eval()
    conv = from_hiera(sd, target=ours)
    r = conv.report
    assert not r.missing and not r.unexpected, r
    ours.load_state_dict(conv, strict=True)
    x = torch.randn(1, 3, T, size, size)
    with torch.no_grad():
        t0 = time.time()
        logits, inter = ref(x, return_intermediates=True)
        t1 = time.time()
        stages = ours.forward_stages(x)
        feats = ours.forward_features(x)
        t2 = time.time()
    diffs = []
    for a, b in zip(inter, stages):
        a = a.permute(0, 4, 1, 2, 3)  # [B, T, H, W, C] -> [B, C, T, H, W]
        assert a.shape == b.shape, (a.shape, b.shape)
        diffs.append((tuple(b.shape[2:]), (a - b).abs().max().item(), a.abs().max().item()))
    last = inter[-1]
    want = ref.norm(last).permute(0, 4, 1, 2, 3)
    d_feat = (want - feats).abs().max().item()
    # the official classifier path from our last stage: mean over tokens -> norm -> head
    our_logits = ref.head(ref.norm(stages[-1].flatten(2).mean(2)))
    d_logit = (our_logits - logits).abs().max().item()
    print(f"{name} {T}x{size}^2 q_pool={q_pool}: report: {r.converted} converted, dropped {r.dropped}, resized {r.resized}")
    for thw, d, m in diffs:
        print(f"   stage grid {thw}: max|diff| {d:.3e} (max|ref| {m:.2f})")
    print(f"   forward_features {tuple(feats.shape)}: max|diff| {d_feat:.3e}; logits via our stages: {d_logit:.3e}; "
          f"time ref {t1 - t0:.1f}s ours {t2 - t1:.1f}s")
