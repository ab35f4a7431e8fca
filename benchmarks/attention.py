"""CTF with FlexAttention's block sparsity versus dense CTF and naive dense MTF (docs/design.md §3).

The paper's claim: CTF doubles the training sequence, yet with a block-sparse kernel its attention
costs about what naive (dense-mask) MTF costs. This script counts the attention work each variant
actually computes (from the block mask) and times forward+backward of the attention op side by side.

On the CPU torch has no FlexAttention backward, so the flex rows time the compiled forward only
(`fwd` column) and leave fwd+bwd empty; run with `--device cuda` for the full comparison. A flex timing
is reported only when the kernel really ran compiled: if compilation fell back to the eager kernel,
the row says so and its times are left empty (`--require-compiled` makes that an error). The default
shapes put the paper's UCF-101 shape (5x64) beside the favourable ones; in bf16 on CUDA the backward
runs on 128-token blocks (`FlexKernel.coarse`), which at 64 tokens per frame computes 1.48x naive
MTF's pairs (`benchmarks/attention_pairs.py` counts every layout).

    python benchmarks/attention.py [--frames 5 --tokens 64 --heads 4 --head-dim 64 --batch 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's magi, installed or not
from common import median_time, print_table, write_results

from magi.model.attention import FlexKernel, TemporalMask


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="5x64,5x256,9x256",
                    help="comma-separated TxN: latent frames x tokens per frame (5x64: 17 frames at "
                         "128 px through a 4x8x8 Cosmos VAE with patch 2; 5x256: the same at 256 px)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--require-compiled", action="store_true",
                    help="exit with an error when compiled FlexAttention falls back to the eager kernel")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rows = []
    for shape in args.shapes.split(","):
        T, N = (int(v) for v in shape.lower().split("x"))
        rows += run_shape(T, N, args, device, dtype)
    cols = ["shape", "variant", "seq_len", "block", "work_vs_mtf_dense", "gflop", "fwd_ms", "fwd_vs_mtf",
            "fwd_bwd_ms", "fwd_bwd_vs_mtf", "compiled"]
    fell_back = [r for r in rows if r["compiled"] is False]
    print(f"B={args.batch}, H={args.heads}, Dh={args.head_dim}, {args.dtype} on {device}")
    print_table(rows, cols)
    write_results("attention", {"args": vars(args), "rows": rows,
                                "note": "work = (query, key) pairs the kernel computes; CTF flex "
                                        "fwd+bwd is not timed on the CPU (no backward in torch); "
                                        "flex rows whose compilation fell back carry no timing"},
                  device.type)
    if fell_back:
        print(f"compiled FlexAttention fell back to the eager kernel in {len(fell_back)} row(s): their timings "
              f"are not reported", file=sys.stderr)
        return 1 if args.require_compiled else 0
    return 0


def run_shape(T: int, N: int, args, device, dtype) -> list[dict]:
    B, H, Dh = args.batch, args.heads, args.head_dim

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
        ("MTF flex (frame-aligned blocks)", mtf, lambda q, k, v: flex(q, k, v, mtf.block_mask), mtf.computed_pairs(), True),
        ("CTF dense (SDPA + bool mask)", ctf, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=ctf.dense), ctf.seq_len ** 2, False),
        ("MTF dense (SDPA + bool mask)", mtf, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mtf.dense), mtf.seq_len ** 2, False),
    ]
    rows = []
    base_pairs = mtf.seq_len ** 2
    for name, mask, fn, pairs, is_flex in variants:
        row = {"shape": f"{T}x{N}", "variant": name, "seq_len": mask.seq_len, "block": mask.block_size if is_flex else None,
               "computed_pairs": pairs, "work_vs_mtf_dense": pairs / base_pairs,
               "gflop": pairs * flops_per_pair / 1e9}
        with torch.no_grad():
            row["fwd_ms"] = 1e3 * median_time(fwd(fn, mask.seq_len), args.repeats)
        if is_flex and device.type == "cpu":
            row["fwd_bwd_ms"] = None  # torch has no FlexAttention backward on the CPU
        else:
            row["fwd_bwd_ms"] = 1e3 * median_time(fwd_bwd(fn, mask.seq_len), args.repeats)
        row["compiled"] = flex.compile if is_flex else None
        if is_flex and not flex.compile:  # the kernel fell back to eager: that is not the compiled timing
            row["fwd_ms"] = row["fwd_bwd_ms"] = None
        rows.append(row)
    mtf_row = rows[-1]
    for r in rows:
        for key in ("fwd_ms", "fwd_bwd_ms"):
            if r[key] is not None and mtf_row[key]:
                r[key.replace("_ms", "_vs_mtf")] = r[key] / mtf_row[key]
    return rows


if __name__ == "__main__":
    sys.exit(main())
