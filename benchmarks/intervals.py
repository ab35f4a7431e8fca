"""Which frame intervals dynamic-interval training really trains (issue 12): the "capped" rule (each
video draws up to the longest interval it holds) against "uniform" (the paper: uniform on 1..25).

Video lengths are UCF-101-like by default (lognormal, median 168 frames, 29..1800, 9,537 videos: a
stand-in where UCF-101 is not on disk) or read from a real folder (`--root`, probed with PyAV).
Prints, per interval, how many videos hold a clip and the intervals trained over `--epochs` epochs
under both rules, and writes results/intervals.json and results/intervals.png.

    python benchmarks/intervals.py [--root data/UCF-101] [--num-frames 17] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402


def ucf_like_lengths(n: int = 9537, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(168), 0.6, n), 29, 1800).astype(int).tolist()


def main(argv: list[str] | None = None) -> int:
    from magi.data.clips import MAX_INTERVAL, UniformIntervals, choose_clip, interval_histogram, interval_holders

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="a folder of videos (default: UCF-101-like synthetic lengths)")
    p.add_argument("--num-frames", type=int, default=17)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.root:
        from magi.data import VideoFolder

        folder = VideoFolder(args.root, args.num_frames, interval="dynamic")
        lengths = [folder.video_frames(i) for i in range(len(folder))]
    else:
        lengths = ucf_like_lengths()
    lengths = [v for v in lengths if v >= args.num_frames]
    uniform = UniformIntervals(lengths, args.num_frames, MAX_INTERVAL)
    capped, dealt = [], []
    for epoch in range(args.epochs):
        for i, v in enumerate(lengths):
            capped.append(choose_clip(args.seed, epoch, i, args.num_frames, v, "dynamic")[0])
            dealt.append(uniform.choose(args.seed, epoch, i)[1])
    rows = {"videos_holding": interval_holders(lengths, args.num_frames),
            "capped": interval_histogram(capped), "uniform": interval_histogram(dealt)}
    print(f"{len(lengths)} videos, {args.num_frames}-frame clips, {args.epochs} epochs")
    print("interval  " + " ".join(f"{k:>5d}" for k in range(1, MAX_INTERVAL + 1)))
    for name, hist in rows.items():
        print(f"{name.replace('videos_', ''):9s} " + " ".join(f"{hist.get(k, 0):>5d}" for k in range(1, MAX_INTERVAL + 1)))
    for name in ("capped", "uniform"):
        counts = np.array([rows[name].get(k, 0) for k in range(1, MAX_INTERVAL + 1)], dtype=float)
        print(f"{name}: intervals 13..25 get {counts[12:].sum() / counts.sum():.1%} of clips "
              f"(uniform share 52.0%), max/min count {counts.max() / max(counts.min(), 1):.1f}")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), dpi=110)
    ax = fig.add_subplot()
    ks = np.arange(1, MAX_INTERVAL + 1)
    for off, name in ((-0.2, "capped"), (0.2, "uniform")):
        ax.bar(ks + off, [rows[name].get(int(k), 0) for k in ks], width=0.4, label=name)
    ax.set(xlabel="frame interval", ylabel=f"clips over {args.epochs} epochs",
           title=f"trained intervals, {len(lengths)} videos ({'folder' if args.root else 'UCF-101-like'})")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "intervals.png")
    write_results("intervals", {"source": args.root or "UCF-101-like lognormal lengths", "videos": len(lengths),
                                "num_frames": args.num_frames, "epochs": args.epochs, **rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
