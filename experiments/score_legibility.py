"""Are Boxing's score digits legible through the frame tokenizer, and does the world model change them
when a punch lands? (docs/world-model.md)

The reader (per side: tens and units digit from the score region's pixels, the emulator RAM as labels) is
fitted on real frames of training recordings (the world model's, `--recordings`, and the reward model's
whole rounds, record seed 5), then reads held-out frames (whole rounds on record seed 2,000,001, never
trained on): real, and through the tokenizer's round trip (encode, decode). `--layout` is the frames'
(`magi.world.atari.FRAME_LAYOUTS`: "hud" keeps the score strip at the screen's resolution). A second
reader fitted on round trips of training frames asks whether the digits' information survives the
tokenizer at all. On the frames
where a score changes (a landed punch), the score reads right before and after (the change is legible)
in real frames, round trips, and the world model's rollouts at its play setting: 4 real frames ending
`--lead` frames before the punch, then frames under the recorded actions up to the punch's frame. A
"punch's frame" is the first whose strip shows the new score: in "hud_lag" the frame after the one the
punch lands on (`magi.world.atari.as_shown`), so with `--lead 1` the context ends on the landing itself.
With `--reward DIR` (a reward/end model, `magi.world.reward`) the same rollouts, and as many control
windows where neither score changes, are scored for the reward model inside the world model: every
predicted frame's reward called from the model's own frames against the emulator's, precision and recall
(exact frame and +-1), and the precision at the held-out rounds' own share of punch frames.

    OMP_NUM_THREADS=1 python experiments/score_legibility.py --out results/world_model/score_reader
    OMP_NUM_THREADS=1 python experiments/score_legibility.py --layout hud --model none \
        --vae runs/atari_tokenizer_hud/export --out results/world_model/score_reader_hud   # the tokenizer only
    OMP_NUM_THREADS=1 python experiments/score_legibility.py --layout hud_lag --model pretrained/atari \
        --reward pretrained/atari/reward --events 64 --frames 256 --lead 1 --out results/world_model/score_reader_shipped
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path("data_cache/atari")


def load(path: Path, every: int = 1):
    """An episode's frames uint8 (T, 3, H, W), RAM (T, 128), actions (T,) and rewards (T,), every `every` frame;
    RAM and rewards as the score strip shows them (`magi.world.atari.as_shown`: one frame late in "hud_lag")."""
    from magi.data.decode import read_all_frames
    from magi.world.atari import as_shown, load_actions, load_ram, load_rewards, recorded_layout

    frames = read_all_frames(path).numpy()
    layout = recorded_layout(path)
    ram, actions, rewards = as_shown(load_ram(path), layout), load_actions(path), as_shown(load_rewards(path)[0], layout)
    T = min(len(frames), len(ram))
    return frames[:T:every], ram[:T:every], actions[:T:every], rewards[:T:every]


def reward_in_rollouts(model, rolled: np.ndarray, actions: np.ndarray, truth: np.ndarray, first: int,
                       share: float) -> dict:
    """The reward/end model on the world model's frames: `rolled` uint8 (N, L, 3, H, W), the actions taken
    at each frame (N, L), the emulator's rewards (N, L); frames `first`..L-1 are the model's. Precision and
    recall of the frames called rewarded (exact and +-1 frame), and the precision had punches made up
    `share` of the frames (the sample holds more: its rollouts were chosen around punches)."""
    from magi.world.reward import punch_counts, punch_scores

    N, L = rolled.shape[:2]
    F_ = model.frames
    idx = np.arange(first, L)[:, None] + np.arange(-(F_ - 1), 1)[None]  # (n, F): each predicted frame's window
    x = rolled[:, idx]  # (N, n, F, 3, H, W)
    a = actions[:, idx[:, :-1]]  # (N, n, F-1): the actions between the window's frames
    reward, _ = model.predict(x.reshape(-1, *x.shape[2:]), a.reshape(-1, F_ - 1))
    pred = reward.reshape(N, -1) != 0  # (N, n)
    real = truth[:, first:] != 0
    counts = punch_counts(pred, real)
    tp, fp, fn = (int(v) for v in counts[:3])
    recall = tp / max(tp + fn, 1)
    false_rate = fp / max(int((~real).sum()), 1)
    return {"rollouts": N, "predicted_frames": int(pred.size), "punch_frames": tp + fn, **punch_scores(counts),
            "false_calls_per_frame": round(false_rate, 4), "punch_share_held_out": round(share, 4),
            "precision_at_held_out_share": round(recall * share / max(recall * share + false_rate * (1 - share), 1e-9), 3)}


def round_trip(vae, frames: np.ndarray, batch: int = 128) -> np.ndarray:
    from magi.video_io import to_float_video, to_uint8_video

    out = []
    with torch.no_grad():
        for s in range(0, len(frames), batch):
            x = torch.from_numpy(frames[s:s + batch])[None]
            out.append(to_uint8_video(vae.decode(vae.encode(to_float_video(x))))[0].numpy())
    return np.concatenate(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 `a` against `b` (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return round(float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10))), 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/world_model/score_reader"))
    p.add_argument("--model", default="pretrained/atari", help="the world model ('none': the tokenizer only)")
    p.add_argument("--vae", help="the tokenizer (default: the model's)")
    p.add_argument("--layout", default="screen", choices=("screen", "hud", "hud_lag"), help="the frames' layout")
    p.add_argument("--recordings", type=Path, help="the world model's training recordings (default: "
                   "data_cache/atari/boxing64, or boxing64_hud for --layout hud)")
    p.add_argument("--frames", type=int, default=1536, help="held-out frames read (besides the punches)")
    p.add_argument("--events", type=int, default=128, help="held-out punches")
    p.add_argument("--lead", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mask-steps", type=int, default=1, help="the rollouts' sampler (default: the play setting, "
                   "1 mask step x 5 DDIM steps, a window of 3, no guidance)")
    p.add_argument("--diffusion-steps", type=int, default=5)
    p.add_argument("--cfg", type=float, default=1.0, help="action guidance scale")
    p.add_argument("--reward", help="a reward/end model folder: scored on the world model's rollouts")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from magi.pretrained import load_pretrained
    from magi.vae import load_vae
    from magi.world.score import REGIONS, ScoreReader, accuracy, ram_scores
    from magi.world.evaluate import roll_out
    from reward_model import HELD_OUT_SEED, TRAIN_FULL_SEED, full_rounds, recordings_root

    ckpt = None if args.model == "none" else load_pretrained(args.model)
    if ckpt is None and args.vae is None:
        p.error("--model none needs --vae")
    vae = load_vae(args.vae) if args.vae else ckpt.vae
    recordings = args.recordings or recordings_root(args.layout)
    regions = REGIONS[args.layout]
    rng = np.random.default_rng(0)
    train_paths = sorted((recordings / "Boxing").glob("episode_00[0-1]?.mkv"))[:16] + \
        full_rounds(TRAIN_FULL_SEED, 16, args.layout)[2:10]
    fit = [load(v, every=3) for v in train_paths]
    fit_frames, fit_ram = np.concatenate([f for f, *_ in fit]), np.concatenate([r for _, r, *_ in fit])
    reader = ScoreReader(layout=args.layout).fit(fit_frames, fit_ram)
    pick = rng.choice(len(fit_frames), size=min(2048, len(fit_frames)), replace=False)
    reader_rt = ScoreReader(layout=args.layout).fit(round_trip(vae, fit_frames[pick]), fit_ram[pick])
    print(f"readers fitted on {len(fit_frames)} real / {len(pick)} round-trip frames", flush=True)

    held = [load(v) for v in full_rounds(HELD_OUT_SEED, 8, args.layout)]
    frames, ram, events = [], [], []  # events: (episode, t) where a score changes at t
    for i, (f, r, *_) in enumerate(held):
        take = rng.choice(len(f), size=args.frames // len(held), replace=False)
        frames.append(f[take])
        ram.append(r[take])
        s = ram_scores(r)
        for side in regions:
            for t in np.flatnonzero(np.diff(s[side]) != 0) + 1:
                if t - args.lead - 3 >= 0:
                    events.append((i, int(t), side))
    frames, ram = np.concatenate(frames), np.concatenate(ram)
    events = [events[j] for j in sorted(rng.choice(len(events), size=min(args.events, len(events)), replace=False))]
    rt = round_trip(vae, frames)
    report = {"command": "python experiments/score_legibility.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "what": __doc__.split("\n\n")[1].replace("\n", " "), "layout": args.layout,
              "tokenizer": args.vae or ckpt.vae_spec,
              "regions": {k: [r.start, r.stop, c.start, c.stop] for k, (r, c) in regions.items()},
              "fit_frames": len(fit_frames), "held_out_frames": len(frames), "punches": len(events),
              "read_right": {"real frames": accuracy(reader, frames, ram),
                             "tokenizer round trip": accuracy(reader, rt, ram),
                             "tokenizer round trip, reader fitted on round trips": accuracy(reader_rt, rt, ram)},
              "round_trip_psnr_db": {"score strip (rows 0-6)": psnr(rt[:, :, :7], frames[:, :, :7]),
                                     "ring (rows 8-63)": psnr(rt[:, :, 8:], frames[:, :, 8:])}}
    # the punches: before (t - 1) and after (t), real / round trip / the world model's rollout
    before = np.stack([held[i][0][t - 1] for i, t, _ in events])
    after = np.stack([held[i][0][t] for i, t, _ in events])
    ram_before = np.stack([held[i][1][t - 1] for i, t, _ in events])
    ram_after = np.stack([held[i][1][t] for i, t, _ in events])
    sides = np.array([side for _, _, side in events])

    def change(read_before: dict, read_after: dict) -> dict:
        out = {}
        for side in regions:
            m = sides == side
            tb, ta = ram_scores(ram_before)[side][m], ram_scores(ram_after)[side][m]
            rb, ra = read_before[side][m], read_after[side][m]
            out[side] = {"punches": int(m.sum()), "read_right_after": round(float((ra == ta).mean()), 3),
                         "changed_and_right": round(float(((rb == tb) & (ra == ta)).mean()), 3),
                         "read_changed": round(float((ra != rb).mean()), 3)}
        return out

    report["punches_read"] = {
        "real frames": change(reader.read(before), reader.read(after)),
        "tokenizer round trip": change(reader.read(round_trip(vae, before)), reader.read(round_trip(vae, after))),
        "tokenizer round trip, reader fitted on round trips": change(reader_rt.read(round_trip(vae, before)),
                                                                     reader_rt.read(round_trip(vae, after)))}
    if ckpt is not None:
        k = ckpt.model.config.num_frames - 1
        length = k + args.lead  # an event's last frame is the punch's frame t
        windows = [(i, t - length + 1) for i, t, _ in events]  # context ends `lead` frames before the punch
        if args.reward:  # as many windows where neither score changes (the reward model's negatives)
            moved = [np.any([np.diff(v) != 0 for v in ram_scores(r).values()], axis=0) for _, r, *_ in held]  # (T-1,)
            still = [(i, s) for i, m in enumerate(moved) for s in range(0, len(m) + 1 - length, length)
                     if not m[s:s + length - 1].any()]
            windows += [still[j] for j in rng.choice(len(still), size=min(len(events), len(still)), replace=False)]
        context = torch.stack([torch.from_numpy(held[i][0][s:s + k]) for i, s in windows])
        acts = torch.stack([torch.from_numpy(held[i][2][s:s + length].astype(np.int64)) for i, s in windows])
        with torch.no_grad():  # (windows, length, 3, H, W)
            rolled_all = roll_out(ckpt.model, vae, context, acts, length, mask_steps=args.mask_steps,
                                  diffusion_steps=args.diffusion_steps, sampler="ddim", temperature=1.0, seed=0,
                                  batch_size=64, progress=False, window=3, cfg=args.cfg).numpy()
        rolled = rolled_all[:len(events)]
        if args.reward:
            from magi.world.reward import RewardEndModel

            truth = np.stack([held[i][3][s:s + length] for i, s in windows])
            share = float(np.mean(np.concatenate([h[3] for h in held]) != 0))
            report["reward_model"] = args.reward
            report["reward_in_world_model"] = reward_in_rollouts(
                RewardEndModel.from_pretrained(args.reward), rolled_all, acts.numpy(), truth, k, share)
            print(json.dumps(report["reward_in_world_model"], indent=1))
        setting = ("play setting" if (args.mask_steps, args.diffusion_steps, args.cfg) == (1, 5, 1.0) else
                   f"{args.mask_steps} mask x {args.diffusion_steps} DDIM steps, cfg {args.cfg:g}")
        report["rollouts"] = {"mask_steps": args.mask_steps, "diffusion_steps": args.diffusion_steps, "cfg": args.cfg,
                              "window": 3, "lead": args.lead}
        report["punches_read"][f"world model rollout ({setting}), reader fitted on round trips"] = change(
            reader_rt.read(rolled[:, -2]), reader_rt.read(rolled[:, -1]))
        report["punches_read"]["world model rollout: the score read at the punch equals the last context frame's"] = {
            side: round(float((reader_rt.read(rolled[:, -1])[side] == reader_rt.read(rolled[:, k - 1])[side])[sides == side].mean()), 3)
            for side in regions}
    lines = ["| frames | player read right | opponent read right |", "|---|---|---|"]
    for name, acc in report["read_right"].items():
        lines.append(f"| {name} | {acc['player']:.1%} | {acc['opponent']:.1%} |")
    lines += ["", "| on landed punches (frame t-1 -> t) | player: after right | player: before and after right | "
              "opponent: after right | opponent: before and after right |", "|---|---|---|---|---|"]
    for name, ch in report["punches_read"].items():
        if "player" in ch and isinstance(ch["player"], dict):
            lines.append(f"| {name} | {ch['player']['read_right_after']:.1%} | {ch['player']['changed_and_right']:.1%} | "
                         f"{ch['opponent']['read_right_after']:.1%} | {ch['opponent']['changed_and_right']:.1%} |")
    text = "\n".join(lines)
    print(text)
    print(json.dumps(report["punches_read"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score_reader.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "score_reader.md").write_text(text + "\n")
    print(f"-> {args.out / 'score_reader.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
