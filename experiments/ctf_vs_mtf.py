"""CTF versus MTF at equal training steps and data (the paper's central claim, Table 4 / Figure 5).

Trains the same ~2M-parameter model twice on one dataset, once with Complete Teacher Forcing and once
with Masked Teacher Forcing, then scores both on held-out videos:
- the validation masked-prediction loss under the inference condition (complete context frames, as in
  generation), next to each model's loss under its own training condition;
- per-frame PSNR/SSIM of predictions from 2 context frames over 12 frames (twice the training length),
  for several sampling seeds (mean and spread), and the adjacent-frame L2 curves.

    python experiments/ctf_vs_mtf.py --dataset digits          # train both arms, then evaluate
    python experiments/ctf_vs_mtf.py --dataset digits --train-seeds 0,1,2   # three runs per arm (the report)
    python experiments/ctf_vs_mtf.py --dataset atari --only mtf --stage train   # one arm (side by side)

CPU budget (2-core machine, one thread per job, two jobs side by side): digits, 5,000 steps of batch 8
per arm: ~34 min CTF (0.35-0.45 s/step), ~24 min MTF; Atari, 3,000 steps: ~38 min CTF, ~30 min MTF with
a third job running (alone ~0.4 / 0.3 s/step); recording Atari <1 min once; evaluation ~2-4 min per
dataset. Resumable: a run continues from its newest checkpoint.
Writes results/reproduction/ctf_vs_mtf_<dataset>.{json,png} and GIFs of the worst and typical clips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CONTEXT, DIGITS, HORIZON, RESULTS, TRAIN_FRAMES, eval_clips, inference_loss, load,  # noqa: E402
                    predict, prepare_atari, reference, run_config, save_gif, threads_from_env, train,
                    pyplot, save_figure, video_metrics, write_json)

ARMS = ("ctf", "mtf")


def run_name(dataset: str, arm: str, train_seed: int) -> str:
    """Run directory name under runs/reproduction/: training seed 0 unsuffixed."""
    return f"{dataset}_{arm}" + (f"_seed{train_seed}" if train_seed else "")


def evaluate(dataset: str, steps: int, num_clips: int, seeds: list[int], train_seeds: list[int]) -> dict:
    results = {"dataset": dataset, "steps": steps, "context_frames": CONTEXT, "horizon": HORIZON,
               "train_frames": TRAIN_FRAMES, "num_clips": num_clips, "sampling_seeds": seeds,
               "train_seeds": train_seeds, "arms": {}}
    clips = {"short": eval_clips(dataset, TRAIN_FRAMES, num_clips, seed=1),
             # training clips (digits: the first training videos exactly; Atari: clips of the training
             # episodes), scored the same way: the gap to the held-out loss measures overfitting
             "seen": eval_clips(dataset, TRAIN_FRAMES, num_clips, seed=0, split="train"),
             "long": eval_clips(dataset, CONTEXT + HORIZON, num_clips, seed=2)}
    digits = None
    if dataset == "digits":  # is the predicted digit still the same digit? (PSNR cannot tell)
        from magi.evaluate import DigitClassifier

        o = DIGITS["data"]["options"]
        digits = DigitClassifier(o["size"], o["digit_size"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for arm in ARMS:
        per_train_seed = [score(run_name(dataset, arm, t), clips, seeds, digits, gifs=(t == train_seeds[0]))
                          for t in train_seeds]
        r = per_train_seed[0]  # the first training seed in full, every seed summarised below
        r["by_train_seed"] = {str(t): {k: x[k] for k in ("inference_loss", "inference_loss_moving_tokens")}
                              | {k: mean(x[k]) for k in ("psnr", "psnr_last")}
                              | ({"digit_kept_first": x["digit_kept"][0], "digit_kept_last": x["digit_kept"][-1]}
                                 if digits is not None else {})
                              for t, x in zip(train_seeds, per_train_seed)}
        results["arms"][arm] = r
    by_seed = {t: (results["arms"]["ctf"]["by_train_seed"][t], results["arms"]["mtf"]["by_train_seed"][t])
               for t in results["arms"]["ctf"]["by_train_seed"]}
    results["relative_by_train_seed"] = {t: {
        "inference_loss_mtf_over_ctf": m["inference_loss"] / c["inference_loss"],
        "moving_token_loss_mtf_over_ctf": m["inference_loss_moving_tokens"] / c["inference_loss_moving_tokens"],
        "psnr_last_ctf_minus_mtf_db": c["psnr_last"] - m["psnr_last"],
        "psnr_ctf_minus_mtf_db": c["psnr"] - m["psnr"],
    } for t, (c, m) in by_seed.items()}
    results["relative"] = {k: mean([v[k] for v in results["relative_by_train_seed"].values()])
                           for k in next(iter(results["relative_by_train_seed"].values()))}
    write_json(RESULTS / f"ctf_vs_mtf_{dataset}.json", results)
    plot(results, RESULTS / f"ctf_vs_mtf_{dataset}.png")
    return results


def score(name: str, clips: dict, seeds: list[int], digits, gifs: bool) -> dict:
    """Losses and prediction metrics of one trained run (all sampling seeds)."""
    model, vae, _ = load(name)
    with torch.no_grad():
        latents = vae.encode(clips["short"]["video"])  # (B, T, C, h, w)
        seen_latents = vae.encode(clips["seen"]["video"])  # (B, T, C, h, w)
    r = inference_loss(model, latents, clips["short"]["label"], clips["short"]["interval"])
    r["train_clips"] = inference_loss(model, seen_latents, clips["seen"]["label"], clips["seen"]["interval"])
    runs = []
    long = clips["long"]
    truth = reference(vae, long)  # (B, T, 3, H, W)
    for s in seeds:
        pred = predict(model, vae, long, CONTEXT + HORIZON, seed=s)
        runs.append(video_metrics(pred, truth))
        if digits is not None:
            runs[-1]["digit_kept"] = digits.agreement(pred[:, CONTEXT:], truth[:, CONTEXT:]).tolist()
        if gifs and s == seeds[0]:
            order = torch.argsort(_clip_psnr(pred, truth))  # worst first
            stem = "ctf_vs_mtf_" + name.split("_seed")[0]
            save_gif(RESULTS / f"{stem}_worst.gif", pred[order], truth[order])
            save_gif(RESULTS / f"{stem}.gif", pred, truth)
    r["per_seed"] = runs
    r["psnr"] = [m["psnr"] for m in runs]
    r["psnr_last"] = [m["psnr_last"] for m in runs]
    r["ssim"] = [m["ssim"] for m in runs]
    if digits is not None:  # (horizon,) mean over sampling seeds
        r["digit_kept"] = torch.tensor([m["digit_kept"] for m in runs]).mean(0).tolist()
    r["psnr_predicted_frames"] = torch.tensor([m["psnr_predicted_frames"] for m in runs]).mean(0).tolist()
    r["l2_pred"] = torch.tensor([m["l2_pred"] for m in runs]).mean(0).tolist()
    r["l2_truth"] = runs[0]["l2_truth"]
    return r


def _clip_psnr(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    from magi.evaluate.metrics import psnr
    from magi.video_io import to_uint8

    ps = psnr(to_uint8(pred), to_uint8(truth))[:, CONTEXT:]  # (B, H)
    return torch.where(torch.isfinite(ps), ps, torch.full_like(ps, 99.0)).mean(1)


def plot(results: dict, path: Path) -> None:
    plt = pyplot()
    kept = "digit_kept" in results["arms"]["ctf"]
    fig, axes = plt.subplots(1, 4 if kept else 3, figsize=(17 if kept else 13, 3.6), dpi=110)
    for arm, color in (("ctf", "C0"), ("mtf", "C3")):
        r = results["arms"][arm]
        per_seed = torch.tensor([m["psnr_predicted_frames"] for m in r["per_seed"]])  # (seeds, H)
        x = range(1, per_seed.shape[1] + 1)
        axes[0].plot(x, per_seed.mean(0), color=color, label=arm.upper())
        axes[0].fill_between(x, per_seed.min(0).values, per_seed.max(0).values, color=color, alpha=0.2)
        axes[1].plot(range(len(r["inference_loss_per_frame"])), r["inference_loss_per_frame"], "o-",
                     color=color, label=arm.upper())
        axes[2].plot(range(1, len(r["l2_pred"]) + 1), r["l2_pred"], color=color, label=arm.upper())
        if kept:
            axes[3].plot(x, r["digit_kept"], color=color, label=arm.upper())
    axes[2].plot(range(1, len(r["l2_truth"]) + 1), r["l2_truth"], "k--", label="ground truth")
    axes[0].axvline(TRAIN_FRAMES - CONTEXT + 0.5, color="0.6", ls=":", lw=1)
    axes[0].set(xlabel="predicted frame", ylabel="PSNR (dB)", title="prediction from 2 frames")
    axes[1].set(xlabel="frame index", ylabel="diffusion loss", title="inference-condition val. loss")
    axes[2].set(xlabel="frame t", ylabel="L2(x_t, x_t-1)", title="adjacent-frame L2")
    if kept:
        axes[3].axvline(TRAIN_FRAMES - CONTEXT + 0.5, color="0.6", ls=":", lw=1)
        axes[3].set(xlabel="predicted frame", ylabel="share of clips", ylim=(0, 1),
                    title="digit kept (classifier agrees with truth)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"CTF vs MTF on {results['dataset']} ({results['steps']} steps each)")
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["digits", "atari"], required=True)
    p.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    p.add_argument("--only", choices=ARMS, help="train one arm only")
    p.add_argument("--steps", type=int, help="training steps per arm (default: 5000 digits, 3000 atari)")
    p.add_argument("--train-seeds", default="0", help="training seeds, comma-separated (one run per arm "
                   "and seed; seed 0 in runs/reproduction/<dataset>_<arm>, others with a _seed<N> suffix)")
    p.add_argument("--clips", type=int, default=32, help="held-out clips")
    p.add_argument("--sampling-seeds", default="0,1,2")
    args = p.parse_args()
    threads_from_env()
    args.steps = args.steps or {"digits": 5000, "atari": 3000}[args.dataset]
    if args.dataset == "atari":
        prepare_atari()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    if args.stage in ("train", "all"):
        for seed in train_seeds:
            for arm in ([args.only] if args.only else ARMS):
                train(run_name(args.dataset, arm, seed), run_config(args.dataset, arm, args.steps, seed=seed))
    if args.stage in ("eval", "all"):
        evaluate(args.dataset, args.steps, args.clips, [int(s) for s in args.sampling_seeds.split(",")],
                 train_seeds)


if __name__ == "__main__":
    main()
