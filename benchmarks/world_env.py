"""Frames per second of the world model stepped as a Gymnasium environment (docs/world-model.md): the vector form
`magi.world.WorldModelVectorEnv` at B environments, one forward pass per step for all B, at the model's
play setting (its play.json), reward/end model included when the model folder has one. Frames/s counts
every environment's frame: B x steps / seconds. Writes results/world_env.json.

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
from common import print_table, write_results  # noqa: E402


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
    rows = []
    for B in args.batch:
        env = WorldModelVectorEnv(B, core=core)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        steps = args.steps or max(8, 256 // B)
        for _ in range(args.warmup):
            env.step(rng.integers(18, size=B))
        start = time.perf_counter()
        for _ in range(steps):
            env.step(rng.integers(18, size=B))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"batch": B, "steps": steps, "seconds": round(seconds, 3),
                     "ms_per_step": round(1000 * seconds / steps, 2), "frames_per_s": round(B * steps / seconds, 1)})
        print(rows[-1], flush=True)
    base = rows[0]["frames_per_s"]
    for r in rows:
        r["vs_first"] = round(r["frames_per_s"] / base, 2)
    print_table(rows, ["batch", "steps", "ms_per_step", "frames_per_s", "vs_first"])
    o = core.options
    write_results(args.name, {
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "command": "python benchmarks/world_env.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "reward_model": core.reward is not None,
        "setting": {"mask_steps": o.mask_steps, "diffusion_steps": o.diffusion_steps, "sampler": o.sampler,
                    "window": core.window, "compiled": False},
        "rows": rows}, device="cpu" if args.device == "cpu" else "cuda")
    core.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
