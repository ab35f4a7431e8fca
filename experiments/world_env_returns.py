"""A random and a scripted policy played in the world model (`magi/Boxing-v0`, rewards from its reward/end
model) and in the emulator side by side, from the same openings; returns compared (docs/world-model.md).

Each episode opens on a held-out emulator seed (the env's `info["emulator_seed"]`); the emulator plays the
same episode from the same opening (reset, then NOOPs). The random policy presses the same seeded key
sequence in both; the scripted one (`Chase`) reads the 64x64 frame it is shown (the boxers' centroids,
`magi.world.detect`'s detectors), walks to the opponent and punches when close, so its keys follow what
each world shows. Returns are over the first `--steps` steps after the opening (a round is ~1,783).

    OMP_NUM_THREADS=1 python experiments/world_env_returns.py --episodes 8 --steps 400 --out results/world_model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


class Chase:
    """Walk toward the opponent and punch when close, from 64x64 frames (the RAM-reading scripted agent of
    `magi.world.policies`, on pixels). Missing boxers: NOOP."""

    def __init__(self, meanings: list[str]) -> None:
        self.meanings = meanings

    def __call__(self, frames_hwc: np.ndarray) -> np.ndarray:
        from magi.world.detect import _boxing_opponent, _boxing_player

        gray = frames_hwc.astype(np.float32).mean(-1)  # (B, H, W)
        me, them = _boxing_player(gray), _boxing_opponent(gray)  # (B, 2) in 64-px units
        out = []
        for (x, y), (ox, oy) in zip(me, them):
            if np.isnan([x, y, ox, oy]).any():
                out.append(self.meanings.index("NOOP"))
                continue
            dx, dy = ox - x, oy - y
            close = abs(dx) < 11.5 and abs(dy) < 3  # the RAM agent's 30 / 10 / 28 / 3 units at 0.38 / 0.30 px a unit
            vertical = ("UP" if dy < 0 else "DOWN") if abs(dy) > 1 else ""
            horizontal = ("RIGHT" if dx > 0 else "LEFT") if abs(dx) > 10.75 else ""
            out.append(self.meanings.index((vertical + horizontal + ("FIRE" if close else "")) or "NOOP"))
        return np.array(out)


def emulator_returns(game: str, seeds, k: int, steps: int, policy: str, meanings, size, key_seqs) -> list[dict]:
    from magi.world.atari import atari_env, noop_opening, resize_frame

    noop = meanings.index("NOOP")
    chase = Chase(meanings)
    out = []
    for i, seed in enumerate(seeds):
        env = atari_env(game, who="world_env_returns")
        obs = noop_opening(env, int(seed), k, noop)[-1]  # the same opening as the world model's
        total, hits, taken, ended = 0.0, 0, 0, None
        for t in range(steps):
            if policy == "random":
                a = int(key_seqs[i][t])
            else:
                a = int(chase(np.moveaxis(resize_frame(obs, size), 0, -1)[None])[0])
            obs, r, terminated, truncated, _ = env.step(a)
            total += r
            hits += r > 0
            taken += r < 0
            if terminated or truncated:
                ended = t + 1
                break
        env.close()
        out.append({"emulator_seed": int(seed), "return": total, "punches_landed": int(hits),
                    "punches_taken": int(taken), "ended_at_step": ended})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="pretrained/atari")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/world_model"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from magi.world.env import WorldModelCore, WorldModelVectorEnv

    core = WorldModelCore(args.model)
    if core.reward is None:
        raise SystemExit(f"{args.model}: no reward/end model (experiments/reward_model.py --out {args.model}/reward)")
    meanings = core.meanings
    report = {"command": "python experiments/world_env_returns.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "steps": args.steps, "episodes": args.episodes, "policies": {}}
    rows = []
    for policy in ("random", "chase"):
        env = WorldModelVectorEnv(args.episodes, core=core, max_steps=args.steps + 1)
        obs, info = env.reset(seed=args.seed)
        seeds = info["emulator_seed"]
        keys = np.random.default_rng(args.seed).integers(len(meanings), size=(args.episodes, args.steps))
        chase = Chase(meanings)
        total = np.zeros(args.episodes)
        hits = np.zeros(args.episodes, int)
        taken = np.zeros(args.episodes, int)
        ended = [None] * args.episodes
        alive = np.ones(args.episodes, bool)
        start = time.perf_counter()
        for t in range(args.steps):
            actions = keys[:, t] if policy == "random" else chase(obs)
            obs, r, terminated, truncated, _ = env.step(actions)
            r = np.where(alive, r, 0.0)
            total += r
            hits += (r > 0)
            taken += (r < 0)
            for i in np.flatnonzero(alive & terminated):
                ended[i] = t + 1
            alive &= ~(terminated | truncated)
        seconds = time.perf_counter() - start
        model = [{"emulator_seed": int(s), "return": float(total[i]), "punches_landed": int(hits[i]),
                  "punches_taken": int(taken[i]), "ended_at_step": ended[i]} for i, s in enumerate(seeds)]
        emu = emulator_returns(core.world.game, seeds, core.k, args.steps, policy, meanings, core.world.size, keys)
        report["policies"][policy] = {"world_model": model, "emulator": emu, "world_model_seconds": round(seconds, 1)}
        for name, eps in (("world model", model), ("emulator", emu)):
            ret = np.array([e["return"] for e in eps])
            rows.append({"policy": policy, "where": name, "return_mean": round(float(ret.mean()), 2),
                         "return_std": round(float(ret.std()), 2),
                         "landed": round(float(np.mean([e["punches_landed"] for e in eps])), 1),
                         "taken": round(float(np.mean([e["punches_taken"] for e in eps])), 1),
                         "ended": sum(e["ended_at_step"] is not None for e in eps)})
        print(rows[-2], rows[-1], flush=True)
    report["table"] = rows
    lines = [f"| policy | where | return over {args.steps} steps (mean +- std, {args.episodes} episodes) | "
             "punches landed | punches taken | episodes ended |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['where']} | {r['return_mean']} +- {r['return_std']} | {r['landed']} | "
                     f"{r['taken']} | {r['ended']} |")
    text = "\n".join(lines)
    print(text)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from common import machine

    report["machine"] = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "env_returns.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "env_returns.md").write_text(text + "\n")
    print(f"-> {args.out / 'env_returns.json'}")
    core.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
