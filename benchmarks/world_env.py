"""Frames per second of the world model stepped as a Gymnasium environment (docs/world-model.md): the vector form
`magi.world.WorldModelVectorEnv` at B environments, one forward pass per step for all B, at the model's
play setting (its play.json), reward/end model included when the model folder has one. Frames/s counts
every environment's frame: B x steps / seconds. Writes results/world_env.json.

How far batching can go on this machine: each row also counts the step's floating-point work
(`torch.utils.flop_counter`: matmuls, convolutions, attention) and the rate it reached, against the rate
of one large fp32 matmul on the same threads (the machine's practical peak). The `ceiling` column is
the frames/s that work would allow at that peak, as a multiple of B = 1's measured frames/s.

    OMP_NUM_THREADS=1 python benchmarks/world_env.py --model pretrained/atari --batch 1 8 32 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, print_table, write_results  # noqa: E402


def matmul_peak_gflops(n: int = 1024) -> float:
    """fp32 GFLOP/s of an (n, n) @ (n, n) matmul on the current threads: the practical peak that a batch of
    environments' work could approach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / median_time(lambda: a @ b, repeats=7, warmup=2) / 1e9


def step_flops(env, actions: np.ndarray) -> tuple[float, dict]:
    """Floating-point operations of one env step (counted, not timed): the total and {module class: flops}
    for the outermost modules that do at least 1% of it (the backbone's `Layer`s, the diffusion head's
    `DenoiserMLP`, the tokenizer's `Decoder`, the `RewardEndModel`), the rest as "other"."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=1) as counter:
        env.step(actions)
    total = float(counter.get_total_flops())
    outer = {name: float(sum(ops.values())) for name, ops in counter.get_flop_counts().items()
             if name != "Global" and "." not in name}
    parts = {name: f for name, f in outer.items() if f >= 0.01 * total}
    parts["other"] = total - sum(parts.values())
    return total, parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="pretrained/atari")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--steps", type=int, default=None, help="timed steps per batch size (default: ~256 frames' worth, "
                                                           "at least 8 steps)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="world_env")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from magi.world.env import WorldModelCore, WorldModelVectorEnv

    core = WorldModelCore(args.model, device=args.device)
    peak = matmul_peak_gflops()
    rows = []
    for B in args.batch:
        env = WorldModelVectorEnv(B, core=core)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        steps = args.steps or max(8, 256 // B)
        for _ in range(args.warmup):
            env.step(rng.integers(18, size=B))
        flops, parts = step_flops(env, rng.integers(18, size=B))
        start = time.perf_counter()
        for _ in range(steps):
            env.step(rng.integers(18, size=B))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"batch": B, "steps": steps, "seconds": round(seconds, 3),
                     "ms_per_step": round(1000 * seconds / steps, 2), "frames_per_s": round(B * steps / seconds, 1),
                     "mflop_per_frame": round(flops / B / 1e6, 1),
                     "gflop_per_s": round(flops * steps / seconds / 1e9, 2)})
        rows[-1]["mflop_per_frame_by_module"] = {k: round(f / B / 1e6, 1) for k, f in parts.items()}
        print(rows[-1], flush=True)
    base = rows[0]["frames_per_s"]
    for r in rows:
        r["vs_first"] = round(r["frames_per_s"] / base, 2)
        r["of_peak"] = round(r["gflop_per_s"] / peak, 2)
        r["ceiling"] = round(peak * 1e3 / r["mflop_per_frame"] / base, 2)  # frames/s at peak, over B = 1's
    print_table(rows, ["batch", "steps", "ms_per_step", "frames_per_s", "vs_first", "mflop_per_frame", "gflop_per_s",
                       "of_peak", "ceiling"])
    print(f"fp32 matmul peak on {args.threads} thread(s): {peak:.1f} GFLOP/s")
    o = core.options
    write_results(args.name, {
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "command": "python benchmarks/world_env.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "reward_model": core.reward is not None,
        "setting": {"mask_steps": o.mask_steps, "diffusion_steps": o.diffusion_steps, "sampler": o.sampler,
                    "window": core.window, "compiled": False},
        "matmul_peak_gflop_per_s": round(peak, 2), "rows": rows}, device="cpu" if args.device == "cpu" else "cuda")
    core.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
