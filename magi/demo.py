"""`magi demo` / `make demo`: the first thing to run, ten minutes at most on a 2-core CPU.

Part 1, predict: load the small checkpoint shipped in `pretrained/` (trained by this project's own code
with `make pretrained`), continue held-out moving-digit clips from their first frames, and write the
predictions next to the ground truth (GIF and MP4) with their PSNR, against the baseline of repeating
the last context frame.

Part 2, text (when `pretrained/text_digits/` is there): the shipped text model answers prompts, held-out
ones included, as a GIF grid of prompts and videos.

Part 3, train: train the same small model from scratch for a few minutes on the same data, to show the
loop works on this machine: loss curve (PNG, next to the pretrained run's), a checkpoint and samples
(expected to be rough after minutes; the pretrained model saw ~100x more clips).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from magi.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "pretrained"
PRETRAINED_TEXT = PRETRAINED / "text_digits"
DEMO_PROMPTS = ["the digit 3 is moving up then down", "the digit 7 is moving up then down",
                "the digit 0 is moving left then right", "the digit 5 is moving down then up",
                "the digit 2 is moving up then down", "the digit 8 is moving right then left"]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def predict(pretrained: Path, out: Path, num_videos: int = 8, score_videos: int = 64,
            seed: int = 0) -> dict[str, Any]:
    """Part 1: predictions of the shipped checkpoint on held-out clips, with PSNR and a baseline.

    `score_videos` clips are predicted and scored (one sampling draw; a handful of clips says little about
    a rate), the first `num_videos` of them are shown.
    """
    from magi import Magi
    from magi.recipe import build_dataset, build_vae, collate
    from magi.video_io import side_by_side, write_gif, write_mp4
    from magi.visualize import comparison_image, mark_frames, psnr, stack_rows, to_uint8, upscale

    t0 = time.time()
    if not (pretrained / "config.json").is_file():
        raise FileNotFoundError(f"{pretrained}: no pretrained checkpoint (config.json); it ships with the "
                                f"repository, or rebuild it with `make pretrained`")
    run = RunConfig.load(pretrained / "train_config.yaml")
    model = Magi.from_pretrained(pretrained).eval()  # EMA weights
    sc = run.train.sample
    o = {**run.data.options, **run.data.sample_options}
    data = build_dataset(run.data.kind, o, where="data.sample_options")  # held-out digits and trajectories
    vae = build_vae(run.vae.spec, run.vae.options)
    batch = collate([data[i] for i in range(min(max(num_videos, score_videos), len(data)))])
    with torch.no_grad():
        latents = vae.encode(batch["video"])  # (B, T, C, h, w)
        k = sc.context_frames
        pred = model.generate(latents.shape[1], context=latents[:, :k], labels=batch["label"],
                              intervals=batch["interval"], cfg=sc.cfg, mask_steps=sc.mask_steps,
                              diffusion_steps=sc.diffusion_steps, temperature=sc.temperature,
                              sampler=sc.sampler, generator=torch.Generator().manual_seed(seed))
        video = vae.decode(pred)  # (B, T, 3, H, W)
    truth = batch["video"]
    k_video = vae.video_frames(k) if hasattr(vae, "video_frames") else k
    # PSNR per predicted frame of the squared error pooled over clips: a slow digit that has not moved
    # yet makes the baseline's frame exact (~106 dB), which would dominate a mean of per-clip PSNRs
    per_frame = psnr(video[:, k_video:], truth[:, k_video:], dims=(0, -3, -2, -1))  # (T - k,)
    repeat = truth[:, k_video - 1:k_video].expand_as(truth[:, k_video:])  # baseline: last context frame
    baseline = psnr(repeat, truth[:, k_video:], dims=(0, -3, -2, -1))  # (T - k,)
    kept = None
    if run.data.kind == "moving-digits" and o.get("num_digits") == 1:  # is each digit still itself?
        from magi.evaluate import DigitClassifier

        clf = DigitClassifier(o["size"], o.get("digit_size") or o["size"] // 2)
        kept_clips = clf.kept(video[:, k_video:], truth[:, k_video:])  # (B, T - k)
        kept = kept_clips.mean(0)  # (T - k,)
    video, truth = video[:num_videos], truth[:num_videos]  # the clips shown

    out.mkdir(parents=True, exist_ok=True)
    scale = max(1, 128 // truth.shape[-1])
    truth_u8 = [upscale(to_uint8(truth[i]), scale) for i in range(len(truth))]  # (T, H, W, 3) each
    pred_u8 = [mark_frames(upscale(to_uint8(video[i]), scale), k_video) for i in range(len(truth))]
    pairs = [side_by_side(t, p) for t, p in zip(truth_u8, pred_u8)]  # truth | prediction, (T, H, W, 3)
    cols = 2 if len(pairs) % 2 == 0 else 1  # two clips per row keeps the GIF roughly square
    grid = stack_rows([side_by_side(*pairs[i:i + cols], pad=8) for i in range(0, len(pairs), cols)])
    gif = write_gif(out / "prediction_vs_truth.gif", grid, fps=sc.fps)
    mp4 = write_mp4(out / "prediction_vs_truth.mp4", grid, fps=sc.fps)
    from PIL import Image

    png = out / "prediction_vs_truth_frames.png"
    Image.fromarray(comparison_image(truth_u8, pred_u8)).save(png)
    result = {
        "checkpoint": str(pretrained),
        "videos": len(truth),
        "scored_videos": len(batch["video"]),  # PSNR and digit kept are over these
        "context_frames": k,
        "predicted_frames": int(truth.shape[1] - k_video),
        "psnr_db_per_predicted_frame": [round(float(x), 2) for x in per_frame],
        "psnr_db_mean": round(float(per_frame.mean()), 2),
        "baseline_repeat_last_frame_psnr_db_per_frame": [round(float(x), 2) for x in baseline],
        "baseline_repeat_last_frame_psnr_db_mean": round(float(baseline.mean()), 2),
        # share of clips whose predicted frame a digit classifier reads as the digit of the true frame
        "digit_kept_per_predicted_frame": None if kept is None else [round(float(x), 3) for x in kept],
        # for the shown clips, in order: the share of their predicted frames that keep the digit
        "digit_kept_per_shown_clip": None if kept is None else [
            round(float(x), 2) for x in kept_clips[:num_videos].mean(1)],
        "sampling": {"mask_steps": sc.mask_steps, "diffusion_steps": sc.diffusion_steps,
                     "temperature": sc.temperature, "cfg": sc.cfg, "sampler": sc.sampler, "seed": seed},
        "seconds": round(time.time() - t0, 1),
        "files": {"gif": str(gif), "mp4": str(mp4), "frames_png": str(png)},
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def plot_loss(metrics_jsonl: Path, png: Path, reference: list[list[float]] | None = None) -> Path:
    """Training loss against step (the pretrained run's curve in grey for reference)."""
    from magi.visualize import plot_loss as plot

    return plot(metrics_jsonl, png, reference)


def train_short(config: Path, out: Path, minutes: float, reference: list[list[float]] | None,
                overrides: list[str] = ()) -> dict[str, Any]:
    """Part 2: train the demo model from scratch for `minutes`; loss curve, checkpoint, samples."""
    from magi.distributed import destroy_distributed
    from magi.train import train

    run = RunConfig.load(config, [f"train.max_minutes={minutes}", *overrides])
    result = train(run, out)
    destroy_distributed()
    png = plot_loss(out / "metrics.jsonl", out / "loss_curve.png", reference)
    return {
        "steps": result.step,
        "final_loss": None if result.final_loss is None else round(result.final_loss, 4),
        "wall_time_s": round(result.wall_time_s, 1),
        "checkpoint": str(result.checkpoint),
        "samples": [str(p) for p in result.samples],
        "sample_psnr_predicted_db": None if result.sample_psnr is None else round(result.sample_psnr, 2),
        "loss_curve": str(png),
        "metrics": str(out / "metrics.jsonl"),
        "tensorboard": str(out / "tensorboard"),
    }


VAE_SUBFOLDER = "tokenizer"  # where an exported model keeps a local VAE it was trained with
TEXT_ENCODER_SUBFOLDER = "text_encoder"  # and a local text encoder


def export_pretrained(run_dir: Path, dest: Path, command: str) -> dict[str, Any]:
    """Copy a finished run's newest checkpoint into `dest` as a small `from_pretrained` directory:
    config.json, ema.safetensors, train_config.yaml and training.json (wall time, steps, final loss,
    the loss curve and the command that reproduces it). A VAE that is a local folder (a tokenizer trained
    here) is copied into `dest/tokenizer/` and `vae.spec` rewritten to that relative name, a local text
    encoder into `dest/text_encoder/` likewise, so the folder is self-contained."""
    import shutil

    from magi.checkpoint import STATE_FILE, latest_checkpoint, training_behind
    from magi.logging_utils import read_jsonl

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to export")
    state = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=True)
    recs = read_jsonl(run_dir / "metrics.jsonl")
    losses = [(r["step"], r["train/loss"]) for r in recs if isinstance(r.get("train/loss"), float)]
    psnrs = [(r["step"], r["sample/psnr_predicted"]) for r in recs if "sample/psnr_predicted" in r]
    tail = [v for s, v in losses if s > state["step"] - 500]
    run = RunConfig.load(ckpt / "train_config.yaml")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "ema.safetensors", "train_config.yaml"):
        shutil.copy2(ckpt / name, dest / name)
    def carry(folder: Path, name: str) -> None:
        """A local folder the model needs travels with it, into dest/name (replaced whole)."""
        tmp = dest / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(dest / name, ignore_errors=True)
        os.rename(tmp, dest / name)

    if Path(run.vae.spec).is_dir():  # a local VAE (a tokenizer trained here) travels with the model
        carry(Path(run.vae.spec), VAE_SUBFOLDER)
        run.vae.spec = VAE_SUBFOLDER  # read relative to the folder (magi.pretrained.load_pretrained)
    if run.text_encoder.name and Path(run.text_encoder.name).is_dir():  # so does a local text encoder
        carry(Path(run.text_encoder.name), TEXT_ENCODER_SUBFOLDER)
        run.text_encoder.name = TEXT_ENCODER_SUBFOLDER  # read relative to the folder (magi.pipeline)
    (dest / "train_config.yaml").write_text(run.to_yaml())
    info = {
        "source_checkpoint": str(ckpt),
        "steps": int(state["step"]),
        "wall_time_s": round(float(state["wall_time_s"]), 1),
        "skipped_steps": int(state.get("skipped_total", 0)),
        "final_loss_mean_last_500_steps": round(sum(tail) / len(tail), 5) if tail else None,
        "sample_psnr_predicted_db": [[s, round(v, 2)] for s, v in psnrs],
        "loss_curve": [[s, round(v, 5)] for s, v in losses],
        "torch": str(torch.__version__),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": run.train.num_threads,
        "command": command,
    }
    if run.train.init_from:  # a fine-tuning stage: keep the record of the weights it started from
        earlier, training = Path(run.train.init_from), None
        if (earlier / "training.json").is_file():  # an exported folder
            training = json.loads((earlier / "training.json").read_text())
        elif (earlier / STATE_FILE).is_file():  # a checkpoint of a run
            training = training_behind(earlier)
        info["init_from"] = {"path": run.train.init_from, "training": training}
    (dest / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# How the demo samples the text model: the setting `magi eval text` scores by default.
TEXT_SETTING = {"cfg": 7.0, "mask_steps": 4, "diffusion_steps": 25, "temperature": 0.1}


def text_to_video(pretrained: Path, out: Path, prompts: list[str] = DEMO_PROMPTS, per_prompt: int = 3,
                  seed: int = 0) -> dict[str, Any]:
    """Part 2: the shipped text model's videos for `prompts` (held-out captions marked), as a GIF grid, at
    the sampling setting its evaluation reports (results/text_digits/text_eval.json)."""
    from magi.data.builtin import is_held_out
    from magi.pipeline import MagiPipeline
    from magi.video_io import write_gif
    from magi.visualize import caption_grid

    t0 = time.time()
    pipe = MagiPipeline.from_pretrained(pretrained)
    videos = pipe(prompt=[p for p in prompts for _ in range(per_prompt)], guidance_scale=TEXT_SETTING["cfg"],
                  mask_steps=TEXT_SETTING["mask_steps"], diffusion_steps=TEXT_SETTING["diffusion_steps"],
                  sampler="ddim", temperature=TEXT_SETTING["temperature"],
                  generator=torch.Generator().manual_seed(seed))  # (B, T, H, W, 3)
    rows = [videos[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]
    labels = [("[held-out] " if is_held_out(p) else "") + p for p in prompts]
    out.mkdir(parents=True, exist_ok=True)
    gif = write_gif(out / "prompts.gif", caption_grid(rows, labels), fps=4)
    return {"prompts": prompts, "videos_per_prompt": per_prompt, "setting": TEXT_SETTING, "gif": str(gif),
            "seconds": round(time.time() - t0, 1)}


def fresh_out_dir(out: Path, overwrite: bool) -> Path:
    """`out`, or when it holds an earlier demo (and not `overwrite`) the first free `out-2`, `out-3`, ...
    so a second `make demo` keeps the first one's outputs. With `overwrite` the earlier training run
    in `out/train` is removed (its checkpoints would otherwise mix with the new ones)."""
    import shutil

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file; expected a directory for the demo's outputs")
    earlier = out.is_dir() and any((out / name).exists() for name in ("summary.json", "pretrained", "train"))
    if not earlier:
        return out
    if overwrite:
        shutil.rmtree(out / "train", ignore_errors=True)
        return out
    n = 2
    while Path(f"{out}-{n}").exists():
        n += 1
    fresh = Path(f"{out}-{n}")
    print(f"magi demo: {out} holds an earlier demo; writing to {fresh} (--overwrite reuses {out})")
    return fresh


def main(argv: list[str] | None = None) -> int:
    from magi.errors import USER_ERRORS, fail

    args = parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        return fail("magi demo", e)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from magi.errors import ArgumentParser, number

    p = ArgumentParser(prog="magi demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/demo", help="output directory")
    p.add_argument("--pretrained", default=str(PRETRAINED), help="checkpoint directory for part 1")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="run config for part 2")
    p.add_argument("--train-minutes", type=number(float, above=0), default=4.0, help="training time of part 2")
    p.add_argument("--videos", type=int, default=8, help="held-out clips shown in part 1")
    p.add_argument("--score-videos", type=int, default=64,
                   help="held-out clips predicted and scored in part 1 (PSNR, digit kept)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of the part-2 config, repeatable (e.g. train.lr=5e-4)")
    p.add_argument("--skip-predict", action="store_true")
    p.add_argument("--skip-text", action="store_true", help="skip part 2 (the text model's prompts)")
    p.add_argument("--pretrained-text", default=str(PRETRAINED_TEXT), help="the text model of part 2")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--export-pretrained", metavar="RUN_DIR",
                   help="instead of the demo: copy RUN_DIR's newest checkpoint (EMA) into --pretrained")
    p.add_argument("--export-command", default="make pretrained  # magi train --config "
                   "configs/demo_pretrained.yaml --out runs/demo_pretrained --resume auto",
                   help="with --export-pretrained: the command that rebuilds it, recorded in training.json")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out that holds an earlier demo (else a new OUT-2, OUT-3, ...)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """`magi demo` with parsed arguments; user errors raise (ValueError, FileNotFoundError, ...)."""
    if args.train_minutes <= 0:
        raise ValueError(f"--train-minutes: expected a positive number, got {args.train_minutes:g}")
    if args.videos < 1 or args.score_videos < 1:
        raise ValueError(f"--videos / --score-videos: expected positive counts, got {args.videos}, "
                         f"{args.score_videos}")
    if not args.skip_train and not Path(args.config).is_file():
        raise FileNotFoundError(f"--config: run config not found: {args.config}")
    if not (args.skip_predict or args.export_pretrained) and not (Path(args.pretrained) / "config.json").is_file():
        raise FileNotFoundError(f"--pretrained: {args.pretrained} holds no checkpoint (config.json); it ships "
                                f"with the repository, or rebuild it with `make pretrained`")
    if args.export_pretrained:
        if not Path(args.export_pretrained).is_dir():
            raise FileNotFoundError(f"--export-pretrained: run directory not found: {args.export_pretrained}")
        info = export_pretrained(Path(args.export_pretrained), Path(args.pretrained), command=args.export_command)
        print(f"exported step {info['steps']} ({info['wall_time_s'] / 60:.1f} min of training, final loss "
              f"{info['final_loss_mean_last_500_steps']}) to {args.pretrained}")
        return 0

    if not args.skip_train:  # a bad --set fails now, not after part 1
        RunConfig.load(args.config, [f"train.max_minutes={args.train_minutes}", *args.set])
    t0 = time.time()
    out, pretrained = fresh_out_dir(Path(args.out), args.overwrite), Path(args.pretrained)
    summary: dict[str, Any] = {}
    print(f"magi demo: torch {torch.__version__}, {torch.get_num_threads()} threads, output {out}")
    reference = None
    info_file = pretrained / "training.json"
    if info_file.is_file():
        reference = json.loads(info_file.read_text()).get("loss_curve")

    if not args.skip_predict:
        print("\n[1/3] predicting held-out moving digits with the shipped checkpoint "
              f"({pretrained}) ...")
        r = predict(pretrained, out / "pretrained", num_videos=args.videos, score_videos=args.score_videos)
        summary["predict"] = r
        print(f"  {r['scored_videos']} clips, PSNR over the {r['predicted_frames']} predicted frames: "
              f"{r['psnr_db_mean']:.2f} dB "
              f"(per frame {r['psnr_db_per_predicted_frame']}); repeating the last context frame: "
              f"{r['baseline_repeat_last_frame_psnr_db_mean']:.2f} dB  [{r['seconds']:.0f} s]")
        if r["digit_kept_per_predicted_frame"] is not None:
            print(f"  digit kept (a classifier reads the true frame's digit in the prediction), per predicted "
                  f"frame: {r['digit_kept_per_predicted_frame']}; in the {r['videos']} clips shown, share of "
                  f"predicted frames: {r['digit_kept_per_shown_clip']}")
    if not args.skip_text and (Path(args.pretrained_text) / "config.json").is_file():
        print(f"\n[2/3] the text model ({args.pretrained_text}) answers prompts, held-out ones included ...")
        summary["text"] = text_to_video(Path(args.pretrained_text), out / "text")
        print(f"  {len(summary['text']['prompts'])} prompts x {summary['text']['videos_per_prompt']} videos "
              f"[{summary['text']['seconds']:.0f} s]")
    if not args.skip_train:
        print(f"\n[3/3] training the demo model from scratch for {args.train_minutes:g} minutes "
              f"({args.config}) ...")
        summary["train"] = train_short(Path(args.config), out / "train", args.train_minutes, reference, args.set)

    summary["wall_time_s"] = round(time.time() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\nmagi demo finished in {summary['wall_time_s'] / 60:.1f} min. Outputs:")
    if "predict" in summary:
        f = summary["predict"]["files"]
        print(f"  pretrained predictions (GIF/MP4: truth left, prediction right; PNG: truth row above "
              f"prediction row; red border = predicted frame):\n"
              f"    {f['gif']}\n    {f['mp4']}\n    {f['frames_png']}\n"
              f"    PSNR {summary['predict']['psnr_db_mean']:.2f} dB -> {out / 'pretrained' / 'metrics.json'}")
    if "text" in summary:
        print(f"  the text model's prompts and videos: {summary['text']['gif']}")
    if "train" in summary:
        t = summary["train"]
        print(f"  short training run: {t['steps']} steps in {t['wall_time_s']:.0f} s, final loss "
              f"{t['final_loss']}\n    loss curve  {t['loss_curve']}\n    checkpoint  {t['checkpoint']}")
        for s in t["samples"]:
            print(f"    samples     {s}")
        print(f"    logs        {t['metrics']}, TensorBoard: tensorboard --logdir {t['tensorboard']}")
    print(f"  summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
