"""Train the reward and episode-end model (`magi.world.reward`) on recorded Boxing episodes and score it
against the emulator on held-out ones (docs/world-model.md).

Training: the world model's training recordings (`--recordings`: `data_cache/atari/boxing64`, 40 x 1,000
frames of `mix`, record seed 0, which hold rewards but no episode end; for `--layout hud` `boxing64_hud`,
40 whole rounds of `all-mix`) and 16 whole rounds recorded here (`mix`, record seed 5, ~1,787 frames
each, ending by the clock); 4 + 2 of them are kept aside for the thresholds. The end head learns from
the episode ends (`--clock`: read off the clock's digits instead).
Held-out (never trained on, never used for a threshold): 8 whole rounds on record seed 2,000,001 and the
world model's 8 validation recordings. Scored on the real frames, and on the tokenizer's round trip of
2 held-out rounds (what the model's frames look like at best). `--clock` ends a round 15 frames after the
clock is read entering its last second (`magi.world.reward`): every held-out hud round on its frame
(results/world_model/reward_hud/; the end head on the ends alone: 5/8, reward_end_head.json).
`--ahead 1` asks whether a landed punch can be told before it is drawn, as a frame predictor must: each
frame t's reward is read from the frames up to t - 1 and the actions up to t - 1's (the one leading into
t); with `--blank-scores` the digits are never seen (results/world_model/reward_ahead/).

    OMP_NUM_THREADS=1 python experiments/reward_model.py --out pretrained/atari/reward --steps 2000
    OMP_NUM_THREADS=1 python experiments/reward_model.py --layout hud --tokenizer runs/atari_tokenizer_hud/export \
        --out runs/reward_hud --results results/world_model/reward_hud --steps 2000 --clock
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path("data_cache/atari")
TRAIN_FULL_SEED, HELD_OUT_SEED = 5, 2_000_001


def recordings_root(layout: str) -> Path:
    """The world model's training recordings in a frame layout: round 2's `mix` (screen) or the one recipe's."""
    return ROOT / ("boxing64" if layout == "screen" else f"boxing64_{layout}")


def full_rounds(seed: int, episodes: int, layout: str = "screen") -> list[Path]:
    """Whole rounds (to the clock's end) played by `mix` on record seed `seed`, in frame `layout`."""
    from magi.world import record_atari

    name = f"boxing64_full_seed{seed}" if layout == "screen" else f"boxing64_{layout}_full_seed{seed}"
    return record_atari(ROOT / name, game="Boxing", episodes=episodes, max_frames=2000, size=64, policy="mix",
                        seed=seed, layout=layout, progress=False)


def score_boxes(layout: str) -> list[list[int]]:
    """The score digits' [row0, row1, col0, col1] boxes in a frame layout (`magi.world.score.REGIONS`)."""
    from magi.world.score import REGIONS

    return [[r.start, r.stop, c.start, c.stop] for r, c in REGIONS[layout].values()]


def listed(root: Path, name: str) -> list[Path]:
    return [root / line.strip() for line in (root / name).read_text().splitlines() if line.strip()]


def round_trip(tokenizer: str, episode, batch: int = 128):
    """The episode's frames through the tokenizer (encode, decode), as the world model sees them."""
    from magi.vae import load_vae
    from magi.video_io import to_float_video, to_uint8_video

    vae = load_vae(tokenizer)
    out = []
    with torch.no_grad():
        for s in range(0, len(episode.frames), batch):
            x = torch.from_numpy(episode.frames[s:s + batch])[None]
            out.append(to_uint8_video(vae.decode(vae.encode(to_float_video(x))))[0].numpy())
    from dataclasses import replace

    return replace(episode, frames=np.concatenate(out), path=episode.path + " (round trip)")


def see_ahead(episode, n: int):
    """The episode with frame t replaced by frame t - n (frame 0 repeated): the reward and end at t are then
    read from the frames up to t - n. Actions stay where they are, so the window's actions run to t - 1."""
    from dataclasses import replace

    if n == 0:
        return episode
    frames = np.concatenate([np.repeat(episode.frames[:1], n, 0), episode.frames[:-n]])
    return replace(episode, frames=frames, path=f"{episode.path} ({n} ahead)")


