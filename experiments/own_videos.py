"""How many steps until samples of a small own-video set are recognisable (README "Train on your own videos").

    python experiments/own_videos.py make DIR              # 4 classes x 12 synthetic clips + 1 broken file
    magi train --data DIR --out RUN --size 16 --vae pixels:2 --minutes 30 --set train.keep_last=100 \
        --set train.checkpoint_every=100
    python experiments/own_videos.py judge RUN [--steps 100,200,...]   # class-conditional samples, scored

The clips are a ball of a class-specific colour moving a class-specific way (red right, blue down,
green left, yellow up; 64 px, 40 frames, random start and textured background). A generated clip is
*recognisable* when its ball has the requested class's colour (nearest class colour to the mean of the
bright pixels, max channel > 150; the background stays below ~70) and moves the class's way (the ball
centroid's displacement over the clip, projected on the class's direction, is at least 2 px per 32 px
of frame; the truth moves ~5 px per 32 px in 8 frames) in at least 3/4 of its frames. Every real clip
passes. `judge` samples 4 clips per class from scratch (no context) at each checkpoint with
`magi sample --classes NAME` and prints the share that passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

CLASSES = {  # name: (rgb, velocity (dy, dx) in px per frame at 64 px)
    "red_right": ((230, 40, 40), (0.0, 1.5)),
    "blue_down": ((40, 80, 240), (1.5, 0.0)),
    "green_left": ((40, 220, 60), (0.0, -1.5)),
    "yellow_up": ((240, 220, 40), (-1.5, 0.0)),
}
NAMES = list(CLASSES)
COLOURS = np.array([c for c, _ in CLASSES.values()], float)
DIRECTIONS = np.array([v for _, v in CLASSES.values()], float)
DIRECTIONS /= np.linalg.norm(DIRECTIONS, axis=1, keepdims=True)


def make_clip(rgb, velocity, rng, frames: int = 40, size: int = 64, radius: int = 7) -> torch.Tensor:
    """uint8 (T, H, W, 3): a ball of colour `rgb` crossing a textured background at `velocity`."""
    ys, xs = np.mgrid[0:size, 0:size]
    texture = (40 + 25 * np.sin(xs / 7 + rng.uniform(0, 6)) * np.cos(ys / 9)).astype(np.float32)
    background = np.stack([texture * rng.uniform(0.6, 1.0) for _ in range(3)], -1)  # (H, W, 3)
    dy, dx = velocity
    y = size / 2 - dy * frames / 2 + rng.uniform(-8, 8) if dy else rng.uniform(radius + 4, size - radius - 4)
    x = size / 2 - dx * frames / 2 + rng.uniform(-8, 8) if dx else rng.uniform(radius + 4, size - radius - 4)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        frame = background.copy()
        frame[(ys - y - dy * t) ** 2 + (xs - x - dx * t) ** 2 <= radius * radius] = rgb
        out[t] = np.clip(frame, 0, 255)
    return torch.from_numpy(out)


def make(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    from magi.video_io import write_mp4

    rng = np.random.default_rng(seed)
    for name, (rgb, velocity) in CLASSES.items():
        for k in range(per_class):
            write_mp4(root / name / f"{name}_{k:02d}.mp4", make_clip(rgb, velocity, rng), fps=25)
    (root / NAMES[0] / "broken.mp4").write_bytes(b"not a video")  # a bad file, as real folders have
    return root


def judge_clip(video: np.ndarray, name: str) -> tuple[bool, bool]:
    """(colour right, motion right) of a uint8 (T, H, W, 3) clip meant to show class `name`."""
    want = NAMES.index(name)
    centres, colours = [], []
    for frame in video.astype(float):
        ball = frame.max(-1) > 150
        if ball.sum() < max(1, video.shape[1] // 8):
            continue
        ys, xs = np.nonzero(ball)
        centres.append((ys.mean(), xs.mean()))
        colours.append(frame[ball].mean(0))
    if len(centres) < 0.75 * len(video):
        return False, False
    colour = int(np.argmin(((COLOURS - np.mean(colours, 0)) ** 2).sum(1)))
    shift = np.array(centres[-1]) - np.array(centres[0])
    return colour == want, float(shift @ DIRECTIONS[want]) >= 2.0 * video.shape[1] / 32


def score(samples: Path) -> dict:
    """The share of a `magi sample` output's clips with the right colour, motion, and both."""
    from magi.video_io import read_video

    record = json.loads((samples / "samples.json").read_text())
    rows = [judge_clip(read_video(samples / f), n) for f, n in zip(record["files"]["mp4"], record["class_names"])]
    ok = np.array([(c, m, c and m) for c, m in rows], float).mean(0)
    return {"colour": round(float(ok[0]), 2), "motion": round(float(ok[1]), 2),
            "recognisable": round(float(ok[2]), 2), "clips": len(rows)}


def judge(run: Path, steps: list[int] | None, per_class: int = 4) -> list[dict]:
    state_steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    results = []
    for step in steps or state_steps:
        out = run / "judge" / f"step_{step}"
        subprocess.run([sys.executable, "-m", "magi.cli", "sample", str(run), "--step", str(step), "--out", str(out),
                        "--classes", ",".join(NAMES), "--num-samples", str(per_class), "--mask-steps", "8",
                        "--diffusion-steps", "50", "--sampler", "ddim", "--no-progress", "--no-gif",
                        "--overwrite"], check=True)
        results.append({"step": step, **score(out)})
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the synthetic class folder")
    m.add_argument("root", type=Path)
    j = sub.add_parser("judge", help="sample each checkpoint of a run by class name and score the clips")
    j.add_argument("run", type=Path)
    j.add_argument("--steps", help="comma-separated checkpoint steps (default: all)")
    args = p.parse_args(argv)
    if args.command == "make":
        print(f"wrote {make(args.root)}")
    else:
        judge(args.run, [int(s) for s in args.steps.split(",")] if args.steps else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
