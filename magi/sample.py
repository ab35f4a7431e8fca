"""`magi sample`: generate videos from a checkpoint (loading and generation: `magi.pretrained`).

Three tasks, picked by the arguments:

* unconditional — no classes, no context;
* class-conditional — `--classes 3,7` (indices or the dataset's class names), CFG with `--cfg`;
* prediction — context frames from a video file (`--context-video`) or from a dataset clip
  (`--context-dataset`, the checkpoint's training data unless overridden), `--context-frames k`
  at `--interval`.

Any length: `--frames 64` video frames, or `--frames 4x` for four times the training length; past
the training length the temporal positions are interpolated (the paper) or a sliding window is used
(`--long-video window`). Each sample is written as MP4 and GIF, all samples as one PNG grid, and for
prediction with a ground truth long enough, a side-by-side MP4/GIF (ground truth | generated),
per-frame PSNR/SSIM and the adjacent-frame L2 curves (JSON + PNG). `samples.json` records every
setting. EMA weights are used unless `--raw-weights`.

Checkpoints: a `from_pretrained` directory (`config.json` + `ema.safetensors`/`model.safetensors`), a
training checkpoint `RUN/checkpoints/<step>/` (same layout), a run directory `RUN` (the latest step,
or `--step`), or a Hugging Face Hub id. The VAE is read from the checkpoint's `train_config.yaml`
(`vae.spec`), or given with `--vae`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from magi.config_io import apply_overrides
from magi.pretrained import (LoadedCheckpoint, SamplingOptions, add_sampling_arguments, build_data, class_names_of,
                             generate, load_pretrained, pick_device, sampling_options)
from magi.video_io import save_grid_png, side_by_side, write_video
# names this module defined before `magi.pretrained` existed, which tests import from here
from magi.pretrained import load_pretrained as load_checkpoint, resolve_checkpoint  # noqa: F401


# --------------------------------------------------------------------------------------------------
# Inputs from the command line


def parse_frames(text: str, ckpt: LoadedCheckpoint) -> int:
    """'64' -> 64 video frames; '4x' -> four times the training length (in latent frames)."""
    text = str(text).strip()
    if text.endswith("x"):
        factor = float(text[:-1])
        latent = factor * ckpt.model.config.num_frames
        if factor <= 0 or latent != int(latent):
            raise ValueError(f"--frames {text}: {factor} x {ckpt.model.config.num_frames} training latent "
                             "frames is not a whole number")
        return ckpt.vae.video_frames(int(latent))
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--frames: expected a frame count or a multiple of the training length like "
                         f"'4x', got {text!r}")
    frames = int(text)
    ckpt.latent_frames(frames)  # raises, naming the VAE's rule, when it does not fit
    return frames


def parse_classes(text: str, class_names: Optional[Sequence[str]], num_classes: int) -> list[int]:
    """'3,7' or 'Basketball,PlayingGuitar' (names need the dataset's class list) -> indices."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.lstrip("-").isdigit():
            index = int(item)
        elif class_names is not None and item in class_names:
            index = list(class_names).index(item)
        elif class_names is None:
            raise ValueError(f"--classes: {item!r} is not an index and no class names are known "
                             "(the checkpoint's dataset could not be opened); use indices")
        else:
            close = [n for n in class_names if item.lower() in n.lower()][:5]
            raise ValueError(f"--classes: unknown class {item!r}" + (
                f"; did you mean {close}?" if close else
                f"; the model knows {', '.join(class_names)}" if len(class_names) <= 20 else ""))
        if not 0 <= index < num_classes:
            raise ValueError(f"--classes: index {index} out of range 0..{num_classes - 1}")
        out.append(index)
    if not out:
        raise ValueError("--classes: no classes given")
    return out


# --------------------------------------------------------------------------------------------------
# Writing


DISPLAY_PIXELS = 128  # small videos are written enlarged to about this size, as training's samples are


def display_scale(videos: torch.Tensor, pixels: int = DISPLAY_PIXELS) -> int:
    """The whole factor that brings frames (..., H, W) to about `pixels` on their longer side (>= 1)."""
    return max(1, pixels // max(int(videos.shape[-2]), int(videos.shape[-1])))


def write_outputs(out: Path, videos: torch.Tensor, names: list[str], fps: float, gif: bool = True,
                  ground_truth: Optional[torch.Tensor] = None, grid_frames: int = 16) -> dict:
    """Per-sample MP4 (+GIF), a PNG grid, and side-by-sides with the ground truth when given. Frames
    smaller than `DISPLAY_PIXELS` are enlarged by pixel repetition (`display_scale`; a 16 px video is
    written at 128 px), so a person can look at them; metrics are computed on the frames as generated."""
    from magi.visualize import upscale

    out.mkdir(parents=True, exist_ok=True)
    scale = display_scale(videos)
    files: dict[str, list[str]] = {"mp4": [], "gif": [], "compare_mp4": [], "compare_gif": []}
    for i, (video, name) in enumerate(zip(videos, names)):
        shown = upscale(video.permute(0, 2, 3, 1).numpy(), scale)  # (T, 3, H, W) -> (T, sH, sW, 3)
        files["mp4"].append(write_video(out / f"{name}.mp4", shown, fps).name)
        if gif:
            files["gif"].append(write_video(out / f"{name}.gif", shown, fps).name)
        if ground_truth is not None:
            both = upscale(side_by_side(ground_truth[i], video), scale)  # (T, H, 2W + pad, 3): truth | generated
            files["compare_mp4"].append(write_video(out / f"{name}_vs_truth.mp4", both, fps).name)
            if gif:
                files["compare_gif"].append(write_video(out / f"{name}_vs_truth.gif", both, fps).name)
    rows = [v for pair in zip(ground_truth, videos) for v in pair] if ground_truth is not None \
        else list(videos)
    scale = max(1, 64 // int(videos.shape[-2]))
    files["grid"] = [save_grid_png(out / "grid.png", rows, max_frames=grid_frames, scale=scale).name]
    return {k: v for k, v in files.items() if v}


# --------------------------------------------------------------------------------------------------
# The command


def build_parser() -> argparse.ArgumentParser:
    from magi.errors import ArgumentParser, number

    p = ArgumentParser(prog="magi sample", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint dir, run dir (latest step), or Hugging Face Hub id")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--step", type=int, help="with a run dir: which checkpoints/<step>/ to use")
    p.add_argument("--raw-weights", action="store_true", help="use model.safetensors instead of the EMA")
    p.add_argument("--vae", help="VAE spec (default: vae.spec from the checkpoint's train_config.yaml)")
    g = p.add_argument_group("what to generate")
    g.add_argument("--classes", help="class indices or names, comma-separated (class-conditional)")
    g.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a caption (text models; repeatable: one video set per prompt; '' is the null caption)")
    g.add_argument("--num-samples", type=int, default=4,
                   help="videos per class / per context clip / in total when unconditional (default 4)")
    g.add_argument("--frames", default=None,
                   help="video frames per sample incl. context, or 'Nx' for N times the training length "
                        "(default: the training length)")
    g.add_argument("--interval", type=int, default=None,
                   help="frame interval: conditions the model and spaces the context frames "
                        "(default: the interval the model was trained on, or its default_interval "
                        "when it was trained on a range)")
    g = p.add_argument_group("prediction (context frames)")
    g.add_argument("--context-video", nargs="+", help="video file(s) to continue")
    g.add_argument("--context-dataset", action="store_true",
                   help="continue clips of a dataset (the checkpoint's training data unless --data)")
    g.add_argument("--data", help="dataset kind for --context-dataset (folder, ucf101, k600, moving-digits, ...)")
    g.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. split=test or seed=1 (repeatable)")
    g.add_argument("--index", type=int, nargs="+", default=[0], help="dataset video indices (default 0)")
    g.add_argument("--start", type=int, default=0, help="first context frame in the source video")
    g.add_argument("--context-frames", type=int, default=None,
                   help="video frames given as context (default: one latent frame's worth)")
    add_sampling_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--fps", type=number(float, above=0), default=8.0)
    g.add_argument("--no-gif", action="store_true")
    g.add_argument("--overwrite", action="store_true", help="write into an --out that already holds samples")
    g.add_argument("--yes", action="store_true",
                   help=f"start a generation estimated at more than {CONFIRM_SECONDS / 3600:g} h")
    return p


def _file_name(text: str) -> str:
    """A class name as a safe file-name stem ("Playing Guitar/2" -> "Playing_Guitar_2")."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "class"


def _read_context(args, ckpt: LoadedCheckpoint, k: int, total: int, interval: int
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], list[dict]]:
    """(context uint8 (B, k, 3, H, W), ground truth (B, total, ...) or None, source records)."""
    from magi.data import probe, read_clip
    from magi.data.clips import clip_span

    H, W = ckpt.frame_size
    clips, truths, sources = [], [], []
    if args.context_video:
        from magi.data import VideoError

        for path in args.context_video:
            try:
                available = probe(path).num_frames
                n = total if available >= args.start + clip_span(total, interval) else k
                clip = read_clip(path, args.start, n, interval, size=(H, W))  # (n, 3, H, W)
            except VideoError as e:
                raise ValueError(f"--context-video {path}: {e.reason} (needed {k} context frames from frame "
                                 f"{args.start} at interval {interval})") from e
            clips.append(clip[:k])
            truths.append(clip if n == total else None)
            sources.append({"path": str(path), "start": args.start, "interval": interval})
    else:
        dataset = build_data(ckpt, args.data, apply_overrides({}, args.data_option))
        for index in args.index:
            if not 0 <= index < len(dataset):
                raise ValueError(f"--index {index}: the dataset has {len(dataset)} videos")
            length = dataset.video_frames(index)
            n = total if length is None or length >= args.start + clip_span(total, interval) else k
            clip = dataset.frames(index, num_frames=n, interval=interval, start=args.start)
            if tuple(clip.shape[-2:]) != (H, W):
                raise ValueError(f"dataset frames are {clip.shape[-2]}x{clip.shape[-1]} but the model makes "
                                 f"{H}x{W} videos; set the size with --data-option size={H}")
            clips.append(clip[:k])
            truths.append(clip if n == total else None)
            sources.append({"path": dataset.path_of(index), "index": index, "start": args.start,
                            "interval": interval, "label": int(dataset.label_of(index))})
    context = torch.stack(clips)  # (B, k, 3, H, W)
    truth = torch.stack(truths) if all(t is not None for t in truths) else None
    return context, truth, sources


# Long generations: past WARN_SECONDS (estimated) a warning with the estimate; past CONFIRM_SECONDS
# `--yes` is needed. The estimate is calibrated on a first frame (`estimate_seconds`); it runs only for
# jobs above ESTIMATE_WORK token-steps.
WARN_SECONDS = 600.0
CONFIRM_SECONDS = 3600.0
ESTIMATE_WORK = 500_000


def estimate_seconds(ckpt: LoadedCheckpoint, num_videos: int, new_latent_frames: int, batch_size: int,
                     options: SamplingOptions, labelled: bool) -> float:
    """Seconds to generate `new_latent_frames` frames for `num_videos` videos, calibrated on a first
    frame of one batch; decoding is not counted.

    A frame costs `mask_steps` transformer passes plus one diffusion sampling per token, and the
    tokens are the same however many mask steps reveal them, so the cost is not proportional to the
    mask steps. So: warm-up calls at 1 and k mask steps (the first call of a setting pays for
    allocations and schedules: timing it ran the estimate 5-8x high), then the frame at 1 and at k = 4
    mask steps (the faster of two tries each): frame = t(1) + (S - 1) x (t(k) - t(1)) / (k - 1), S the
    mask steps that reveal a token (with fewer tokens than steps the rest are skipped)."""
    b = min(batch_size, num_videos)
    labels = torch.zeros(b, dtype=torch.long, device=ckpt.device) if labelled else None

    def one_frame(mask_steps: int, diffusion_steps: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            ckpt.model.generate(1, labels=labels, intervals=ckpt.default_interval, cfg=options.cfg,
                                mask_steps=mask_steps, diffusion_steps=diffusion_steps, sampler=options.sampler,
                                generator=torch.Generator(device=ckpt.device).manual_seed(0), batch_size=b)
        return time.perf_counter() - t0

    from magi.model.magi import mask_schedule

    schedule = mask_schedule(ckpt.model.config.tokens_per_frame, options.mask_steps)
    steps = sum(1 for before, after in zip([ckpt.model.config.tokens_per_frame, *schedule], schedule)
                if after < before)  # steps that reveal a token: the others are skipped
    k = min(steps, 4)  # the longer probe: a larger difference, less noise
    for m in {1, k}:  # warm-up, not timed: the first call of a setting builds its schedules (2x slower)
        one_frame(m, options.diffusion_steps)
    first = min(one_frame(1, options.diffusion_steps) for _ in range(2))  # min: spikes of a busy machine
    per_step = 0.0
    if k > 1:
        per_step = max(0.0, min(one_frame(k, options.diffusion_steps) for _ in range(2)) - first) / (k - 1)
    per_frame = first + (steps - 1) * per_step
    return per_frame * new_latent_frames * -(-num_videos // b)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.0f} h"


def check_workload(ckpt: LoadedCheckpoint, num_videos: int, total: int, context_frames: int, batch_size: int,
                   options: SamplingOptions, labelled: bool, yes: bool) -> Optional[float]:
    """Warn about a long generation (estimate, output size) and refuse one past CONFIRM_SECONDS without
    `--yes`. Returns the estimate in seconds (None when the job is too small to be worth timing)."""
    new = ckpt.latent_frames(total) - (ckpt.latent_frames(context_frames) if context_frames else 0)
    work = num_videos * new * ckpt.model.config.tokens_per_frame * options.mask_steps * options.diffusion_steps
    if work < ESTIMATE_WORK:
        return None
    seconds = estimate_seconds(ckpt, num_videos, new, batch_size, options, labelled)
    H, W = ckpt.frame_size
    gigabytes = num_videos * total * H * W * 3 / 1e9
    what = (f"{num_videos} video(s) of {total} frames ({new} latent frames to generate, {options.mask_steps} mask x "
            f"{options.diffusion_steps} diffusion steps each) take about {_duration(seconds)} here"
            + (f" and {gigabytes:.1f} GB of memory for the frames" if gigabytes >= 1 else ""))
    if seconds > CONFIRM_SECONDS and not yes:
        raise ValueError(f"--frames/--num-samples: {what}; pass --yes to start it, or ask for fewer frames, "
                         f"videos or steps (--mask-steps, --diffusion-steps --sampler ddim)")
    if seconds > WARN_SECONDS:
        print(f"magi sample: warning: {what}", file=sys.stderr)
    return seconds


def main(argv: Optional[list[str]] = None) -> int:
    from magi.errors import USER_ERRORS, fail

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:  # bad input: one clear line, no traceback
        return fail("magi sample", e)


def _generate_from_prompts(ckpt: LoadedCheckpoint, prompts: list[str], labels, total: int, interval: int,
                           options, args) -> torch.Tensor:
    """Videos for `prompts` through `MagiPipeline` (the prompt encoded once each), batch by batch from
    one seeded generator: uint8 (B, T, 3, H, W)."""
    from magi.pipeline import MagiPipeline

    pipe = MagiPipeline.from_checkpoint(ckpt)
    generator = torch.Generator(device=ckpt.device).manual_seed(args.seed)
    out = []
    for start in range(0, len(prompts), args.batch_size):
        stop = min(start + args.batch_size, len(prompts))
        out.append(torch.from_numpy(pipe(
            prompt=prompts[start:stop], class_labels=None if labels is None else labels[start:stop],
            num_frames=total, guidance_scale=options.cfg, mask_steps=options.mask_steps,
            diffusion_steps=options.diffusion_steps, sampler=options.sampler, temperature=options.temperature,
            interval=interval, generator=generator, progress=not args.no_progress)).permute(0, 1, 4, 2, 3))
    return torch.cat(out)  # (B, T, 3, H, W)


def run(args: argparse.Namespace) -> int:
    """`magi sample` with parsed arguments."""
    device = pick_device(args.device)
    ckpt = load_pretrained(args.checkpoint, args.step, ema=not args.raw_weights, vae=args.vae, device=device)
    options = sampling_options(args)
    total = parse_frames(args.frames, ckpt) if args.frames is not None else ckpt.train_frames
    interval = args.interval if args.interval is not None else ckpt.default_interval
    try:
        ckpt.check_intervals(interval, args.allow_untrained_interval)
    except ValueError as e:
        raise ValueError(f"--interval: {e}") from e
    if args.num_samples < 1:
        raise ValueError(f"--num-samples: expected >= 1, got {args.num_samples}")
    predict = bool(args.context_video) or args.context_dataset
    if args.context_video and args.context_dataset:
        raise ValueError("give --context-video or --context-dataset, not both")

    labels = None
    class_names = None
    prompts = None
    if args.prompt is not None:
        if not ckpt.model.config.text_dim:
            raise ValueError("--prompt: this model has no text conditioning (it was trained without captions)")
        if args.context_video or args.context_dataset:
            raise ValueError("--prompt: text to video starts from nothing; give no --context-video/--context-dataset")
        prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    if args.classes is not None:
        if ckpt.num_classes == 0:
            raise ValueError("--classes given but this model is unconditional")
        recorded = ckpt.model.config.class_names
        if recorded is not None and args.data is None:  # stored in the checkpoint: no data needed
            class_names = list(recorded)
        elif not all(s.strip().lstrip("-").isdigit() for s in args.classes.split(",") if s.strip()):
            try:
                class_names = class_names_of(build_data(ckpt, args.data, apply_overrides({}, args.data_option)))
            except Exception as e:  # noqa: BLE001 - names are a convenience; say why they are unavailable
                raise ValueError(f"--classes: this checkpoint records no class names and its dataset could "
                                 f"not be opened ({e}); pass class indices") from e
        labels = parse_classes(args.classes, class_names, ckpt.num_classes)

    context = truth = None
    sources: list[dict] = []
    if predict:
        k = args.context_frames if args.context_frames is not None else ckpt.vae.video_frames(1)
        ckpt.latent_frames(k)  # a valid context length for this VAE
        context, truth, sources = _read_context(args, ckpt, k, total, interval)
        if labels is not None:  # class-conditional prediction: one label for all, or one per clip
            if len(labels) not in (1, len(context)):
                raise ValueError(f"--classes: give one class or one per context clip "
                                 f"({len(context)}), got {len(labels)}")
            labels = labels * len(context) if len(labels) == 1 else labels
            labels = [c for c in labels for _ in range(args.num_samples)]
        reps = args.num_samples
        context = context.repeat_interleave(reps, dim=0)
        truth = None if truth is None else truth.repeat_interleave(reps, dim=0)
        sources = [s for s in sources for _ in range(reps)]
        names = [f"predict_{i:03d}" for i in range(len(context))]
        task = "prediction"
    elif prompts is not None:
        if labels is not None:  # one class for all prompts, or one per prompt
            if len(labels) not in (1, len(args.prompt)):
                raise ValueError(f"--classes: give one class or one per --prompt ({len(args.prompt)}), got {len(labels)}")
            labels = [c for c in (labels * len(args.prompt) if len(labels) == 1 else labels)
                      for _ in range(args.num_samples)]
        names = [f"{_file_name(p) if p.strip() else 'null'}_{i:03d}" for i, p in enumerate(prompts)]
        task = "text"
    elif labels is not None:
        labels = [c for c in labels for _ in range(args.num_samples)]
        names = [f"{_file_name(class_names[c]) if class_names and c < len(class_names) else f'class{c}'}_{i:03d}"
                 for i, c in enumerate(labels)]
        task = "class-conditional"
    else:
        names = [f"sample_{i:03d}" for i in range(args.num_samples)]
        task = "unconditional"
    if options.cfg != 1.0 and prompts is None and ckpt.num_classes == 0:
        raise ValueError("--cfg needs a class-conditional model, or a text model and --prompt")
    if options.cfg != 1.0 and prompts is None and labels is None:
        raise ValueError("--cfg needs --classes or --prompt (guidance is towards a class or a caption)")

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file; expected a directory for the samples")
    if (out / "samples.json").is_file() and not args.overwrite:
        raise FileExistsError(f"--out: {out} already holds samples (samples.json); choose another --out or "
                              f"pass --overwrite")
    estimate = check_workload(ckpt, len(names), total, 0 if context is None else int(context.shape[1]),
                              args.batch_size, options, labels is not None, args.yes)
    t0 = time.perf_counter()
    if prompts is not None:
        videos = _generate_from_prompts(ckpt, prompts, labels, total, interval, options, args)
    else:
        videos = generate(ckpt, total, count=len(names), labels=labels, context=context, intervals=interval,
                          options=options, batch_size=args.batch_size, seed=args.seed,
                          progress=not args.no_progress, allow_untrained_interval=args.allow_untrained_interval)
    seconds = time.perf_counter() - t0
    files = write_outputs(out, videos, names, args.fps, gif=not args.no_gif, ground_truth=truth)

    record: dict[str, Any] = {
        "task": task, "checkpoint": ckpt.path, "step": ckpt.step, "ema": ckpt.ema, "vae": ckpt.vae_spec,
        "num_videos": len(videos), "frames": total, "latent_frames": ckpt.latent_frames(total),
        "train_frames": ckpt.train_frames, "frame_size": list(ckpt.frame_size), "interval": interval,
        "trained_intervals": list(ckpt.trained_intervals) if ckpt.trained_intervals else None,
        "labels": labels, "prompts": prompts, "sampling": asdict(options), "seed": args.seed, "batch_size": args.batch_size,
        "device": str(device), "seconds": seconds, "estimated_seconds": estimate,
        "display_scale": display_scale(videos),
        "seconds_per_frame": seconds / (len(videos) * (ckpt.latent_frames(total) - (
            0 if context is None else ckpt.latent_frames(context.shape[1])))),
        "files": files,
    }
    if class_names is not None and labels is not None:
        record["class_names"] = [class_names[c] if c < len(class_names) else str(c) for c in labels]
    if predict:
        record["context_frames"] = int(context.shape[1])
        record["sources"] = sources
        if truth is not None:
            from magi.evaluate.metrics import adjacent_frame_l2, prediction_metrics, save_curves

            record["metrics"] = prediction_metrics(videos, truth, context_frames=int(context.shape[1]))
            paths = save_curves(out / "adjacent_l2", {"ground truth": adjacent_frame_l2(truth),
                                                      "generated": adjacent_frame_l2(videos)},
                                title=f"adjacent-frame L2 ({task}, {len(videos)} videos)")
            record["files"]["adjacent_l2"] = [p.name for p in paths]
    (out / "samples.json").write_text(json.dumps(record, indent=1))
    scale, (H, W) = display_scale(videos), ckpt.frame_size
    shown = f"; files enlarged {scale}x to {W * scale}x{H * scale} px" if scale > 1 else ""
    print(f"wrote {len(videos)} {task} videos of {total} frames to {out} ({seconds:.1f} s{shown})")
    return 0


__all__ = ["build_parser", "run", "main", "parse_frames", "parse_classes", "write_outputs"]
