"""What the Boxing recordings cover (docs/world-model.md): hold lengths, actions, positions on the ring, clinches
and punches while moving, for the recording config the shipped model was trained on (`policy: mix`:
sticky-random and scripted-agent episodes, configs/atari_world_model_tokens.yaml) against the new ones
(`policy: person-mix`: `PersonPlayer` and scripted-agent episodes; the one recipe's `all-mix`: person,
sticky and agent episodes over whole rounds, configs/atari_world_model_hud.yaml), side by side.

    python experiments/world_model_coverage.py --out results/world_model

Records (once; kept in data_cache/) 48 episodes per config at 64x64, seed 0, as the training configs do,
and writes OUT/coverage.json and OUT/coverage.md. Everything is read from the recorded actions and the
emulator RAM (player x/y: bytes 32/34, opponent: 33/35).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magi.world.atari import load_actions, load_ram, record_atari  # noqa: E402
from magi.world.policies import BOXING_RING  # noqa: E402

CONFIGS = {  # name -> (data root, policy, frames per episode, layout): the old one is round 2's training recordings
    "old (mix: sticky + agent)": ("data_cache/atari/boxing64", "mix", 1000, "screen"),
    "new (person-mix: person + agent)": ("data_cache/atari/boxing64_person", "person-mix", 1000, "screen"),
    "one recipe (all-mix: person + sticky + agent, whole rounds)": ("data_cache/atari/boxing64_hud", "all-mix", 2000,
                                                                    "hud"),
}
ROPE_PX = 4  # within this many RAM units of the ring's bound: at a rope
HOLD_BINS = ((1, 1), (2, 3), (4, 9), (10, 29), (30, 60), (61, 10**9))


def runs_of(actions: np.ndarray) -> np.ndarray:
    """Lengths of the runs of one action held (an episode's last run included)."""
    change = np.flatnonzero(np.diff(actions)) + 1
    return np.diff(np.r_[0, change, len(actions)])


def coverage(paths: list[Path], meanings: list[str]) -> dict:
    holds, acts, pos, opp, moved, fire_dir = [], [], [], [], [], []
    direction = np.array([any(d in m for d in ("UP", "DOWN", "LEFT", "RIGHT")) for m in meanings])
    fires = np.array(["FIRE" in m for m in meanings])
    for path in paths:
        a = load_actions(path)[:-1]  # (T-1,): the action taken at frame t
        ram = load_ram(path).astype(int)  # (T, 128)
        holds.append(runs_of(a))
        acts.append(a)
        xy, oxy = ram[:, [32, 34]], ram[:, [33, 35]]
        pos.append(xy[:-1])
        opp.append(oxy[:-1])
        moved.append(np.abs(np.diff(xy, axis=0)).sum(1) > 0)  # did the action move the player
        fire_dir.append(direction[a] & fires[a])
    holds, acts = np.concatenate(holds), np.concatenate(acts)
    pos, opp, moved, fire_dir = map(np.concatenate, (pos, opp, moved, fire_dir))
    frames = len(acts)
    x0, x1, y0, y1 = BOXING_RING
    x, y = pos[:, 0], pos[:, 1]
    at_x, at_y = (x <= x0 + ROPE_PX) | (x >= x1 - ROPE_PX), (y <= y0 + ROPE_PX) | (y >= y1 - ROPE_PX)
    close = (np.abs(opp[:, 0] - x) <= 30) & (np.abs(opp[:, 1] - y) <= 12)
    pushing = direction[acts] & ~moved  # a direction held and the player did not move: blocked
    cells = np.zeros((8, 8))
    np.add.at(cells, (np.clip((y - y0) * 8 // (y1 - y0 + 1), 0, 7), np.clip((x - x0) * 8 // (x1 - x0 + 1), 0, 7)), 1)
    per_action = np.bincount(acts, minlength=len(meanings)) / frames
    frames_in = lambda lo, hi: float(holds[(holds >= lo) & (holds <= hi)].sum() / frames)  # noqa: E731
    return {
        "episodes": len(paths), "frames": int(frames),
        "holds": {"count": int(len(holds)), "median": float(np.median(holds)), "mean": float(holds.mean()),
                  "p90": float(np.percentile(holds, 90)), "max": int(holds.max()),
                  "frames_in_holds": {f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}": frames_in(lo, hi)
                                      for lo, hi in HOLD_BINS}},
        "actions": {"distinct": int((per_action > 0).sum()), "min_share": float(per_action.min()),
                    "max_share": float(per_action.max()),
                    "entropy_of_uniform": float(-(per_action[per_action > 0] * np.log(per_action[per_action > 0])).sum()
                                                / np.log(len(meanings))),
                    "share": {m: float(s) for m, s in zip(meanings, per_action)}},
        "ring": {"at_a_rope": float((at_x | at_y).mean()), "in_a_corner": float((at_x & at_y).mean()),
                 "cells_visited_8x8": int((cells > 0).sum()),
                 "cells_with_1pct": int((cells / frames >= 0.01).sum()),
                 "x_range": [int(x.min()), int(x.max())], "y_range": [int(y.min()), int(y.max())]},
        "play": {"close_to_opponent": float(close.mean()), "clinch_pushing": float((close & pushing).mean()),
                 "pushing_blocked": float(pushing.mean()), "player_moves": float(moved.mean()),
                 "punch_while_moving": float((fire_dir & moved).mean()),
                 "noop": float(per_action[meanings.index("NOOP")])},
    }


ROWS = [  # (label, path in the coverage dict, format)
    ("frames (episodes)", None, None),
    ("hold length: median / p90 / max", None, None),
    ("frames in holds of 1 / 2-3 / 4-9", None, None),
    ("frames in holds of 10-29 / 30-60 / >60", None, None),
    ("actions used (of 18); rarest / commonest share", None, None),
    ("action entropy (1 = uniform)", ("actions", "entropy_of_uniform"), "{:.3f}"),
    ("frames at a rope / in a corner", None, None),
    ("ring cells visited (8x8) / with >= 1% of frames", None, None),
    ("close to the opponent / clinch (close, pushing, blocked)", None, None),
    ("pushing while blocked (rope, corner or opponent)", ("play", "pushing_blocked"), "{:.1%}"),
    ("punching while moving", ("play", "punch_while_moving"), "{:.1%}"),
    ("player moves / NOOP", None, None),
]


def cell(c: dict, label: str) -> str:
    h, a, r, p = c["holds"], c["actions"], c["ring"], c["play"]
    f = h["frames_in_holds"]
    return {
        "frames (episodes)": f"{c['frames']:,} ({c['episodes']})",
        "hold length: median / p90 / max": f"{h['median']:.0f} / {h['p90']:.0f} / {h['max']}",
        "frames in holds of 1 / 2-3 / 4-9": f"{f['1-1']:.1%} / {f['2-3']:.1%} / {f['4-9']:.1%}",
        "frames in holds of 10-29 / 30-60 / >60": f"{f['10-29']:.1%} / {f['30-60']:.1%} / {f['>60']:.1%}",
        "actions used (of 18); rarest / commonest share": f"{a['distinct']}; {a['min_share']:.1%} / {a['max_share']:.1%}",
        "frames at a rope / in a corner": f"{r['at_a_rope']:.1%} / {r['in_a_corner']:.1%}",
        "ring cells visited (8x8) / with >= 1% of frames": f"{r['cells_visited_8x8']} / {r['cells_with_1pct']}",
        "close to the opponent / clinch (close, pushing, blocked)": f"{p['close_to_opponent']:.1%} / {p['clinch_pushing']:.1%}",
        "player moves / NOOP": f"{p['player_moves']:.1%} / {p['noop']:.1%}",
    }.get(label, "")


def table(result: dict) -> str:
    names = list(result["configs"])
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, path, fmt in ROWS:
        values = []
        for n in names:
            c = result["configs"][n]
            values.append(fmt.format(c[path[0]][path[1]]) if path else cell(c, label))
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/world_model")
    p.add_argument("--episodes", type=int, default=48, help="episodes per config (training 40 + validation 8)")
    args = p.parse_args(argv)
    result = {"ring": {"bounds_x_y": list(BOXING_RING), "rope_px": ROPE_PX,
                       "close": "|dx| <= 30 and |dy| <= 12 (RAM units) between the boxers"},
              "record": {"episodes": args.episodes, "size": 64, "seed": 0},
              "configs": {}}
    for name, (root, policy, max_frames, layout) in CONFIGS.items():
        paths = record_atari(ROOT / root, game="Boxing", episodes=args.episodes, max_frames=max_frames, size=64,
                             policy=policy, seed=0, layout=layout)
        meanings = json.loads(paths[0].with_suffix(".json").read_text())["action_meanings"]
        result["configs"][name] = {"root": root, "policy": policy, **coverage(paths, meanings)}
        if policy == "person-mix":  # and its person episodes alone (the agent's alternate with them)
            person = [q for q in paths if json.loads(q.with_suffix(".json").read_text())["policy"] == "person"]
            result["configs"]["new, its person episodes only"] = {"root": root, "policy": "person",
                                                                  **coverage(person, meanings)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    (out / "coverage.md").write_text("# Boxing recordings: what they cover\n\n`python experiments/world_model_coverage.py`"
                                     " (48 episodes each, seed 0, of up to 1,000 frames, or whole rounds of up to 2,000;"
                                     " RAM bytes 32-35)\n\n"
                                     + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
