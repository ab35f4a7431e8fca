"""The world-model ladder (docs/world-model.md#training): each rung's quality against its CPU budget.

Reads `magi eval world-model` results (any number; every model in them is a point), groups the points
into rungs by a name prefix (`tokens1000` -> rung `tokens`), and writes a table (markdown + JSON) and a
plot of the player's error over the first 8 predicted frames against the training step and the wall
time, one line per rung. The steps and wall time are those the evaluation recorded (all the training
behind the model, earlier fine-tuning stages included), else read off the checkpoint (one training
thread per run; two runs shared this 2-core machine side by side, so rungs trained together had the
same CPU budget per step of wall time). The cost column is the CPU ms a frame of the play stream took at
the evaluated setting (batch 1, decode included), where the evaluation recorded it.

    python experiments/world_model_ladder.py results/world_model/ladder/step*/world_model.json \\
        --rung "tokens=learned colour tokens" --rung "noise=+ noised context (0.5)" \\
        --out results/world_model/ladder
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from magi.checkpoint import training_behind

COLUMNS = ("step", "hours", "psnr_mean", "copy_psnr", "psnr_step1_above_copy_db", "psnr_above_copy_steps",
           "player_error_first8_px", "player_error_first8_shuffled_px", "player_error_first8_null_px",
           "opponent_error_first8_px")


def points(results: list[Path]) -> dict[str, list[dict]]:
    """{rung prefix: [row, ...] sorted by step}."""
    rungs = defaultdict(list)
    for path in results:
        result = json.loads(path.read_text())
        copy = result["baselines"]["copy_last_frame"]
        copy_psnr = sum(copy["psnr"]) / len(copy["psnr"])
        for name, entry in result["models"].items():
            rung = re.sub(r"\d+$", "", name)
            s, m = entry["summary"], entry["model"]
            # recorded at evaluation time (earlier fine-tuning stages included), else read off the checkpoint
            trained = m.get("trained") or training_behind(m["checkpoint"])
            step = trained["steps"] if trained else m["step"]
            hours = trained["wall_time_s"] / 3600 if trained else None
            rungs[rung].append({"name": name, "source": str(path), "step": step,
                                "hours": hours, "copy_psnr": copy_psnr,
                                "copy_error_first8_px": sum(copy["error_px"][:8]) / len(copy["error_px"][:8]),
                                "setting": entry.get("setting"), "vae": m.get("vae"),
                                "parameters": m.get("parameters"), **s})
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in rungs.items()}


def table(rungs: dict[str, list[dict]], labels: dict[str, str]) -> str:
    lines = ["| rung | params | step | wall h | CPU ms/frame | PSNR | copy | step-1 vs copy | >copy "
             "| player true / shuffled / null (px) | shuffled÷true | opponent (px) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rung, rows in rungs.items():
        for r in rows:
            hours = "–" if r["hours"] is None else f"{r['hours']:.2f}"
            params = "–" if r["parameters"] is None else f"{r['parameters'] / 1e6:.1f}M"
            # evaluations before the cost was recorded: "–"
            cost = "–" if r.get("cpu_ms_per_frame") is None else f"{r['cpu_ms_per_frame']:.0f}"
            lines.append(
                f"| {labels.get(rung, rung)} | {params} | {r['step']} | {hours} | {cost} | {r['psnr_mean']:.2f} "
                f"| {r['copy_psnr']:.2f} "
                f"| {r['psnr_step1_above_copy_db']:+.2f} | {r['psnr_above_copy_steps']} "
                f"| {r['player_error_first8_px']:.2f} / {r['player_error_first8_shuffled_px']:.2f} / "
                f"{r['player_error_first8_null_px']:.2f} | {r['shuffled_over_true_first8']:.2f} "
                f"| {r['opponent_error_first8_px']:.2f} |")
    return "\n".join(lines)


def plot(rungs: dict[str, list[dict]], labels: dict[str, str], out: Path) -> None:
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for rung, rows in rungs.items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["player_error_first8_px"] for r in rows], "o-", label=labels.get(rung, rung))
        axes[0].plot(steps, [r["player_error_first8_shuffled_px"] for r in rows], "x:", alpha=0.5)
        axes[1].plot(steps, [r["psnr_mean"] for r in rows], "o-", label=labels.get(rung, rung))
    any_row = next(iter(rungs.values()))[0]
    axes[0].axhline(any_row["copy_error_first8_px"], color="gray", ls="--", label="copy last frame")
    axes[1].axhline(any_row["copy_psnr"], color="gray", ls="--", label="copy last frame")
    axes[0].set(xlabel="training step (batch 8)", ylabel="player error, first 8 frames (px)",
                title="o true actions, x shuffled")
    axes[1].set(xlabel="training step (batch 8)", ylabel="colour PSNR (dB)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="world_model.json files of magi eval world-model")
    p.add_argument("--rung", action="append", default=[], metavar="PREFIX=LABEL")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    labels = dict(item.split("=", 1) for item in args.rung)
    rungs = points(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(rungs, labels)
    (args.out / "ladder.md").write_text(text + "\n")
    (args.out / "ladder.json").write_text(json.dumps({"labels": labels, "rungs": rungs}, indent=1))
    plot(rungs, labels, args.out / "ladder.png")
    print(text)


if __name__ == "__main__":
    main()
