"""How many (query, key) pairs FlexAttention computes for the CTF mask under each block layout, counted
exactly on the CPU (no timing): the paper's shapes, the default block size, the 128-token blocks that
compiled bf16 backward needs (`magi.model.attention.FlexKernel.coarse`), asymmetric (q, kv) blocks, and
the best order of the frames (slots) within the sequence at 128-token blocks, found by searching every
order. The reference is naive dense MTF (T*N)^2, as in docs/design.md §3.

Shapes (latent frames x tokens per frame): 5x64 (UCF-101 at 128 px, Cosmos 4x8x8, patch 2, the paper's
setting), 5x256 (256 px), 16x64 (a 2D VAE at 128 px), 9x256 (the most favourable shape).

    python benchmarks/attention_pairs.py [--shapes 5x64,5x256,16x64,9x256]

Writes results/attention_pairs.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's magi, installed or not
from common import print_table, write_results  # noqa: E402

from magi.model.attention import TemporalMask  # noqa: E402

MAX_SEARCH_SLOTS = 10  # every order of up to 10 slots (3.6M) is searched; longer sequences keep their order


def tile_pairs(visible: np.ndarray, q_block: int, kv_block: int) -> int:
    """Pairs computed when every (q_block x kv_block) tile holding a visible pair is computed whole
    (trimmed to the sequence): FlexAttention's work on a block mask."""
    L = visible.shape[0]
    qb, kb = -(-L // q_block), -(-L // kv_block)
    padded = np.zeros((qb * q_block, kb * kv_block), dtype=bool)
    padded[:L, :L] = visible
    tiles = padded.reshape(qb, q_block, kb, kv_block).any(axis=(1, 3))  # (q blocks, kv blocks)
    q_sizes = np.minimum(q_block, L - q_block * np.arange(qb))
    kv_sizes = np.minimum(kv_block, L - kv_block * np.arange(kb))
    return int((tiles * q_sizes[:, None] * kv_sizes[None, :]).sum())


def slot_visibility(mask: TemporalMask) -> np.ndarray:
    """(S, S) boolean: may slot a attend to slot b (visibility is constant over a slot's tokens)."""
    n = mask.tokens_per_frame
    return mask.dense.numpy()[::n, ::n]


def best_order(slots: np.ndarray, n: int, block: int) -> tuple[int, tuple[int, ...]]:
    """The slot order with the fewest pairs at `block`-token tiles (exhaustive over the groupings of
    slots into blocks; `block` a multiple of the n tokens of a slot)."""
    S = len(slots)
    per = block // n  # slots per block
    best = (None, None)
    seen = set()
    for order in itertools.permutations(range(S)):
        groups = tuple(frozenset(order[i:i + per]) for i in range(0, S, per))
        if groups in seen:  # the order inside a block does not change the tiles
            continue
        seen.add(groups)
        # tile (i, j) is computed iff some slot of block i sees some slot of block j
        blocks = [list(g) for g in groups]
        sizes = np.array([len(g) * n for g in blocks])
        tiles = np.array([[slots[np.ix_(a, b)].any() for b in blocks] for a in blocks])
        pairs = int((tiles * sizes[:, None] * sizes[None, :]).sum())
        if best[0] is None or pairs < best[0]:
            best = (pairs, order)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="5x64,5x256,16x64,9x256")
    args = p.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        T, N = (int(v) for v in shape.lower().split("x"))
        ctf, mtf = TemporalMask("ctf", T, N, "cpu"), TemporalMask("mtf", T, N, "cpu")
        visible = ctf.dense.numpy()
        base = (T * N) ** 2  # naive dense MTF
        slots = slot_visibility(ctf)

        def row(layout: str, pairs: int, **extra) -> dict:
            return {"shape": shape, "layout": layout, "seq_len": ctf.seq_len, "pairs": pairs,
                    "vs_mtf_dense": round(pairs / base, 3), **extra}

        rows.append(row(f"CTF, default blocks ({ctf.block_size})", tile_pairs(visible, ctf.block_size, ctf.block_size)))
        rows.append(row("CTF, 128-token blocks (bf16 backward)", tile_pairs(visible, 128, 128)))
        if N < 128:
            rows.append(row(f"CTF, q 128 x kv {N} blocks", tile_pairs(visible, 128, N)))
            rows.append(row(f"CTF, q {N} x kv 128 blocks", tile_pairs(visible, N, 128)))
            if len(slots) <= MAX_SEARCH_SLOTS:
                pairs, order = best_order(slots, N, 128)
                rows.append(row("CTF, 128-token blocks, best slot order", pairs,
                                order=[f"{'clean' if k == 0 else 'masked'} {f}" for f, k in
                                       zip(ctf.slot_frames[list(order)].tolist(),
                                           ctf.slot_kinds[list(order)].tolist())]))
            pad = 128 // N if 128 % N == 0 else None
            if pad:  # each frame padded to a whole 128-token block: tiles follow frames, padding computed
                rows.append(row("CTF, frames padded to 128 tokens", tile_pairs(slots, 1, 1) * 128 * 128))
        rows.append(row("CTF dense (SDPA)", ctf.seq_len ** 2))
        rows.append(row(f"MTF, default blocks ({mtf.block_size})", tile_pairs(mtf.dense.numpy(), mtf.block_size,
                                                                              mtf.block_size)))
    print_table(rows, ["shape", "layout", "seq_len", "pairs", "vs_mtf_dense"])
    for r in rows:
        if "order" in r:
            print(f"{r['shape']} best order at 128-token blocks: {', '.join(r['order'])}")
    write_results("attention_pairs", {"rows": rows, "reference": "naive dense MTF, (T*N)^2 pairs"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
