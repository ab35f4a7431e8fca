"""`magi eval text`: does a text model draw what its caption says? Caption accuracy on captioned digits.

A model trained on `captioned-digits` (`configs/text_digits.yaml`) is asked for every one-digit caption
of the grammar, seen and held-out apart (the ten held-out digit/motion pairs were never in training),
`--samples` videos each from fresh seeds, at `--cfg`; a caption scorer trained on real clips
(`magi.evaluate.text`) reads each video: digit right, motion right, both right. Beside it:
- controls: the same videos scored against the captions shuffled at random (a model that follows its
  caption scores near chance there, ~10% digit and ~25% motion: its accuracy is not the scorer's bias), against
  another caption (another digit and motion: a model that follows its caption scores near 0, one that ignores
  it near chance), and videos made from the null (empty) prompt;
- a sweep of the guidance scale (`--sweep`);
- two-digit captions, seen and held-out (`--two-digit`).
Writes OUT/text_eval.json, OUT/text_eval.png (accuracy against guidance) and OUT/prompts.gif (a grid
of prompts and their videos, held-out ones included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from magi.data.builtin import MOTIONS, all_captions, caption_pairs, caption_for
from magi.logging_utils import cpu_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    from magi.errors import number

    p.add_argument("checkpoint", help="a text model trained on captioned-digits (folder, run or checkpoint)")
    p.add_argument("--step", type=int, help="with a run directory: which checkpoints/<step>/ (default: the latest)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scorer", help="a caption scorer folder (default: train one on real clips into OUT/scorer, "
                                    "or reuse the one there)")
    p.add_argument("--scorer-steps", type=number(int, low=1), default=3000, help="training steps of a new scorer")
    p.add_argument("--samples", type=number(int, low=1), default=8, help="videos per one-digit caption")
    p.add_argument("--cfg", type=number(float, low=0), default=7.0,
                   help="guidance scale of the main table (the shipped model's: the best of its sweep)")
    p.add_argument("--null-samples", type=number(int, low=0), default=None,
                   help="videos per caption made from the null prompt (default: --samples; 0 = no null control)")
    p.add_argument("--sweep", default="1,3,5,7,10", help="guidance scales of the sweep (comma-separated; '' = none)")
    p.add_argument("--sweep-samples", type=number(int, low=1), default=4, help="videos per caption in the sweep")
    p.add_argument("--two-digit", type=number(int, low=0), default=80,
                   help="two-digit captions scored (half seen, half held-out), one video each")
    # the shipped text model's setting (the demo's, after the class-conditional demo it starts from: few mask
    # steps and a low temperature keep the digit, configs/demo_pretrained.yaml)
    p.add_argument("--mask-steps", type=number(int, low=1), default=4)
    p.add_argument("--diffusion-steps", type=number(int, low=1), default=25)
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--temperature", type=number(float, above=0), default=0.1)
    p.add_argument("--seed", type=int, default=1000, help="generation seed (training never uses these draws)")
    p.add_argument("--batch-size", type=number(int, low=1), default=80)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


class _Generator:
    """Generates videos for captions in batches from one seeded torch.Generator."""

    def __init__(self, pipe, args):
        self.pipe, self.args = pipe, args
        self.g = torch.Generator(device=pipe.device).manual_seed(args.seed)

    def __call__(self, prompts: list[str], cfg: float) -> np.ndarray:
        from tqdm.auto import tqdm

        a, out = self.args, []
        for start in tqdm(range(0, len(prompts), a.batch_size), desc=f"videos at cfg {cfg:g}", leave=False,
                          disable=a.no_progress):
            out.append(self.pipe(prompt=prompts[start:start + a.batch_size], guidance_scale=cfg,
                                 mask_steps=a.mask_steps, diffusion_steps=a.diffusion_steps, sampler=a.sampler,
                                 temperature=a.temperature, generator=self.g))
        return np.concatenate(out)  # (B, T, H, W, 3) uint8


def _shuffled(captions: list[str], seed: int) -> list[str]:
    """The captions in a random order (seeded): each video scored against a caption drawn without regard to it."""
    return [captions[i] for i in np.random.default_rng(seed).permutation(len(captions))]


def _other_caption(captions: list[str]) -> list[str]:
    """Each caption's control: another digit (+5 mod 10) moving another way (+2 mod 4), same digit count."""
    from magi.data.builtin import parse_caption

    out = []
    for c in captions:
        pairs = parse_caption(c)
        out.append(caption_for([((d + 5) % 10, (m + 2) % len(MOTIONS)) for d, m in pairs]))
    return out


def _scorer(args, data: dict):
    from magi.evaluate.text import CONFIG as SCORER_CONFIG, CaptionScorer, train_scorer

    folder = Path(args.scorer) if args.scorer else Path(args.out) / "scorer"
    if (folder / SCORER_CONFIG).is_file():
        scorer = CaptionScorer.load(folder)
        mismatch = {k: (scorer.config.get(k), v) for k, v in data.items() if scorer.config.get(k) != v}
        if mismatch:
            raise ValueError(f"--scorer {folder}: it reads other clips than the model makes: {mismatch}")
        return scorer
    if args.scorer:
        raise FileNotFoundError(f"--scorer {folder}: no caption scorer there")
    scorer = train_scorer(**data, steps=args.scorer_steps, progress=not args.no_progress)
    scorer.save(folder)
    return scorer


