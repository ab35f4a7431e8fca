"""How the demo checkpoint's sampling settings were chosen: digit kept and PSNR per setting.

Samples the shipped checkpoint (`pretrained/`) on held-out clips (its config's sample_options) with
several mask-step counts, CFG scales, temperatures and samplers, two sampling seeds each, and scores
the 4 predicted frames by PSNR and by "digit kept": the share of clips whose predicted frame a digit
classifier (magi.evaluate.DigitClassifier) reads as the same digit as the true frame.

    python experiments/demo_sampling.py            # ~3 min on one CPU core

Writes results/demo_sampling.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (cfg, temperature, mask steps, sampler); 50 diffusion steps throughout
SETTINGS = [(3.0, 0.1, 16, "ddpm"), (3.0, 0.1, 8, "ddpm"), (3.0, 0.1, 4, "ddpm"), (3.0, 0.1, 2, "ddpm"),
            (3.0, 0.1, 1, "ddpm"), (1.0, 0.1, 4, "ddpm"), (5.0, 0.1, 4, "ddpm"), (1.0, 0.5, 16, "ddpm"),
            (3.0, 1.0, 16, "ddim"), (3.0, 1.0, 4, "ddim")]


def main() -> None:
    from tqdm import tqdm

    from magi import Magi
    from magi.config import RunConfig
    from magi.evaluate import DigitClassifier
    from magi.recipe import build_dataset, build_vae, collate
    from magi.visualize import psnr

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", default=str(ROOT / "pretrained"))
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "results" / "demo_sampling.json"))
    p.add_argument("--setting", action="append", metavar="CFG,TEMPERATURE,MASK_STEPS,SAMPLER",
                   help="score only these settings (repeatable), e.g. 3,0.1,4,ddpm")
    args = p.parse_args()
    settings = SETTINGS
    if args.setting:
        settings = [(float(c), float(t), int(m), s) for c, t, m, s in (x.split(",") for x in args.setting)]
    torch.set_num_threads(1)

    run = RunConfig.load(Path(args.pretrained) / "train_config.yaml")
    model = Magi.from_pretrained(args.pretrained).eval()
    o = {**run.data.options, **run.data.sample_options}
    o["num_videos"] = max(o["num_videos"], args.clips)  # the same held-out clips first, then more
    data = build_dataset(run.data.kind, o, where="data.sample_options")  # held-out digits
    vae = build_vae(run.vae.spec, run.vae.options)
    batch = collate([data[i] for i in range(args.clips)])
    classifier = DigitClassifier(o["size"], o["digit_size"])
    k = run.train.sample.context_frames
    with torch.no_grad():
        latents = vae.encode(batch["video"])  # (B, T, C, h, w)
    truth = batch["video"][:, k:]  # (B, T-k, 3, H, W)
    rows = []
    for cfg, temperature, mask_steps, sampler in tqdm(settings, desc="settings"):
        t0, kept, db = time.time(), [], []
        for seed in (0, 1):
            with torch.no_grad():
                pred = model.generate(latents.shape[1], context=latents[:, :k], labels=batch["label"],
                                      intervals=batch["interval"], cfg=cfg, mask_steps=mask_steps,
                                      diffusion_steps=50, temperature=temperature, sampler=sampler,
                                      generator=torch.Generator().manual_seed(seed))
                video = vae.decode(pred).clamp(-1, 1)[:, k:]  # (B, T-k, 3, H, W)
            kept.append(classifier.agreement(video, truth))
            db.append(psnr(video, truth, dims=(-3, -2, -1)).mean())
        rows.append({"cfg": cfg, "temperature": temperature, "mask_steps": mask_steps, "sampler": sampler,
                     "diffusion_steps": 50, "digit_kept_per_frame": torch.stack(kept).mean(0).tolist(),
                     "psnr_db": float(torch.stack(db).mean()), "seconds": round(time.time() - t0, 1)})
    result = {"checkpoint": str(args.pretrained), "clips": args.clips, "sampling_seeds": [0, 1],
              "classifier_accuracy_on_truth": classifier.accuracy(truth, batch["label"]).tolist(),
              "settings": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"| cfg | temperature | mask steps | sampler | digit kept, predicted frames 1-{truth.shape[1]} "
          f"| PSNR (dB) |\n|---|---|---|---|---|---|")
    for r in rows:
        kept = " / ".join(f"{x:.2f}" for x in r["digit_kept_per_frame"])
        print(f"| {r['cfg']:g} | {r['temperature']:g} | {r['mask_steps']} | {r['sampler']} | {kept} "
              f"| {r['psnr_db']:.2f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
