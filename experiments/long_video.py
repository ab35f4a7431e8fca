"""Long videos: 4x the training length with temporal interpolation and with the sliding window.

The CTF runs of `ctf_vs_mtf.py` (trained on 6-frame clips) continue 2 context frames of held-out videos
to 24 frames in both long-video modes of `Magi.generate`:
- "interpolate": the learned temporal position table is stretched over the longer video, all earlier
  frames stay in the KV cache;
- "window": positions stay those of training, the model sees only the last 5 frames (cache rebuilt).
PSNR against the ground truth per frame, adjacent-frame L2 curves, and a GIF per mode and dataset.

    python experiments/long_video.py [--datasets digits,atari]

CPU budget (one thread): ~2 min per dataset after `ctf_vs_mtf.py` has trained the CTF arms.
Writes results/reproduction/long_video.{json,png} and long_video_<dataset>_<mode>.gif.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CONTEXT, RESULTS, TRAIN_FRAMES, eval_clips, load, predict, reference, save_gif,  # noqa: E402
                    pyplot, save_figure, threads_from_env, video_metrics, write_json)

MODES = ("interpolate", "window")
LENGTH = 4 * TRAIN_FRAMES


def evaluate(datasets: list[str], num_clips: int, seed: int) -> dict:
    results = {"length": LENGTH, "train_frames": TRAIN_FRAMES, "context_frames": CONTEXT,
               "num_clips": num_clips, "datasets": {}}
    for dataset in datasets:
        model, vae, _ = load(f"{dataset}_ctf")
        batch = eval_clips(dataset, LENGTH, num_clips, seed=4)
        per = {}
        truth = reference(vae, batch)
        for mode in MODES:
            pred = predict(model, vae, batch, LENGTH, seed=seed, long_video=mode)
            m = video_metrics(pred, truth)
            per[mode] = {k: m[k] for k in ("psnr", "psnr_last", "psnr_predicted_frames", "ssim", "l2_pred",
                                           "l2_truth")}
            save_gif(RESULTS / f"long_video_{dataset}_{mode}.gif", pred, truth)
        results["datasets"][dataset] = per
    write_json(RESULTS / "long_video.json", results)
    plot(results, RESULTS / "long_video.png")
    return results


def plot(results: dict, path: Path) -> None:
    plt = pyplot()
    names = list(results["datasets"])
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 6.4), dpi=110, squeeze=False)
    for col, dataset in enumerate(names):
        for mode, color in (("interpolate", "C0"), ("window", "C2")):
            r = results["datasets"][dataset][mode]
            axes[0, col].plot(range(CONTEXT + 1, CONTEXT + 1 + len(r["psnr_predicted_frames"])),
                              r["psnr_predicted_frames"], color=color, label=mode)
            axes[1, col].plot(range(1, len(r["l2_pred"]) + 1), r["l2_pred"], color=color, label=mode)
        axes[1, col].plot(range(1, len(r["l2_truth"]) + 1), r["l2_truth"], "k--", label="ground truth")
        for ax in axes[:, col]:
            ax.axvline(TRAIN_FRAMES + 0.5, color="0.6", ls=":", lw=1)  # end of the training length
            ax.legend(fontsize=8)
        axes[0, col].set(title=f"{dataset}: {results['length']} frames", ylabel="PSNR (dB)")
        axes[1, col].set(xlabel="frame t", ylabel="adjacent-frame L2")
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="digits,atari")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = p.parse_args()
    threads_from_env()
    evaluate(args.datasets.split(","), args.clips, args.seed)


if __name__ == "__main__":
    main()
