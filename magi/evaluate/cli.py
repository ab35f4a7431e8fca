"""`magi eval`: FVD under the paper's protocols, and prediction metrics.

    magi eval fvd CHECKPOINT --protocol ucf101 --data-root UCF-101/ --detector i3d_torchscript.pt --seeds 0,1,2
    magi eval fvd CHECKPOINT --protocol k600 --data-root k600/ --data-option list_file=val.csv --detector ...
    magi eval fvd CHECKPOINT --protocol custom --data moving-digits --frames 16 --num-videos 256 --i3d ...
    magi eval predict CHECKPOINT --data moving-digits --context-frames 4 --frames 16 --num-videos 64
    magi eval world-model RUN [RUN ...] --out DIR --rollouts 64 --horizon 32   (magi.world.evaluate)

Protocols (every choice can be overridden and is written next to the score):

| protocol | real clips | interval | frames | generated |
|---|---|---|---|---|
| ucf101 | 2,048 random videos of the train split, one clip each | 3 | 16 (17 with a 4x causal VAE, first 16 scored) | 2,048 (`--num-generated`; Table 4 uses 10,000), class labels drawn like the real set's |
| k600 | 50,000 random videos, one clip each | 1 | 16 (17) | one continuation of each real clip from its first 5 frames; FVD on the whole clip |
| custom | `--data KIND` (or the checkpoint's training data) | `--interval` | `--frames` | unconditional/class-conditional, or prediction with `--context-frames` |

Real clips come from `magi.evaluate.protocol.EvalClips` (deterministic from `--seed`); their I3D statistics are
cached (`--stats-cache`) under a key of everything that affects them (the detector included), so a second evaluation of
another checkpoint only runs the generator and the I3D on generated clips. The JSON result lists the
protocol, the deviations from the named protocol's published settings, the detector (file, SHA-256,
kind and how it was called: `--detector` takes StyleGAN-V's TorchScript `i3d_torchscript.pt`, which
most recent published FVDs use, or the TF-Hub port `i3d_pretrained_400.pt`; see `magi.evaluate.fvd`),
the sampling settings, the checkpoint, and the real clips' manifest. `--seeds a,b,c` generates once
per seed and reports the FVD's mean and standard deviation (`fvd`, `fvd_std`, `fvd_per_seed`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from magi.evaluate.fvd import (PREPROCESS_VERSION, StatsCache, describe_detector, feature_stats,
                               frechet_distance, i3d_features, load_detector)
from magi.evaluate.i3d import I3D_MIN_FRAMES, TF_BN_EPS
from magi.config_io import apply_overrides
from magi.evaluate.protocol import PROTOCOLS, build_clips, deviations
from magi.pretrained import (LoadedCheckpoint, add_sampling_arguments, iter_generate, load_pretrained, pick_device,
                             sampling_options)
from magi.video_io import save_grid_png, to_uint8_video


def _smallest_valid_frames(ckpt: LoadedCheckpoint, at_least: int) -> int:
    """The shortest clip the VAE maps onto whole latent frames with at least `at_least` frames."""
    n = at_least
    while True:
        try:
            ckpt.latent_frames(n)
            return n
        except ValueError:
            n += 1
            if n > at_least + 64:
                raise


def resolve_protocol(args: argparse.Namespace, ckpt: LoadedCheckpoint) -> dict:
    """Every choice of this evaluation, from the protocol's defaults and the arguments."""
    d = PROTOCOLS[args.protocol]
    H, W = ckpt.frame_size
    eval_frames = args.eval_frames or d.eval_frames or args.frames or ckpt.train_frames
    frames = args.frames or _smallest_valid_frames(ckpt, eval_frames)
    if eval_frames > frames:
        raise ValueError(f"--eval-frames {eval_frames} exceeds the clip length --frames {frames}")
    if eval_frames < I3D_MIN_FRAMES:
        raise ValueError(f"FVD scores clips of at least {I3D_MIN_FRAMES} frames (the I3D's limit); this "
                         f"evaluation would score {eval_frames}. Pass --frames/--eval-frames >= 9 (a model "
                         f"trained on {ckpt.train_frames} frames generates longer videos by interpolation)")
    ckpt.latent_frames(frames)  # must map onto whole latent frames
    context = args.context_frames if args.context_frames is not None else d.context_frames
    if context:
        ckpt.latent_frames(context)
        if ckpt.latent_frames(context) >= ckpt.latent_frames(frames):
            raise ValueError(f"--context-frames {context} leaves nothing to generate in {frames} frames")
    num_videos = args.num_videos or d.num_videos
    if num_videos is None:
        raise ValueError("--num-videos is required with --protocol custom")
    num_generated = args.num_generated or d.num_generated or num_videos
    if context and num_generated != num_videos:
        raise ValueError("prediction protocols continue each real clip once: --num-generated must "
                         "equal --num-videos")
    interval = args.interval or d.interval
    if interval is None:
        interval = ckpt.default_interval  # the trained interval (custom protocol)
    resolution = args.resolution or H
    if context and resolution != H:
        raise ValueError(f"--resolution {resolution}: context frames must be at the model's {H}x{W}")
    protocol = {
        "name": args.protocol,
        "data": args.data or d.data,
        "data_root": str(args.data_root) if args.data_root else None,
        "data_options": apply_overrides({}, args.data_option),
        "split": args.split or d.split,
        "num_videos": num_videos,
        "num_generated": num_generated,
        "interval": interval,
        "frames": frames,
        "eval_frames": eval_frames,
        "context_frames": context,
        "resolution": resolution,
        "seed": args.seed,
        "generation_seeds": parse_seeds(args.seeds) if args.seeds else [args.seed],
        # a class-conditional model is conditioned on labels drawn like the real set's
        "labels": "real" if ckpt.num_classes > 0 and not args.unconditional else None,
        "condition_interval": args.condition_interval or interval,
        "trained_intervals": list(ckpt.trained_intervals) if ckpt.trained_intervals else None,
    }
    check_condition_interval(protocol, ckpt, args)
    return protocol


