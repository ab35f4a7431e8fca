"""World-model quality against training steps, CTF next to MTF (docs/reproduction.md).

Reads a `magi eval world-model` result over several checkpoints of the same runs (each model records
its step and teacher forcing) and plots the player's position error over the first 8 predicted frames
with the true and the shuffled actions, and the mean PSNR, against the step. Several result files of the
same evaluation (same episodes, policy and settings: checkpoints evaluated as they were written) join into
one curve; `--reference NAME` draws a model of the results (say the shipped one) as a level line instead.

    magi eval world-model ctf750=runs/atari_ctf_keep/checkpoints/750 ... mtf4625=... \\
        --out results/world_model/learning_curve --rollouts 16 --horizon 8
    python experiments/world_model_curve.py results/world_model/learning_curve/world_model.json
    python experiments/world_model_curve.py runs/ev_a/world_model.json runs/ev_b/world_model.json \\
        --reference shipped --target 1.5 --out results/world_model/rebuild_hud/learning_curve.png
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from magi.world.evaluate import _mean


def curves(result: dict, skip: tuple[str, ...] = ()) -> dict:
    """{teacher forcing: [(step, summary), ...] sorted by step}, leaving out the models named in `skip`."""
    out = defaultdict(list)
    for name, runs in result["models"].items():
        if name not in skip:
            out[runs["model"]["teacher_forcing"]].append((runs["model"]["step"], runs["summary"]))
    return {tf: sorted(points, key=lambda p: p[0]) for tf, points in out.items()}


def merge(paths: list[str]) -> dict:
    """One result from several of the same evaluation: their models together; anything else that differs
    (the episodes' game, the settings, the policy, the baselines) is an error naming the file."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    merged = dict(results[0], models={})
    for path, result in zip(paths, results):
        for key in ("game", "config", "policy", "baselines"):
            if result.get(key) != results[0].get(key):
                raise SystemExit(f"{path}: its {key!r} differs from {paths[0]}'s; only results of the same "
                                 "evaluation join into one curve")
        clash = sorted(set(merged["models"]) & set(result["models"]))
        if clash:
            raise SystemExit(f"{path}: model name(s) {', '.join(clash)} already in an earlier file")
        merged["models"].update(result["models"])
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="world_model.json of a `magi eval world-model` over several "
                   "checkpoints, or several of the same evaluation")
    p.add_argument("--out", help="PNG (default: learning_curve.png next to the first JSON)")
    p.add_argument("--reference", action="append", default=[], help="a model in the results drawn as a level "
                   "line, not a point of the curve (repeatable)")
    p.add_argument("--target", type=float, default=2.0, help="the player-error target drawn (round 1: 2 px; "
                   "round 3, person policy: 1.5 px)")
    args = p.parse_args()
    result = merge(args.results)
    unknown = sorted(set(args.reference) - set(result["models"]))
    if unknown:
        p.error(f"--reference {', '.join(unknown)}: not a model of the results ({', '.join(result['models'])})")
    out = Path(args.out or Path(args.results[0]).with_name("learning_curve.png"))
    base = result["baselines"]["copy_last_frame"]
    copy_err = _mean(base["error_px"], 0, 8)  # as `format_table` reports the baseline
    copy_psnr = _mean(base["psnr"], 0, len(base["psnr"]))

    fig = Figure(figsize=(10, 4), dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for tf, points in curves(result, tuple(args.reference)).items():
        steps = [s for s, _ in points]
        line = ax1.plot(steps, [m["player_error_first8_px"] for _, m in points], "o-", label=f"{tf}, true actions")[0]
        ax1.plot(steps, [m["player_error_first8_shuffled_px"] for _, m in points], "o:", color=line.get_color(),
                 label=f"{tf}, shuffled actions")
        ax2.plot(steps, [m["psnr_mean"] for _, m in points], "o-", color=line.get_color(), label=tf)
        for step, m in points:
            print(f"{tf} {step:6d}  err@1-8 {m['player_error_first8_px']:5.2f} true, "
                  f"{m['player_error_first8_shuffled_px']:5.2f} shuffled  PSNR {m['psnr_mean']:5.2f}")
    for name in args.reference:
        m = result["models"][name]["summary"]
        line = ax1.axhline(m["player_error_first8_px"], color="0.5", ls=":", label=f"{name}, true actions")
        ax2.axhline(m["psnr_mean"], color=line.get_color(), ls=":", label=name)
        print(f"{name:>10s}  err@1-8 {m['player_error_first8_px']:5.2f} true, "
              f"{m['player_error_first8_shuffled_px']:5.2f} shuffled  PSNR {m['psnr_mean']:5.2f}")
    ax1.axhline(copy_err, color="k", ls="--", label="copy last frame")
    ax1.axhline(args.target, color="g", ls="-.", lw=0.8, label=f"target ({args.target:g} px)")
    ax2.axhline(copy_psnr, color="k", ls="--", label="copy last frame")
    ax1.set(xlabel="training step", ylabel="player error, first 8 frames (px at 64x64, log scale)",
            title=f"{result['game']}: controllability", yscale="log")
    ax1.yaxis.set_major_formatter(ScalarFormatter())  # early checkpoints are far off; log keeps the end legible
    ax1.yaxis.set_minor_formatter(ScalarFormatter())
    ax2.set(xlabel="training step", ylabel=f"PSNR over {result['config']['horizon']} steps (dB)",
            title="frames vs emulator")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    policy = (result.get("policy") or {}).get("name", "recorded")
    fig.text(0.01, 0.01, f"python experiments/world_model_curve.py {' '.join(args.results)}  ({policy} policy; "
             f"rollouts from `magi eval world-model`)", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
