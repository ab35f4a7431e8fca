"""Dynamic versus fixed frame interval in training (the paper's Figure 8).

The fixed-interval arm is the CTF moving-digits run of `ctf_vs_mtf.py` (every clip at interval 1); the
dynamic arm is the same model and recipe with each clip's interval drawn from 1..6 per epoch and given
to the model as a condition. (Digits move 0.5-1.5 px per frame on a 16 px canvas, so 6 already spans
slow to fast motion; the paper's 1..25 is for 25 fps real video.)

Both continue 2 context frames of held-out videos, sampled at intervals 1, 2, 4 and 6, to 24 frames (4x
the training length, temporal interpolation), and the adjacent-frame L2 curve of the generated videos is
compared with the ground truth's at the same interval: does the dynamic arm's curve stay on the truth's
instead of drifting? The fixed arm is conditioned on interval 1 (the only one it saw); the dynamic arm
on the clip's interval.

    python experiments/dynamic_interval.py            # train the dynamic arm (and the fixed one if
                                                      # ctf_vs_mtf.py has not), then evaluate

CPU budget (one thread): ~28 min per arm at 5,000 steps of batch 8 (0.3-0.4 s/step); evaluation
~4 min. Resumable. Writes results/reproduction/dynamic_interval.{json,png} and a GIF per arm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CONTEXT, RESULTS, TRAIN_FRAMES, eval_clips, load, predict, reference, run_config,  # noqa: E402
                    pyplot, save_figure, save_gif, threads_from_env, train, video_metrics, write_json)

ARMS = {"fixed": "digits_ctf", "dynamic": "digits_ctf_dynamic"}
INTERVALS = (1, 2, 4, 6)
LENGTH = 4 * TRAIN_FRAMES


def evaluate(num_clips: int, seed: int) -> dict:
    results = {"length": LENGTH, "context_frames": CONTEXT, "intervals": list(INTERVALS),
               "num_clips": num_clips, "arms": {}}
    clips = {i: eval_clips("digits", LENGTH, num_clips, interval=i, seed=3) for i in INTERVALS}
    for arm, name in ARMS.items():
        model, vae, _ = load(name)
        per = {}
        for i in INTERVALS:
            batch = clips[i]
            cond = torch.ones_like(batch["interval"]) if arm == "fixed" else batch["interval"]
            pred = predict(model, vae, batch, LENGTH, seed=seed, interval=cond)
            truth = reference(vae, batch)  # equal to the clips for the gray digits
            m = video_metrics(pred, truth)
            gen, gt = torch.tensor(m["l2_pred"]), torch.tensor(m["l2_truth"])
            fut = slice(CONTEXT, None)  # adjacent pairs involving generated frames
            m["l2_abs_gap"] = float((gen[fut] - gt[fut]).abs().mean())
            m["l2_ratio_last_quarter"] = float(gen[-LENGTH // 4:].mean() / gt[-LENGTH // 4:].mean())
            per[str(i)] = {k: m[k] for k in ("psnr", "psnr_predicted_frames", "l2_pred", "l2_truth",
                                             "l2_abs_gap", "l2_ratio_last_quarter", "ssim")}
            if i == 4:
                save_gif(RESULTS / f"dynamic_interval_{arm}_interval4.gif", pred, truth)
        results["arms"][arm] = per
    write_json(RESULTS / "dynamic_interval.json", results)
    plot(results, RESULTS / "dynamic_interval.png")
    return results


def plot(results: dict, path: Path) -> None:
    plt = pyplot()
    n = len(results["intervals"])
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), dpi=110, sharey=True)
    for ax, i in zip(axes, results["intervals"]):
        for arm, color in (("fixed", "C3"), ("dynamic", "C0")):
            r = results["arms"][arm][str(i)]
            ax.plot(range(1, len(r["l2_pred"]) + 1), r["l2_pred"], color=color, label=f"{arm} interval")
        ax.plot(range(1, len(r["l2_truth"]) + 1), r["l2_truth"], "k--", label="ground truth")
        ax.axvline(CONTEXT - 0.5, color="0.6", ls=":", lw=1)
        ax.set(title=f"sampled at interval {i}", xlabel="frame t")
    axes[0].set_ylabel("adjacent-frame L2")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Generated {results['length']}-frame videos (4x training length) vs ground truth")
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = p.parse_args()
    threads_from_env()
    if args.stage in ("train", "all"):
        train(ARMS["fixed"], run_config("digits", "ctf", args.steps))  # no-op when ctf_vs_mtf.py ran it
        train(ARMS["dynamic"], run_config("digits", "ctf", args.steps, interval="dynamic", max_interval=6))
    if args.stage in ("eval", "all"):
        evaluate(args.clips, args.seed)


if __name__ == "__main__":
    main()