def table(scores: dict) -> str:
    lines = ["| held-out set | episodes | punches | precision | recall | precision +-1 | recall +-1 | value right | ends within 5 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s['episodes']} | {s['punches']} | {s['precision']} | {s['recall']} | "
                     f"{s['precision_within_1']} | {s['recall_within_1']} | {s['value_right_on_found']} | "
                     f"{s['ends_within_tolerance']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the model goes (e.g. pretrained/atari/reward)")
    p.add_argument("--results", type=Path, default=Path("results/world_model/reward"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokenizer", default="pretrained/atari/tokenizer")
    p.add_argument("--layout", default="screen", choices=("screen", "hud", "hud_lag"),
                   help="the frames' layout (the tokenizer's; hud_lag: rewards are read one frame late, where the strip shows them)")
    p.add_argument("--recordings", type=Path, help="the world model's recordings (default: data_cache/atari/"
                   "boxing64, or boxing64_hud for --layout hud)")
    p.add_argument("--round-trip-episodes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blur", type=float, default=0.5, help="share of training samples blurred 2x")
    p.add_argument("--clock", action="store_true", help="read the clock's digits (RAM labels) for the end "
                   "instead of an end head on the episode ends: the round ends 15 frames after its last second "
                   "starts (hud: every held-out end on its frame, results/world_model/reward_hud/)")
    p.add_argument("--blank-scores", action="store_true", help="blank the score digits (the layout's "
                   "magi.world.score.REGIONS), so that rewards are read from what a landed punch does to the boxers")
    p.add_argument("--ahead", type=int, default=0, help="read each frame's reward from the frames up to this many "
                   "before it (a predictor's view: is a landed punch foreseeable?)")
    args = p.parse_args(argv)
    if args.ahead and args.clock:
        p.error("--ahead reads each frame's reward from earlier frames; the clock's digits are labelled per frame, "
                "so --clock cannot go with it")
    torch.set_num_threads(args.threads)
    from magi.world.reward import load_episode, score_reward_model, train_reward_model

    recordings = args.recordings or recordings_root(args.layout)
    mix = listed(recordings, "trainlist.txt")
    train_full = full_rounds(TRAIN_FULL_SEED, 16, args.layout)
    held_full = full_rounds(HELD_OUT_SEED, 8, args.layout)
    held_val = listed(recordings, "vallist.txt")
    train_paths, val_paths = mix[4:] + train_full[2:], mix[:4] + train_full[:2]
    print(f"loading {len(train_paths)} + {len(val_paths)} + {len(held_full)} + {len(held_val)} episodes", flush=True)
    train = [see_ahead(load_episode(v), args.ahead) for v in train_paths]
    val = [see_ahead(load_episode(v), args.ahead) for v in val_paths]
    model, log = train_reward_model(train, val, steps=args.steps, batch=args.batch, clock=args.clock, blur=args.blur,
                                    blank=score_boxes(args.layout) if args.blank_scores else ())
    print(f"trained in {log['seconds']} s; thresholds {log['thresholds']}", flush=True)
    del train
    held = [load_episode(v) for v in held_full]
    held_mix = [see_ahead(load_episode(v), args.ahead) for v in held_val]
    scores = {"whole rounds, seed 2,000,001 (real frames)": score_reward_model(
        model, [see_ahead(e, args.ahead) for e in held]),
              "world model's validation recordings (real frames)": score_reward_model(model, held_mix)}
    if args.round_trip_episodes:
        rt = [see_ahead(round_trip(args.tokenizer, e), args.ahead) for e in held[:args.round_trip_episodes]]
        scores[f"{len(rt)} whole rounds through the tokenizer"] = score_reward_model(model, rt)
    text = table(scores)
    print(text)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out, extra={"trained_on": {
        "episodes": [str(v) for v in train_paths], "threshold_episodes": [str(v) for v in val_paths],
        "steps": args.steps, "batch": args.batch, "seconds": log["seconds"]}})
    args.results.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from common import machine

    (args.results / "reward.json").write_text(json.dumps({
        "command": "python experiments/reward_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "parameters": n_params, "model": str(args.out),
        "train": {k: v for k, v in log.items() if k != "loss"}, "loss_first_last_100": [
            float(np.mean(log["loss"][:100])), float(np.mean(log["loss"][-100:]))],
        "held_out": {"whole_rounds": [str(v) for v in held_full], "validation_recordings": [str(v) for v in held_val]},
        "scores": scores}, indent=1) + "\n")
    (args.results / "reward.md").write_text(text + "\n")
    print(f"-> {args.results / 'reward.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
