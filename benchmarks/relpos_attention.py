"""Ways to run MViT's attention with decomposed relative positions, on the attention shapes of the
paper-size detector (MViTv2-S, 16×256², last pool removed), timed in turn in one process.

* ``bias+sdpa``: the reference's formulation (what ``models/mvit.py`` did until 2026-12-04) — the
  dense ``(heads, Nq, Nk)`` bias of ``rel_pos_bias`` passed to ``F.scaled_dot_product_attention``
  as ``attn_mask``;
* ``sdpa, no bias``: the same attention without relative positions (the lower bound);
* ``augmented q/k``: ``models/rel_pos_attention.rel_pos_attention``, what ``models/mvit.py`` runs —
  the three per-axis terms folded into extra channels of ``q`` and one-hot channels of ``k`` (no
  dense bias; ``v`` zero-padded to the same head size, which the CPU flash kernel needs);
* ``bt+(bh+bw)``: the dense bias summed with ``kh·kw`` as the inner dimension;
* ``flex`` (``--flex``): ``flex_attention`` with a ``score_mod`` adding the three terms, compiled
  (no class token: the shapes are the last stage's without it).

Prints per shape the median milliseconds, the max error against a float64 reference, and the
totals weighted by how many blocks have each shape.

    python benchmarks/relpos_attention.py [--dtype bf16|fp32] [--rounds 5] [--flex]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bmvit.models.rel_pos_attention import rel_pos_attention, rel_pos_bias, rel_pos_terms

# (heads, query grid, key grid, blocks with this shape) of the paper-size detector; head size 96.
BLOCKS = [(1, (8, 64, 64), (8, 8, 8), 1), (2, (8, 32, 32), (8, 16, 16), 1), (2, (8, 32, 32), (8, 8, 8), 1),
          (4, (8, 16, 16), (8, 16, 16), 1), (4, (8, 16, 16), (8, 8, 8), 10), (8, (8, 16, 16), (8, 16, 16), 2)]
D = 96


def axis_terms(q, q_thw, k_thw, rt, rh, rw):
    """``bt (B, H, 1+Nq, kt)``, ``bh (…, kh)``, ``bw (…, kw)``: the library's query terms, split per axis."""
    return rel_pos_terms(q, q_thw, k_thw, rt, rh, rw, True).split(tuple(k_thw), -1)


def inner_hw_bias(q, q_thw, k_thw, rt, rh, rw):
    bt, bh, bw = axis_terms(q, q_thw, k_thw, rt, rh, rw)
    bhw = (bh[..., :, None] + bw[..., None, :]).flatten(-2)  # (B, H, 1+Nq, kh*kw)
    bias = bt[..., :, None] + bhw[..., None, :]  # (B, H, 1+Nq, kt, kh*kw); class-token row zero
    return F.pad(bias.flatten(3), (1, 0))  # (B, H, 1+Nq, 1+Nk)


def flex_core(q, k, v, bt, bh, bw, k_thw):
    from torch.nn.attention.flex_attention import flex_attention

    kt, kh, kw = k_thw

    def score_mod(score, b, h, i, j):
        return score + bt[b, h, i, j // (kh * kw)] + bh[b, h, i, (j // kw) % kh] + bw[b, h, i, j % kw]

    return flex_attention(q, k, v, score_mod=score_mod)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--flex", action="store_true", help="also time compiled flex_attention (no class token)")
    args = ap.parse_args()
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    flex = torch.compile(flex_core, dynamic=False) if args.flex else None
    total: dict[str, float] = {}
    for H, q_thw, k_thw, count in BLOCKS:
        Nq, Nk = 1 + q_thw[0] * q_thw[1] * q_thw[2], 1 + k_thw[0] * k_thw[1] * k_thw[2]
        q, k, v = (torch.randn(1, H, n, D, dtype=dt) for n in (Nq, Nk, Nk))  # (1, H, [1+]N, d)
        rt, rh, rw = (torch.randn(2 * max(a, b) - 1, D) * 0.2 for a, b in zip(q_thw, k_thw))
        A = (q_thw, k_thw, rt, rh, rw)
        fns = {"bias+sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=rel_pos_bias(q, *A, True)),
               "sdpa, no bias": lambda: F.scaled_dot_product_attention(q, k, v),
               "augmented q/k": lambda: rel_pos_attention(q, k, v, *A, True),
               "bt+(bh+bw)": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=inner_hw_bias(q, *A))}
        qn, kn, vn = q[:, :, 1:], k[:, :, 1:], v[:, :, 1:]  # flex: without the class token
        terms = [t[:, :, 1:] for t in axis_terms(q, *A)]
        if flex is not None:
            fns["flex (no cls)"] = lambda: flex(qn, kn, vn, *terms, k_thw)
            fns["bias+sdpa (no cls)"] = lambda: F.scaled_dot_product_attention(qn, kn, vn, attn_mask=rel_pos_bias(qn, *A, False))
        with torch.inference_mode():
            qd, kd, vd = q.double(), k.double(), v.double()
            ref = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=rel_pos_bias(qd, q_thw, k_thw, *(r.double() for r in A[2:]), True))
            err = {}
            for n, f in fns.items():
                out = f()  # also the warm-up (flex: its compilation)
                if n in ("bias+sdpa", "augmented q/k", "bt+(bh+bw)"):
                    err[n] = float((out.double() - ref).abs().max())
            times: dict[str, list[float]] = {n: [] for n in fns}
            for _ in range(args.rounds):
                for n, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[n].append(time.perf_counter() - t0)
        for n, ts in times.items():
            total[n] = total.get(n, 0.0) + statistics.median(ts) * count
        print(f"{H} heads, q {q_thw}, k {k_thw} (x{count}): "
              + ", ".join(f"{n} {1e3 * statistics.median(ts):.1f} ms" for n, ts in times.items())
              + "; max error vs fp64: " + ", ".join(f"{n} {e:.3f}" for n, e in err.items()), flush=True)
    base = total["bias+sdpa"]
    print(f"{args.dtype}, all blocks: " + ", ".join(f"{n} {1e3 * t:.0f} ms ({base / t:.2f}x)" for n, t in total.items()
                                                   if "no cls" not in n))
    if args.flex:
        print(f"flex vs bias+sdpa without the class token: {total['bias+sdpa (no cls)'] / total['flex (no cls)']:.2f}x")
    print(f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
