"""CTF with FlexAttention's block sparsity versus dense CTF and naive dense MTF (DESIGN §3).

The paper's claim: CTF doubles the training sequence, yet with a block-sparse kernel its attention
costs about what naive (dense-mask) MTF costs. This script counts the attention work each variant
actually computes (from the block mask) and times forward+backward of the attention op side by side.

On the CPU torch has no FlexAttention backward, so the flex rows time the compiled forward only
(`fwd` column) and leave fwd+bwd empty; run with `--device cuda` for the full comparison.

    python benchmarks/attention.py [--frames 5 --tokens 64 --heads 4 --head-dim 64 --batch 2]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import median_time, print_table, write_results

from magi.model.attention import FlexKernel, TemporalMask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=5, help="latent frames T (Cosmos 4x: 17 -> 5)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per frame N (128 px, 8x VAE, p=2)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    T, N, B, H, Dh = args.frames, args.tokens, args.batch, args.heads, args.head_dim

    ctf = TemporalMask("ctf", T, N, device)
    ctf128 = TemporalMask("ctf", T, N, device, block_size=128)
    mtf = TemporalMask("mtf", T, N, device)
    flex = FlexKernel(compile=True)
    flops_per_pair = 4 * Dh * H * B  # QK^T and PV, multiply-adds x 2

    def qkv(L, grad=True):
        return [torch.randn(B, H, L, Dh, device=device, dtype=dtype, requires_grad=grad) for _ in range(3)]

    def fwd_bwd(fn, L):
        q, k, v = qkv(L)
        def run():
            out = fn(q, k, v)
            out.sum().backward()
        return run

    def fwd(fn, L):
        q, k, v = qkv(L, grad=False)
        return lambda: fn(q, k, v)

    variants = [
        ("CTF flex (frame-aligned blocks)", ctf, lambda q, k, v: flex(q, k, v, ctf.block_mask), ctf.computed_pairs(), True),
        ("CTF flex (128-token blocks)", ctf128, lambda q, k, v: flex(q, k, v, ctf128.block_mask), ctf128.computed_pairs(), True),
        ("CTF dense (SDPA + bool mask)", ctf, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=ctf.dense), ctf.seq_len ** 2, False),
        ("MTF dense (SDPA + bool mask)", mtf, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mtf.dense), mtf.seq_len ** 2, False),
    ]
    rows = []
    base_pairs = mtf.seq_len ** 2
    for name, mask, fn, pairs, is_flex in variants:
        row = {"variant": name, "seq_len": mask.seq_len, "block": mask.block_size if is_flex else None,
               "computed_pairs": pairs, "work_vs_mtf_dense": pairs / base_pairs,
               "gflop": pairs * flops_per_pair / 1e9}
        with torch.no_grad():
            row["fwd_ms"] = 1e3 * median_time(fwd(fn, mask.seq_len), args.repeats)
        if is_flex and device.type == "cpu":
            row["fwd_bwd_ms"] = None  # torch has no FlexAttention backward on the CPU
        else:
            row["fwd_bwd_ms"] = 1e3 * median_time(fwd_bwd(fn, mask.seq_len), args.repeats)
        rows.append(row)
    mtf_row = rows[-1]
    for r in rows:
        for key in ("fwd_ms", "fwd_bwd_ms"):
            if r[key] is not None and mtf_row[key]:
                r[key.replace("_ms", "_vs_mtf")] = r[key] / mtf_row[key]
    cols = ["variant", "seq_len", "block", "work_vs_mtf_dense", "gflop", "fwd_ms", "fwd_vs_mtf",
            "fwd_bwd_ms", "fwd_bwd_vs_mtf"]
    print(f"T={T} frames x N={N} tokens, B={B}, H={H}, Dh={Dh}, {args.dtype} on {device}")
    print_table(rows, cols)
    write_results("attention", {"args": vars(args), "rows": rows,
                                "note": "work = (query, key) pairs the kernel computes; CTF flex "
                                        "fwd+bwd is not timed on the CPU (no backward in torch)"})


if __name__ == "__main__":
    main()
