"""How far do the actions alone decide where the player goes? (what limits a world model: docs/design.md §8)

ALE v5 repeats the previous action on each emulator frame with probability 0.25 ("sticky actions"), so
the same actions from the same state need not give the same frames. This replays the same H actions
from the same emulator state several times (the sticky draws differ between replays) and reports,
per horizon step, the distance between the player's positions (emulator RAM, converted to pixels of a
64x64 frame with the detector's calibration) of two independent replays: the error that a perfect
world model, which samples the outcome with the right probabilities, would still show against the
recorded truth. Beside it: how far the player moves from where it was (the copy-last-frame error).

    python experiments/atari_spread.py --out results/world_model/emulator_spread.json

States come from episodes seeded apart from the training and validation recordings, played by the
same policy mix for a random number of steps; the replayed actions are the policy's next H actions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magi.world.atari import atari_env
from magi.world.policies import atari_policy
from magi.world.detect import player_detector

# px of a 64x64 frame per unit of the player's RAM position, from the detector's calibration against the
# emulator (results/archive/world_model_gray_pixels/world_model.json, detector.on_real_frames.axes x/y scale).
PX_PER_UNIT = np.array([0.3824, 0.3044])
DETECTOR = player_detector("Boxing")


def player_xy(ale) -> np.ndarray:
    return DETECTOR.ram_xy(ale.getRAM()) * PX_PER_UNIT


def measure(states: int, replays: int, horizon: int, seed: int, progress: bool = True) -> dict:
    env = atari_env("Boxing", 4, "atari_spread")
    ale = env.unwrapped.ale
    meanings = env.unwrapped.get_action_meanings()
    pair_dist = np.zeros((states, horizon))  # mean distance between two replays' players
    moved = np.zeros((states, horizon))  # distance of the player from its start position
    for s in tqdm(range(states), desc="states", disable=not progress):
        rng = np.random.default_rng([seed, s])
        act, _ = atari_policy("mix", "Boxing", s, meanings, rng, noise=0.25)
        obs, _ = env.reset(seed=int(rng.integers(2**31)) + 2_000_000)
        prev = -1
        for _ in range(int(rng.integers(20, 600))):
            prev = act(obs, ale.getRAM(), prev)
            obs, *_ = env.step(prev)
        state = ale.cloneState()  # without the sticky-action RNG: replays draw afresh
        start = player_xy(ale)
        actions, probe = [], obs
        for _ in range(horizon):  # the policy's next H actions, decided once
            prev = act(probe, ale.getRAM(), prev)
            actions.append(prev)
            probe, *_ = env.step(prev)
        paths = np.zeros((replays, horizon, 2))
        for r in range(replays):
            ale.restoreState(state)
            for t, a in enumerate(actions):
                env.step(a)
                paths[r, t] = player_xy(ale)
        d = np.sqrt(((paths[:, None] - paths[None]) ** 2).sum(-1))  # (R, R, H)
        pair_dist[s] = d.sum((0, 1)) / (replays * (replays - 1))
        moved[s] = np.sqrt(((paths - start) ** 2).sum(-1)).mean(0)
    env.close()
    return {"game": "Boxing", "states": states, "replays": replays, "horizon": horizon, "seed": seed,
            "sticky_action_probability": 0.25,
            "replay_distance_px": pair_dist.mean(0).tolist(),
            "replay_distance_first8_px": float(pair_dist[:, :8].mean()),
            "player_moved_px": moved.mean(0).tolist(),
            "player_moved_first8_px": float(moved[:, :8].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/world_model/emulator_spread.json")
    p.add_argument("--states", type=int, default=64)
    p.add_argument("--replays", type=int, default=8)
    p.add_argument("--horizon", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = measure(args.states, args.replays, args.horizon, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("step        " + " ".join(f"{t:5d}" for t in (1, 2, 4, 8, 16, 32) if t <= args.horizon))
    for key in ("replay_distance_px", "player_moved_px"):
        print(f"{key[:11]:11s} " + " ".join(f"{result[key][t - 1]:5.2f}" for t in (1, 2, 4, 8, 16, 32)
                                            if t <= args.horizon))
    print(f"first 8 steps: two replays of the same actions {result['replay_distance_first8_px']:.2f} px apart; "
          f"the player moves {result['player_moved_first8_px']:.2f} px -> {args.out}")


if __name__ == "__main__":
    main()
