"""Per-frame generation latency against frame index: KV cache versus recomputing the context.

With the KV cache each masked step of frame t runs the backbone over frame t's N tokens only
(attending to cached keys/values); without it, every step re-runs all t earlier frames too, in one
prefill over the t frames (the fastest way to rebuild the context, not t single-frame commits). The
diffusion head's work is the same in both, so the benchmark uses few diffusion steps to expose the
backbone's cost. Writes results/generate.json and results/generate.png.

    python benchmarks/generate.py [--preset tiny --frames 16 --mask-steps 8 --diffusion-steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import RESULTS, print_table, write_results

from magi import Magi, MagiConfig


def frame_times(model: Magi, frames: int, cached: bool, args) -> list[float]:
    """Seconds spent producing each frame (frame 0 first), median over repeats."""
    runs = []
    for r in range(args.repeats):
        g = torch.Generator().manual_seed(r)
        times = []
        if cached:
            t0 = time.perf_counter()
            for _ in model.stream(frames, mask_steps=args.mask_steps, diffusion_steps=args.diffusion_steps,
                                  generator=g):
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
        else:
            positions, history = max(frames, model.config.num_frames), []
            cond = model._cond(None, None, 1, "cpu")
            for t in range(frames):
                t0 = time.perf_counter()

                def fresh_cache():  # no cache to carry over: re-run every earlier frame, in one prefill
                    cache = model.backbone.new_cache(positions)
                    if history:
                        model._commit(torch.stack(history, dim=1), 0,  # (B, t, N, P)
                                      cond[:, None].expand(-1, len(history), -1), cache, positions)
                    return cache

                history.append(model._generate_frame(t, cond, fresh_cache, positions, 1.0, args.mask_steps,
                                                     args.diffusion_steps, 1.0, "ddpm", g))
                times.append(time.perf_counter() - t0)
        runs.append(times)
    return [statistics.median(col) for col in zip(*runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--mask-steps", type=int, default=8)
    ap.add_argument("--diffusion-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Magi(MagiConfig.preset(args.preset)).eval()
    with torch.no_grad():
        cached = frame_times(model, args.frames, True, args)
        recomputed = frame_times(model, args.frames, False, args)
    rows = [{"frame": t, "kv_cache_s": c, "recompute_s": r, "speedup": r / c}
            for t, (c, r) in enumerate(zip(cached, recomputed))]
    print(f"{args.preset}: {args.mask_steps} mask steps x {args.diffusion_steps} diffusion steps per frame")
    print_table(rows, ["frame", "kv_cache_s", "recompute_s", "speedup"])
    write_results("generate", {"args": vars(args), "rows": rows,
                               "total_kv_cache_s": sum(cached), "total_recompute_s": sum(recomputed)})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(len(cached)), cached, "o-", label="KV cache")
    ax.plot(range(len(recomputed)), recomputed, "s-", label="recompute context")
    ax.set_xlabel("frame index")
    ax.set_ylabel("seconds per frame")
    ax.set_title(f"generation latency ({args.preset}, CPU)" if not torch.cuda.is_available() else args.preset)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "generate.png", dpi=120)
    print(f"wrote {RESULTS / 'generate.png'}")


if __name__ == "__main__":
    main()
