"""Does the model's score change when a punch lands? (a target of docs/design.md §8, measured instead of eyeballed.)

Boxing keeps each side's score in the emulator RAM (byte 18: the player, 19: the opponent). On held-out
episodes every frame where a score changes is an *event*. For each event the model gets the 4 real
frames ending `lead` frames before it, then rolls out `horizon` frames under the recorded actions, so
the punch lands inside the rollout; *controls* are windows of the same episodes where neither score
changes. In each frame the score's digits (3 px tall at 64x64, rows 0-4; the player's at columns
14-23, the opponent's at 39-48) are compared between the last rollout frame and the last context
frame (the mean absolute difference of the region, 0-255). Reported, per side, for the model and
for the emulator: that change on events and on controls, and the fraction of events whose change
exceeds the 95th percentile of the controls' (1.0 = every landed punch visibly changes the score,
~0.05 = the model's score region changes no more than when nothing happens). A GIF shows the first
events, emulator | model, the predicted frames framed in red.

    python experiments/score_on_punch.py pretrained/atari --out results/world_model/score_on_punch
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SCORE_BYTES = {"player": 18, "opponent": 19}
REGIONS = {"player": (slice(0, 5), slice(14, 24)), "opponent": (slice(0, 5), slice(39, 49))}  # (rows, cols) at 64x64


def windows(dataset, context: int, horizon: int, lead: int, per_side: int, seed: int = 0):
    """[(episode index, start, kind)], kind in 'player' / 'opponent' / 'control': event windows put the
    score change `lead` frames after the last context frame; controls hold neither score still."""
    from magi.world.atari import load_ram

    rng = np.random.default_rng(seed)
    length = context + horizon
    found = {"player": [], "opponent": [], "control": []}
    for i in range(len(dataset)):
        ram = load_ram(dataset.path_of(i)).astype(int)  # (T, 128)
        frames = min(len(ram), dataset.video_frames(i))
        changed = {side: np.flatnonzero(np.diff(ram[:frames, b]) != 0) + 1 for side, b in SCORE_BYTES.items()}
        for side, times in changed.items():  # the score shows its new value from frame t
            for t in times:
                start = t - lead - context + 1
                if 0 <= start and start + length <= frames:
                    found[side].append((i, int(start), side))
        quiet = np.ones(frames, bool)
        for times in changed.values():
            for t in times:
                quiet[max(0, t - length):t + 1] = False
        starts = [s for s in range(0, frames - length) if quiet[s:s + length].all()]
        for s in rng.choice(starts, size=min(len(starts), 8), replace=False) if starts else []:
            found["control"].append((i, int(s), "control"))
    chosen = []
    for kind, items in found.items():
        order = rng.permutation(len(items))[:per_side]
        chosen += [items[j] for j in sorted(order)]
    return chosen


def region_change(video: np.ndarray, side: str, context: int) -> np.ndarray:
    """Mean |last frame - last context frame| over the score region: uint8 (N, L, 3, H, W) -> (N,)."""
    rows, cols = REGIONS[side]
    v = video.astype(np.float32)
    return np.abs(v[:, -1, :, rows, cols] - v[:, context - 1, :, rows, cols]).mean(axis=(1, 2, 3))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a world-model folder, run or checkpoint")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--events", type=int, default=32, help="events per side (and controls)")
    p.add_argument("--lead", type=int, default=4, help="frames from the last context frame to the score change")
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--mask-steps", type=int, default=4)
    p.add_argument("--diffusion-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from magi.data import build_dataset
    from magi.world.evaluate import roll_out, write_rollout_gif
    from magi.pretrained import load_pretrained

    ckpt = load_pretrained(args.model)
    k = max(1, ckpt.model.config.num_frames - 1)
    length = k + args.horizon
    options = dict(((ckpt.run_config or {}).get("data") or {}).get("options") or {})
    options.update(split="val", num_frames=length, interval=1)
    dataset = build_dataset("atari", **options)
    chosen = windows(dataset, k, args.horizon, args.lead, args.events)
    real = torch.stack([dataset.frames(i, num_frames=length, interval=1, start=s) for i, s, _ in chosen])  # (N, L, 3, H, W)
    actions = torch.stack([dataset.actions_of(i, s, 1, length) for i, s, _ in chosen])  # (N, L)
    pred = roll_out(ckpt.model, ckpt.vae, real[:, :k], actions, length, mask_steps=args.mask_steps,
                    diffusion_steps=args.diffusion_steps, sampler="ddim", temperature=1.0, seed=0,
                    batch_size=64, progress=True)  # (N, L, 3, H, W) uint8, context through the VAE
    kinds = np.array([kind for _, _, kind in chosen])
    report = {"model": args.model, "context_frames": k, "horizon": args.horizon, "lead": args.lead,
              "setting": {"mask_steps": args.mask_steps, "diffusion_steps": args.diffusion_steps, "sampler": "ddim"},
              "regions": {side: [rows.start, rows.stop, cols.start, cols.stop] for side, (rows, cols) in REGIONS.items()},
              "counts": {kind: int((kinds == kind).sum()) for kind in ("player", "opponent", "control")},
              "what": __doc__.split("\n\n")[1].replace("\n", " "), "sides": {}}
    for side in REGIONS:
        entry = {}
        for who, video in (("emulator", real.numpy()), ("model", pred.numpy())):
            change = region_change(video, side, k)
            events, controls = change[kinds == side], change[kinds == "control"]
            threshold = float(np.percentile(controls, 95))
            entry[who] = {"change_on_events": round(float(events.mean()), 2),
                          "change_on_controls": round(float(controls.mean()), 2),
                          "control_p95": round(threshold, 2),
                          "events_above_control_p95": round(float((events > threshold).mean()), 3)}
        report["sides"][side] = entry
        print(f"{side:9s} emulator: {entry['emulator']}\n{'':9s} model:    {entry['model']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score_on_punch.json").write_text(json.dumps(report, indent=1) + "\n")
    show = [j for j, kind in enumerate(kinds) if kind == "player"][:6]
    if show:
        write_rollout_gif(args.out / "player_punches.gif", real, pred, show, k, fps=6)
    print(f"-> {args.out / 'score_on_punch.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
