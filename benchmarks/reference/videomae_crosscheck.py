"""Dev check: bmvit ViT vs the original VideoMAE modeling_finetune.py (MCG-NJU/VideoMAE @14ef8d8)
with the same random weights, through bmvit's VideoMAE importer. Not a project test.

Run (benchmarks/reference/README.md): REF=/tmp/ref_vit python benchmarks/reference/videomae_crosscheck.py
"""
import sys, time
import os
REF = os.environ.get("REF", "/tmp/ref_vit")  # modeling_finetune.py, evad_vit_model.py
sys.path[:0] = [REF, os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm_shim")]
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
import modeling_finetune as ref_mod          # original VideoMAE, timm shimmed
import evad_vit_model as evad                # EVAD's interpolate_pos_embed_online
from bmvit.models.vit import build_vit


def randomize(model, g):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 1:   # LN weights/biases, q/v biases, linear biases: non-trivial values
                p.copy_((1.0 if n.endswith("norm1.weight") or n.endswith("norm2.weight") or n.endswith("norm.weight") else 0.0)
                        + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g) * (3 if "patch_embed" in n else 1))


def run(size, mean_pooling, pos_mode, dtype=torch.float32):
    g = torch.Generator().manual_seed(size + 7 * mean_pooling)
    ref = ref_mod.vit_base_patch16_224(img_size=size, all_frames=16, num_classes=400, use_mean_pooling=mean_pooling).eval()
    randomize(ref, g)
    if pos_mode == "interpolate" and size != 224:
        # EVAD: the 224² table (8×14×14) resized bicubically per temporal slice to the input grid
        table = evad.get_sinusoid_encoding_table(8 * 14 * 14, 768)
        ref.pos_embed = evad.interpolate_pos_embed_online(table, [14, 14], [size // 16, size // 16], 0).reshape(1, -1, 768)
    path = os.path.join(REF, f"ref_{size}_{int(mean_pooling)}.pth")
    torch.save({"module": ref.state_dict()}, path)
    ours = build_vit("vit_b", (16, size, size), pos_embed=pos_mode).eval()
    report = ours.load_checkpoint(path, "videomae")
    ref, ours = ref.to(dtype), ours.to(dtype)
    clip = torch.randn(1, 3, 16, size, size, generator=g).to(dtype)
    got = {}
    hook_target = ref.blocks[-1] if mean_pooling else ref.norm
    h = hook_target.register_forward_hook(lambda m, i, o: got.__setitem__("x", o))
    t0 = time.time()
    with torch.no_grad():
        ref.forward_features(clip)
        ref_tokens = got["x"]
        if mean_pooling:  # fine-tuned layout: norm is Identity; ours starts a fresh LN (ones/zeros)
            ref_tokens = F.layer_norm(ref_tokens, (768,), eps=1e-6)
        our_tokens, thw = ours.forward_tokens(clip)
    h.remove()
    diff = (our_tokens - ref_tokens).abs().max().item()
    scale = ref_tokens.abs().max().item()
    print(f"{size}² {'fine-tuned (fc_norm)' if mean_pooling else 'norm layout'} pos={pos_mode} {str(dtype)[6:]}: "
          f"tokens {tuple(our_tokens.shape)} grid {thw}; max|ours-ref| = {diff:.3e} (max|ref| = {scale:.2f}); "
          f"report: dropped {report.dropped}, missing {report.missing}; {time.time() - t0:.0f}s")
    return diff


if __name__ == "__main__":
    run(224, True, "interpolate")                    # VideoMAE K400 fine-tuned layout at its own size
    run(224, False, "interpolate")                   # encoder with a final norm
    run(288, False, "interpolate")                   # EVAD's rule at 288 (paper setting)
    run(288, False, "regenerate")                    # VideoMAE's own rule at img_size=288
    run(224, False, "interpolate", torch.float64)
