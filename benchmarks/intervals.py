"""Which clips dynamic-interval training really trains, under each rule (`magi.data.clips`):
"video_first" (the paper's order: a video, then its interval uniformly from 1..25, clamped to what the
video holds), "interval_first" (every interval equally often, the video drawn among those that hold it)
and "capped" (each video draws up to the longest interval it holds).

Video lengths are UCF-101-like by default (lognormal, median 168 frames, 29..1800, 9,537 videos in 101
classes whose median lengths differ (class log-offset std 0.3): a stand-in where UCF-101 is not on
disk) or read from a real folder (`--root`, probed with PyAV). Prints the three shares side by side
for each rule, per interval, per video (draws per epoch, never drawn) and per class, over `--epochs`
epochs; for the decision of what a too-short video gives under video_first it also counts what holding
the last frame (padding to the drawn interval) would cost. Writes results/intervals.json and .png.

    python benchmarks/intervals.py [--root data/UCF-101] [--num-frames 17] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402


def ucf_like_lengths(n: int = 9537, seed: int = 0, classes: int = 101) -> tuple[list[int], list[int]]:
    """(frame counts, class labels): lognormal lengths whose median depends on the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    offset = rng.normal(0.0, 0.3, classes)[labels]
    lengths = np.clip(rng.lognormal(np.log(168) + offset, 0.6, n), 29, 1800).astype(int)
    return lengths.tolist(), labels.tolist()


def main(argv: list[str] | None = None) -> int:
    from magi.data.clips import INTERVAL_SAMPLING, MAX_INTERVAL, describe_shares, max_interval_for, rule_shares

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
        labels = [folder.label_of(i) for i in range(len(folder))]
    else:
        lengths, labels = ucf_like_lengths()
    found = rule_shares(lengths, args.num_frames, MAX_INTERVAL, args.seed, labels, args.epochs)
    print(f"{found['videos']} videos, {args.num_frames}-frame clips, {args.epochs} epochs")
    summary = {}
    for rule in INTERVAL_SAMPLING:
        shares = found["rules"][rule]
        print(describe_shares(rule, shares))
        counts = np.array([shares["per_interval"].get(k, 0) for k in range(1, MAX_INTERVAL + 1)], dtype=float)
        summary[rule] = {"long_share": float(counts[12:].sum() / counts.sum()),
                         "max_over_min": float(counts.max() / max(counts.min(), 1))}
        print(f"  intervals 13..25: {summary[rule]['long_share']:.1%} of clips (uniform: 52.0%), "
              f"max/min interval count {summary[rule]['max_over_min']:.1f}")
    # the alternative decision for video_first: pad a too-short clip by holding the video's last frame
    caps = np.array([max_interval_for(args.num_frames, n) for n in lengths if n >= args.num_frames])
    lengths_ok = np.array([n for n in lengths if n >= args.num_frames])
    ks = np.arange(1, MAX_INTERVAL + 1)
    covered = np.minimum((lengths_ok[:, None] - 1) // ks[None, :] + 1, args.num_frames)  # real frames per clip
    padded = 1 - covered / args.num_frames  # (videos, intervals): share of a clip's frames that are copies
    pad = {"padded_share_all": float(padded.mean()), "padded_share_13_25": float(padded[:, 12:].mean()),
           "clips_with_padding": float((caps[:, None] < ks[None, :]).mean())}
    print(f"padding instead (not implemented): {pad['clips_with_padding']:.1%} of clips padded, "
          f"{pad['padded_share_all']:.1%} of all frames copies ({pad['padded_share_13_25']:.1%} at intervals 13..25)")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), dpi=110)
    ax = fig.add_subplot()
    for off, rule in zip((-0.27, 0.0, 0.27), INTERVAL_SAMPLING):
        hist = found["rules"][rule]["per_interval"]
        ax.bar(ks + off, [hist.get(int(k), 0) for k in ks], width=0.27, label=rule)
    ax.set(xlabel="frame interval", ylabel=f"clips over {args.epochs} epochs",
           title=f"trained intervals, {found['videos']} videos ({'folder' if args.root else 'UCF-101-like'})")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "intervals.png")
    write_results("intervals", {"source": args.root or "UCF-101-like lognormal lengths, 101 classes",
                                "num_frames": args.num_frames, "summary": summary, "padding": pad, **found})
    return 0


if __name__ == "__main__":
    sys.exit(main())