def run(args: argparse.Namespace) -> dict:
    from magi.evaluate.text import summarize
    from magi.pipeline import MagiPipeline

    started = time.perf_counter()
    pipe = MagiPipeline.from_pretrained(args.checkpoint, step=args.step, device=args.device)
    run_config = pipe.checkpoint.run_config or {}
    section = run_config.get("data") or {}
    if section.get("kind") != "captioned-digits":
        raise ValueError(f"{args.checkpoint}: magi eval text scores models trained on captioned-digits; this one "
                         f"was trained on {section.get('kind')!r}")
    options = section.get("options") or {}
    from magi.data.builtin import CaptionedDigits

    probe = CaptionedDigits(num_videos=1, **{k: options[k] for k in ("num_frames", "size", "digit_size", "speed",
                                                                      "interval") if options.get(k) is not None})
    data = {"size": probe.size, "num_frames": probe.num_frames, "digit_size": probe.digit_size,
            "speed": probe.speed, "interval": int(probe.interval)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = _scorer(args, data)
    make = _Generator(pipe, args)
    one = all_captions(num_digits=1)  # 40: 30 seen, 10 held-out
    prompts = [c for c in one for _ in range(args.samples)]
    videos = make(prompts, args.cfg)
    main = summarize(scorer.score(videos, prompts))
    shuffled = summarize(scorer.score(videos, _shuffled(prompts, args.seed)))
    other = summarize(scorer.score(videos, _other_caption(prompts)))
    null = {}
    null_samples = args.samples if args.null_samples is None else args.null_samples
    if null_samples:  # what the scorer reads in videos made from the empty prompt, against each caption
        null_prompts = [c for c in one for _ in range(null_samples)]
        null = summarize(scorer.score(make([""] * len(null_prompts), args.cfg), null_prompts))
    sweep = {}
    for cfg in [float(s) for s in args.sweep.split(",") if s.strip()]:
        sweep_prompts = [c for c in one for _ in range(args.sweep_samples)]
        sweep[f"{cfg:g}"] = summarize(scorer.score(make(sweep_prompts, cfg), sweep_prompts))
    two = {}
    if args.two_digit:
        rng = np.random.default_rng(args.seed)
        picks = []
        for held in (False, True):
            pool = caption_pairs(2, held_out=held)
            picks += [caption_for(pool[i]) for i in rng.choice(len(pool), args.two_digit // 2, replace=False)]
        two_videos = make(picks, args.cfg)
        two = summarize(scorer.score(two_videos, picks))
    result = {
        "checkpoint": str(args.checkpoint), "step": pipe.checkpoint.step,
        "text_mode": pipe.config.text_mode, "cfg": args.cfg,
        "sampling": {k: getattr(args, k) for k in ("mask_steps", "diffusion_steps", "sampler", "temperature", "seed")},
        "samples_per_caption": args.samples, "one_digit": main, "controls": {"shuffled": shuffled, "other_caption": other,
                                                                          "null_prompt": null},
        "sweep": sweep, "two_digit": two, "scorer_on_real_clips": scorer.report.get("real_clips"),
        "command": "magi eval text " + " ".join(_argv(args)),
        "machine": cpu_model(), "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "text_eval.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(result, out / "text_eval.png")
    _grid(videos, prompts, args.samples, out / "prompts.gif")
    _print(result)
    return result


def _argv(args) -> list[str]:
    """The command's arguments as given (every option, so the record reproduces the run)."""
    skip = {"checkpoint", "command", "no_progress", "device"}
    opts = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in skip and v is not None]
    return [str(args.checkpoint), *opts]


def _print(r: dict) -> None:
    rows = [("seen, one digit", r["one_digit"].get("seen")), ("held-out, one digit", r["one_digit"].get("heldout")),
            ("shuffled prompts", r["controls"]["shuffled"].get("all")),
            ("another caption", r["controls"]["other_caption"].get("all")),
            ("null prompt", r["controls"]["null_prompt"].get("all") if r["controls"]["null_prompt"] else None),
            ("seen, two digits", r["two_digit"].get("seen")), ("held-out, two digits", r["two_digit"].get("heldout"))]
    print(f"caption accuracy at cfg {r['cfg']:g} ({r['text_mode']}):  digit  (likeliest)  motion  (axis)   both   n")
    for name, s in rows:
        if s:
            print(f"  {name:24s} {s['digit']:6.1%}  ({s.get('digit_likeliest', float('nan')):6.1%})  "
                  f"{s['motion']:7.1%} ({s.get('motion_axis', float('nan')):6.1%}) {s['both']:6.1%} {s['n']:4d}")


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not r["sweep"]:
        return
    scales = sorted(r["sweep"], key=float)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, group in zip(axes, ("seen", "heldout")):
        for key, style in (("digit", "o-"), ("motion", "s-"), ("both", "^-")):
            ax.plot([float(s) for s in scales], [r["sweep"][s][group][key] for s in scales], style, label=key)
        ax.axhline(0.1, color="gray", lw=0.8, ls=":")
        ax.set_title(f"{'seen' if group == 'seen' else 'held-out'} one-digit captions")
        ax.set_xlabel("guidance scale")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("caption accuracy")
    axes[0].legend()
    fig.suptitle(f"{r['command']}  ({r['machine']})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _grid(videos: np.ndarray, prompts: list[str], per_caption: int, path: Path, rows: int = 10) -> None:
    """A GIF: one row per caption (the held-out ones first, then seen ones), up to 4 of its videos."""
    from magi.data.builtin import is_held_out
    from magi.visualize import caption_grid
    from magi.video_io import write_gif

    first = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    held = [p for p in first if is_held_out(p)][: rows // 2]
    shown = held + [p for p in first if not is_held_out(p)][: rows - len(held)]
    cols = min(4, per_caption)
    rows_videos = [videos[first[p]:first[p] + cols] for p in shown]
    labels = [("[held-out] " if is_held_out(p) else "") + p for p in shown]
    write_gif(path, caption_grid(rows_videos, labels), fps=4)


__all__ = ["add_arguments", "run"]