def check_condition_interval(protocol: dict, ckpt: LoadedCheckpoint, args: argparse.Namespace) -> None:
    """Refuse to condition on an interval the model never trained on (unless --allow-untrained-interval)."""
    try:
        ckpt.check_intervals(protocol["condition_interval"], getattr(args, "allow_untrained_interval", False))
    except ValueError as e:
        raise ValueError(f"{e}. The real clips are at interval {protocol['interval']}; --condition-interval K "
                         f"conditions the model on another interval") from e


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2] (distinct integers)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def _as_list(items: list) -> list:
    return items


def _real_batches(clips, batch_size: int, workers: int):
    """uint8 (b, T, 3, H, W) batches of the real clips in slot order, and their labels."""
    loader = torch.utils.data.DataLoader(clips, batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_as_list)
    for items in loader:
        video = torch.stack([to_uint8_video(item["video"]) for item in items])  # (b, T, 3, H, W)
        yield video, [int(item["label"]) for item in items]


def _labels_of(clips, num_classes: int) -> list[int]:
    """The label of each slot's clip (its first candidate video) without decoding any video."""
    labels = [int(clips.source.label_of(clips.candidates(slot)[0])) for slot in range(len(clips))]
    bad = sorted({x for x in labels if not 0 <= x < num_classes})
    if bad:
        raise ValueError(f"the real clips' labels {bad[:5]} are outside the model's {num_classes} classes; "
                         "pass --unconditional to generate without labels")
    return labels


