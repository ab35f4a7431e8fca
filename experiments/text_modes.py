"""How should text enter MAGI? prefix tokens (NOVA) vs cross-attention (MAGI-1, Open-Sora) vs a pooled
vector (the baseline), on captioned digits at equal CPU budget (docs/text.md).

The three runs are `configs/text_digits.yaml` (fine-tuned from the class-conditional demo model,
`train.init_reconditioned`) with `model.text_mode` set, trained side by side on one thread each, the
step counts in proportion to each mode's step cost so every run gets the same CPU (a prefix step costs
~1.2x a pooled one, a cross step ~1.1x):

    for m in prefix=900 cross=1030 pooled=1130; do OMP_NUM_THREADS=1 magi train --config configs/text_digits.yaml \\
        --out runs/tm_${m%=*} --set model.text_mode=${m%=*} --set train.max_steps=${m#*=} & done

This script scores each run's last EMA checkpoint with `magi eval text` (every one-digit caption, seen
and held-out apart, `--samples` videos each at guidance 3, shuffled and null prompts as controls, at
the shipped sampling setting) into OUT/MODE/, reusing an evaluation already there with the same
setting, and writes OUT/summary.json (each run's steps and training wall time beside its accuracies)
and a table.

    python experiments/text_modes.py --runs runs/tm_{mode} --out results/text_modes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("prefix", "cross", "pooled")
SETTING = {"cfg": 3.0, "mask_steps": 4, "diffusion_steps": 25, "sampler": "ddim", "temperature": 0.1}


def evaluate(run: str, out: Path, samples: int, scorer: str) -> dict:
    """magi eval text of `run` into `out` at SETTING, or the evaluation already there when it matches."""
    from magi.evaluate import cli

    path = out / "text_eval.json"
    if path.is_file():
        r = json.loads(path.read_text())
        same = all(r["sampling"].get(k) == v for k, v in SETTING.items() if k != "cfg") and r["cfg"] == SETTING["cfg"]
        if same and r["samples_per_caption"] == samples:
            return r
    cli.main(["text", run, "--out", str(out), "--scorer", scorer, "--samples", str(samples), "--null-samples", "2",
              "--sweep", "", "--two-digit", "0", "--cfg", str(SETTING["cfg"]), "--mask-steps", str(SETTING["mask_steps"]),
              "--diffusion-steps", str(SETTING["diffusion_steps"]), "--sampler", SETTING["sampler"],
              "--temperature", str(SETTING["temperature"]), "--no-progress"])
    return json.loads(path.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/tm_{mode}", help="run directory per mode ({mode} is replaced)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--samples", type=int, default=8, help="videos per one-digit caption")
    p.add_argument("--scorer", default="results/text_digits/scorer")
    p.add_argument("--out", type=Path, default=Path("results/text_modes"))
    args = p.parse_args()
    from magi.logging_utils import cpu_model

    rows = {}
    for mode in args.modes.split(","):
        run = args.runs.format(mode=mode)
        summary = json.loads((Path(run) / "summary.json").read_text())
        r = evaluate(run, args.out / mode, args.samples, args.scorer)
        if r["text_mode"] != mode:
            raise ValueError(f"{run}: a {r['text_mode']!r} model, expected {mode!r}")
        rows[mode] = {"steps": summary["step"], "train_minutes": round(summary["wall_time_s"] / 60, 1),
                      "seen": r["one_digit"]["seen"], "heldout": r["one_digit"]["heldout"],
                      "shuffled": r["controls"]["shuffled"]["all"], "null_prompt": r["controls"]["null_prompt"].get("all"),
                      "eval": str(args.out / mode / "text_eval.json")}
    record = {"command": " ".join(["python experiments/text_modes.py", *sys.argv[1:]]), "machine": cpu_model(),
              "what": "one-digit caption accuracy of each text_mode at equal CPU (runs side by side, one thread each)",
              "setting": SETTING, "samples_per_caption": args.samples, "modes": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'mode':8s} {'steps':>5s} {'min':>5s}   seen: digit (likeliest) / motion / both     held-out: the same"
          "     shuffled: likeliest / motion")
    for mode, r in rows.items():
        cells = [f"{g['digit']:.1%} ({g['digit_likeliest']:.1%}) / {g['motion']:.1%} / {g['both']:.1%}"
                 for g in (r["seen"], r["heldout"])]
        s = r["shuffled"]
        print(f"{mode:8s} {r['steps']:5d} {r['train_minutes']:5.1f}   {cells[0]:32s} {cells[1]:32s} "
              f"{s['digit_likeliest']:.1%} / {s['motion']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
