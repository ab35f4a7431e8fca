"""How should text enter MAGI? prefix tokens (NOVA) vs cross-attention (MAGI-1, Open-Sora) vs a pooled
vector (the baseline), on captioned digits at equal CPU budget (docs/text.md).

The three runs are `configs/text_digits.yaml` with `model.text_mode` set, trained side by side on one
thread each (the same data, seed and schedule: lr 1e-3 after 200 warm-up steps, constant):

    for m in prefix cross pooled; do OMP_NUM_THREADS=1 magi train --config configs/text_digits.yaml \
        --out runs/text_$m --set model.text_mode=$m --set train.max_steps=800 --set train.decay_steps=0 & done

This script then (1) times one training step of each mode at that shape, alternating, on one thread (so
the CPU budget of a step count is known), and (2) scores each run's EMA checkpoint at the steps given
(`--steps prefix=400,cross=400,pooled=600`: a cheaper mode gets at least the CPU of the dearest) with
`magi eval text` (one-digit captions, seen and held-out, at guidance 3). Writes results/text_modes.json.

    python experiments/text_modes.py --steps prefix=400,cross=400,pooled=600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("prefix", "cross", "pooled")


def step_costs(overrides: list[str], rounds: int = 6, batch: int = 16) -> dict[str, float]:
    """Median seconds of one training step (forward + backward + AdamW) per mode at the text_digits shape,
    the modes alternating within each round, one thread."""
    from magi import Magi
    from magi.config import RunConfig

    torch.set_num_threads(1)
    run = RunConfig.load(REPO / "configs" / "text_digits.yaml", overrides)
    c = run.model
    models = {}
    for mode in MODES:
        torch.manual_seed(0)
        cfg = c.replace(text_mode=mode, text_dim=64, text_len=run.text_encoder.max_length)
        m = Magi(cfg).train()
        models[mode] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4))
    x = torch.randn(batch, c.num_frames, c.latent_channels, *c.grid)
    text = torch.randn(batch, run.text_encoder.max_length, 64)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(rounds + 1):
        for mode, (m, opt) in models.items():
            t = time.perf_counter()
            m(x, text=text)["loss"].backward()
            opt.step()
            opt.zero_grad()
            if r:  # round 0 warms up
                times[mode].append(time.perf_counter() - t)
    return {m: sorted(v)[len(v) // 2] for m, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", required=True, help="checkpoint step per mode, e.g. prefix=400,cross=400,pooled=600")
    p.add_argument("--runs", default="runs/text_{mode}", help="run directory per mode")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--scorer", default="results/text_digits/scorer")
    p.add_argument("--out", default="results/text_modes.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides of configs/text_digits.yaml the runs were trained with (for the timed shape)")
    args = p.parse_args()
    steps = {k: int(v) for k, v in (s.split("=") for s in args.steps.split(","))}
    from magi.evaluate import cli
    from magi.logging_utils import cpu_model

    costs = step_costs(args.set)
    rows = {}
    for mode, step in steps.items():
        out = Path("outputs") / "text_modes" / f"{mode}_{step}"
        run = args.runs.format(mode=mode)
        cli.main(["text", run, "--step", str(step), "--out", str(out), "--scorer", args.scorer, "--samples",
                  str(args.samples), "--null-samples", "0", "--sweep", "", "--two-digit", "0", "--no-progress"])
        r = json.loads((out / "text_eval.json").read_text())
        rows[mode] = {"step": step, "step_seconds": round(costs[mode], 3),
                      "cpu_seconds": round(step * costs[mode]), "seen": r["one_digit"]["seen"],
                      "heldout": r["one_digit"]["heldout"], "shuffled": r["controls"]["shuffled"]["all"]}
    record = {"command": " ".join(["python experiments/text_modes.py", *sys.argv[1:]]),
              "machine": cpu_model(), "torch": torch.__version__,
              "setting": "one-digit captions, guidance 3, 8 mask x 25 DDIM steps, temperature 0.5",
              "samples_per_caption": args.samples, "modes": rows}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'mode':8s} {'step':>5s} {'s/step':>7s} {'CPU s':>6s}   seen: digit (likeliest) / motion / both"
          "     held-out: the same")
    for mode, r in rows.items():
        cells = [f"{g['digit']:.0%} ({g.get('digit_likeliest', float('nan')):.0%}) / {g['motion']:.0%} / {g['both']:.0%}"
                 for g in (r["seen"], r["heldout"])]
        print(f"{mode:8s} {r['step']:5d} {r['step_seconds']:7.2f} {r['cpu_seconds']:6d}   {cells[0]:28s} {cells[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