def run_fvd(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    ckpt = load_pretrained(args.checkpoint, args.step, ema=not args.raw_weights, vae=args.vae,
                           device=device)
    options = sampling_options(args)
    protocol = resolve_protocol(args, ckpt)
    i3d_path = Path(args.detector)
    i3d = load_detector(i3d_path, bn_eps=args.bn_eps, device=device)
    i3d_info = describe_detector(i3d, i3d_path, args.bn_eps)
    progress = not args.no_progress
    clips = build_clips(protocol, ckpt)
    E, k = protocol["eval_frames"], protocol["context_frames"]

    # Real statistics: keyed by everything that changes the real features.
    real_key = {key: protocol[key] for key in ("name", "data", "data_root", "data_options", "split",
                                               "num_videos", "interval", "frames", "eval_frames",
                                               "resolution", "seed")}
    if i3d_info["kind"] == "tfhub-i3d-port":
        real_key.update(i3d_sha256=i3d_info["sha256"], bn_eps=args.bn_eps, preprocess=PREPROCESS_VERSION)
    else:
        real_key.update(i3d_sha256=i3d_info["sha256"], detector=i3d_info["kind"], call=i3d_info["kwargs"])
    cache = StatsCache(args.stats_cache) if args.stats_cache else None
    cached = cache.load(real_key) if cache is not None else None

    from tqdm.auto import tqdm

    labels_all = _labels_of(clips, ckpt.num_classes) if protocol["labels"] == "real" else None
    preview: list[torch.Tensor] = []
    t0 = time.perf_counter()
    gen_seconds = 0.0
    mu_r, sigma_r, n_real = cached if cached is not None else (None, None, None)
    scores: dict[int, float] = {}
    for seed in protocol["generation_seeds"]:  # one generation (and FVD) per seed, the real statistics shared
        generator = torch.Generator(device=device).manual_seed(seed)
        real_features: list[torch.Tensor] = []
        fake_features: list[torch.Tensor] = []
        need_real = mu_r is None
        if need_real or k:
            # One pass over the real clips: their features (unless known) and, for prediction, the
            # continuation of each clip from its first k frames.
            bar = tqdm(total=len(clips), desc="real clips", disable=not progress)
            for real, labels in _real_batches(clips, args.batch_size, args.workers):
                if need_real:
                    real_features.append(i3d_features(i3d, real[:, :E], batch_size=args.i3d_batch_size))
                if k:
                    t = time.perf_counter()
                    fake = next(iter_generate(ckpt, protocol["frames"], context=real[:, :k],
                                              labels=labels if protocol["labels"] == "real" else None,
                                              intervals=protocol["condition_interval"], options=options,
                                              batch_size=len(real), generator=generator, progress=False,
                                              allow_untrained_interval=args.allow_untrained_interval))
                    gen_seconds += time.perf_counter() - t
                    fake_features.append(i3d_features(i3d, fake[:, :E], batch_size=args.i3d_batch_size))
                    if len(preview) < args.save_videos:
                        preview.extend(fake[: args.save_videos - len(preview)])
                bar.update(len(real))
            bar.close()
        if need_real:
            feats = torch.cat(real_features)
            mu_r, sigma_r = feature_stats(feats)
            if cache is not None:
                cache.save(real_key, mu_r, sigma_r, len(feats))
            n_real = len(feats)
        if not k:
            M = protocol["num_generated"]
            labels = None
            if labels_all is not None:
                if M == len(labels_all):
                    labels = labels_all
                else:  # draw labels like the real set's: from its empirical distribution
                    rng = np.random.default_rng([seed, 2])
                    labels = [int(x) for x in rng.choice(labels_all, size=M, replace=True)]
            t, i3d_seconds = time.perf_counter(), 0.0
            for fake in iter_generate(ckpt, protocol["frames"], count=M, labels=labels,
                                      intervals=protocol["condition_interval"], options=options,
                                      batch_size=args.batch_size, generator=generator, progress=progress,
                                      allow_untrained_interval=args.allow_untrained_interval):
                t_i3d = time.perf_counter()
                fake_features.append(i3d_features(i3d, fake[:, :E], batch_size=args.i3d_batch_size))
                i3d_seconds += time.perf_counter() - t_i3d
                if len(preview) < args.save_videos:
                    preview.extend(fake[: args.save_videos - len(preview)])
            gen_seconds += time.perf_counter() - t - i3d_seconds  # generation and decoding only
        fake_feats = torch.cat(fake_features)
        mu_g, sigma_g = feature_stats(fake_feats)
        scores[seed] = frechet_distance(mu_r, sigma_r, mu_g, sigma_g)
    values = list(scores.values())
    score = float(np.mean(values))
    score_std = float(np.std(values, ddof=1)) if len(values) > 1 else None

    result: dict[str, Any] = {
        "fvd": score,
        "fvd_std": score_std,  # over the generation seeds (None for one seed)
        "fvd_per_seed": {str(k_): v for k_, v in scores.items()},
        "protocol": protocol,
        "deviations": deviations(protocol, ckpt, options),
        "real": {"num_clips": int(n_real), "stats_cached": cached is not None,
                 "unreadable_videos_skipped": getattr(clips.source, "skipped", None),
                 "stats_file": str(cache.path(real_key)) if cache is not None else None},
        "generated": {"num_clips": int(len(fake_feats)), "seeds": list(scores), "seconds": gen_seconds},
        "sampling": asdict(options),
        "batch_size": args.batch_size,
        "model": {"checkpoint": ckpt.path, "step": ckpt.step, "ema": ckpt.ema, "vae": ckpt.vae_spec,
                  "frame_size": list(ckpt.frame_size), "train_frames": ckpt.train_frames,
                  "config": ckpt.model.config.to_dict()},
        "detector": i3d_info,
        "i3d": i3d_info,  # the same record under its earlier name
        "preprocess": PREPROCESS_VERSION,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": str(device)},
        "seconds": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = out.with_name(out.stem + "_real_clips.json")
    manifest.write_text(json.dumps(clips.manifest(), indent=0))
    result["real"]["manifest"] = manifest.name
    if preview:
        grid = save_grid_png(out.with_name(out.stem + "_samples.png"), preview, max_frames=16,
                             scale=max(1, 64 // int(preview[0].shape[-2])))
        result["generated"]["preview"] = grid.name
    out.write_text(json.dumps(result, indent=1))
    spread = f" ± {score_std:.2f} over seeds {','.join(map(str, scores))}" if score_std is not None else ""
    print(f"FVD ({protocol['name']}, {n_real} real / {len(fake_feats)} generated clips, {i3d_info['kind']}): "
          f"{score:.2f}{spread} -> {out}")
    return result


def run_predict(args: argparse.Namespace) -> dict:
    """Per-frame PSNR/SSIM and adjacent-frame L2 curves of continuations of real clips."""
    from magi.evaluate.metrics import adjacent_frame_l2, prediction_metrics, save_curves

    device = pick_device(args.device)
    ckpt = load_pretrained(args.checkpoint, args.step, ema=not args.raw_weights, vae=args.vae,
                           device=device)
    options = sampling_options(args)
    frames = args.frames or ckpt.train_frames
    k = args.context_frames if args.context_frames is not None else ckpt.vae.video_frames(1)
    if ckpt.latent_frames(k) >= ckpt.latent_frames(frames):
        raise ValueError(f"--context-frames {k} leaves nothing to generate in {frames} frames")
    protocol = {"name": "custom", "data": args.data, "data_root": str(args.data_root) if args.data_root else None,
                "data_options": apply_overrides({}, args.data_option), "split": args.split,
                "num_videos": args.num_videos, "interval": args.interval or ckpt.default_interval,
                "frames": frames, "resolution": ckpt.frame_size[0], "seed": args.seed}
    protocol["condition_interval"] = args.condition_interval or protocol["interval"]
    protocol["trained_intervals"] = list(ckpt.trained_intervals) if ckpt.trained_intervals else None
    check_condition_interval(protocol, ckpt, args)
    clips = build_clips(protocol, ckpt)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    truths, fakes = [], []
    for real, labels in _real_batches(clips, args.batch_size, args.workers):
        fake = next(iter_generate(ckpt, frames, context=real[:, :k],
                                  labels=labels if ckpt.num_classes > 0 and not args.unconditional else None,
                                  intervals=protocol["condition_interval"],
                                  options=options, batch_size=len(real), generator=generator,
                                  progress=not args.no_progress,
                                  allow_untrained_interval=args.allow_untrained_interval))
        truths.append(real)
        fakes.append(fake)
    truth, fake = torch.cat(truths), torch.cat(fakes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = prediction_metrics(fake, truth, context_frames=k)
    curves = save_curves(out / "adjacent_l2", {"ground truth": adjacent_frame_l2(truth),
                                              "generated": adjacent_frame_l2(fake)},
                         title=f"adjacent-frame L2, {len(fake)} clips, {k} context frames")
    rows = [v for pair in zip(truth[: args.save_videos], fake[: args.save_videos]) for v in pair]
    files = [p.name for p in curves]
    if rows:
        files.append(save_grid_png(out / "samples.png", rows, max_frames=16,
                                   scale=max(1, 64 // int(fake.shape[-2]))).name)
    result = {"metrics": metrics, "protocol": protocol, "context_frames": k,
              "sampling": asdict(options), "files": files,
              "model": {"checkpoint": ckpt.path, "step": ckpt.step, "ema": ckpt.ema, "vae": ckpt.vae_spec}}
    (out / "predict.json").write_text(json.dumps(result, indent=1))
    def shown(value, unit=""):
        return "n/a" if value is None else f"{value:.2f}{unit}" if unit else f"{value:.4f}"

    print(f"prediction ({len(fake)} clips): PSNR {shown(metrics['psnr'], ' dB')}, SSIM {shown(metrics['ssim'])} "
          f"-> {out / 'predict.json'}")
    return result


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint dir, run dir (latest step), or Hugging Face Hub id")
    p.add_argument("--step", type=int)
    p.add_argument("--raw-weights", action="store_true", help="use model.safetensors instead of the EMA")
    p.add_argument("--vae", help="VAE spec (default: from the checkpoint's train_config.yaml)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="a folder of videos, one sub-folder per class (as magi train --data), or a "
                   "dataset kind (ucf101, k600, folder, moving-digits, atari) with --data-root")
    g.add_argument("--data-root", help="the dataset's root folder (with a --data kind)")
    g.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. list_file=val.csv or fold=2 (repeatable)")
    g.add_argument("--split", help="dataset split (UCF-101: train, test, all)")
    g.add_argument("--num-videos", type=int, help="real clips (one per random video)")
    g.add_argument("--interval", type=int, help="frame interval of the real clips")
    g.add_argument("--frames", type=int, help="frames per clip, context included")
    g.add_argument("--context-frames", type=int, help="frames of each real clip given as context")
    g.add_argument("--condition-interval", type=int,
                   help="interval the model is conditioned on (default: the clips' interval)")
    g.add_argument("--unconditional", action="store_true",
                   help="do not condition a class-conditional model on the real clips' labels")
    g.add_argument("--workers", type=int, default=0, help="data-loading processes")
    g.add_argument("--save-videos", type=int, default=8, help="generated clips shown in a PNG grid")
    add_sampling_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    from magi.errors import ArgumentParser

    p = ArgumentParser(prog="magi eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fvd", help="Fréchet Video Distance under a protocol",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(f)
    f.add_argument("--protocol", choices=sorted(PROTOCOLS), default="custom")
    f.add_argument("--detector", "--i3d", dest="detector", required=True,
                   help="FVD feature network: StyleGAN-V's i3d_torchscript.pt (what most published UCF-101/K600 "
                        "FVDs use; loading it runs the archive's TorchScript code) or i3d_pretrained_400.pt "
                        "(the TF-Hub I3D port; or .safetensors)")
    f.add_argument("--seeds", help="generation seeds, e.g. 0,1,2: generate once per seed and report the FVD's "
                                   "mean and std (the real clips stay those of --seed)")
    f.add_argument("--bn-eps", type=float, default=TF_BN_EPS,
                   help="I3D batch-norm epsilon: 1e-3 as in the TF-Hub graph; 1e-5 reproduces ports using it")
    f.add_argument("--num-generated", type=int,
                   help="generated clips (default: ucf101 2,048 as the paper's appendix; else as many as real). "
                        "The paper's Table 4 (FVD_128,10k) generates 10,000")
    f.add_argument("--eval-frames", type=int, help="frames scored (default: 16 for ucf101/k600, else --frames)")
    f.add_argument("--resolution", type=int, help="real clip size in px (default: the model's)")
    f.add_argument("--stats-cache", default="outputs/fvd_stats",
                   help="directory of cached real-set statistics ('' to disable)")
    f.add_argument("--i3d-batch-size", type=int, default=8)
    f.add_argument("--out", required=True, help="result JSON file")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q = sub.add_parser("predict", help="PSNR/SSIM per frame and adjacent-frame L2 curves of predictions")
    _common(q)
    q.add_argument("--out", required=True, help="output directory")
    q.add_argument("--overwrite", action="store_true", help="write into an --out that holds a predict.json")
    from magi.world import evaluate as world_model

    w = sub.add_parser("world-model", help="an action-conditioned model against the emulator: PSNR/SSIM "
                       "per horizon step, player position error with true / shuffled / null actions",
                       description=world_model.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    world_model.add_arguments(w)
    from magi.evaluate import text_eval

    t = sub.add_parser("text", help="a text model's caption accuracy on captioned digits: digit / motion / both, "
                       "seen and held-out captions, shuffled and null prompts, a guidance sweep",
                       description=text_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    text_eval.add_arguments(t)
    return p


def data_argument(args: argparse.Namespace) -> None:
    """`--data DIR` as `magi train --data` takes it: a folder of videos means `--data folder --data-root
    DIR`. Anything else must be a dataset kind; ValueError says both forms."""
    from magi.data import _builders

    if args.data is None or args.data in _builders():
        return
    if Path(args.data).is_dir():
        if args.data_root:
            raise ValueError(f"--data {args.data} is a folder and --data-root {args.data_root} another: give the "
                             "folder as --data DIR, or a kind as --data KIND --data-root DIR")
        args.data, args.data_root = "folder", args.data
        return
    raise ValueError(f"--data {args.data!r}: neither a folder of videos (as magi train --data DIR takes it) nor a "
                     f"dataset kind ({', '.join(_builders())}, with --data-root DIR)")


def main(argv: Optional[list[str]] = None) -> int:
    from magi.errors import USER_ERRORS, fail

    args = build_parser().parse_args(argv)
    try:
        if args.command in ("fvd", "predict"):
            data_argument(args)
        if args.command == "world-model":
            from magi.world import evaluate as world_model

            world_model.run(args)
        elif args.command == "text":
            from magi.evaluate import text_eval

            text_eval.run(args)
        elif args.command == "fvd":
            if args.protocol == "custom" and args.num_videos is None:
                raise ValueError("--num-videos is required with --protocol custom")
            if Path(args.out).exists() and not args.overwrite:  # never overwrite a result silently
                raise FileExistsError(f"--out: {args.out} exists; choose another file or pass --overwrite")
            run_fvd(args)
        else:
            if args.num_videos is None:
                raise ValueError("--num-videos is required")
            if (Path(args.out) / "predict.json").exists() and not args.overwrite:
                raise FileExistsError(f"--out: {args.out} already holds a predict.json; choose another "
                                      f"directory or pass --overwrite")
            run_predict(args)
    except USER_ERRORS as e:
        return fail(f"magi eval {args.command}", e)
    return 0


__all__ = ["PROTOCOLS", "resolve_protocol", "run_fvd", "run_predict", "main"]
