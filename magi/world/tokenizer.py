"""A frame tokenizer trained here: a small diffusers `AutoencoderKL` fitted to one game's recordings.

Why (docs/design.md §8): MAGI's diffusion head draws each token from its condition alone;
raw pixel tokens (`pixels:4:gray`, 64 values per 8x8 block) give it no image prior, and the world model
drew gray mosaics. A convolutional autoencoder trained on the recordings gives compact colour tokens
(64x64 RGB -> 4 x 16 x 16 latents: 64 tokens of 16 values at patch 2) and a decoder that draws the
sprites crisply from them.

The loss weighs the pixels that change between consecutive frames (the boxers, the score, the clock)
more than the static ring, so what matters for the game survives the bottleneck:

    w = 1 + change_weight * dilate3x3(x_t != x_{t-1})      (per pixel, any channel)
        + hud_weight * [row < hud_rows]                     (a score strip drawn at full resolution)
    L = sum(w * |x_hat_t - x_t|) / sum(w) + kl_weight * KL(q(z | x_t) || N(0, I))

Training is a plain loop (AdamW, warm-up then constant with a final linear decay, EMA of the weights),
checkpointed like `magi train` (`OUT/checkpoints/<step>/`, written atomically; `--resume auto`
continues exactly: each batch and its posterior noise are pure functions of (seed, step)). The export is
a diffusers folder (`save_pretrained`, safetensors) whose config carries the latents' per-channel mean
and std measured on training frames, so `magi.vae.load_vae(folder)` returns latents of unit scale.

    magi tokenizer train --config configs/atari_tokenizer.yaml --out runs/atari_tokenizer --resume auto
    magi tokenizer export runs/atari_tokenizer --out runs/atari_tokenizer/export
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from magi.config import DataConfig
from magi.config_io import from_dict, load_yaml, to_dict

EXPORT_INFO = "tokenizer.json"  # written beside the exported diffusers files


# --------------------------------------------------------------------------------------------------
# Configs


@dataclass
class TokenizerModelConfig:
    """The autoencoder: diffusers `AutoencoderKL` with one down/up block per entry of
    `block_out_channels` (spatial stride 2 ** (len - 1)) and no mid-block attention (its cost at 16x16
    buys nothing for sprites). The decoder runs every generated frame, so its full-resolution width
    (the first entry) sets the per-frame cost."""

    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8

    def validate(self) -> None:
        if not self.block_out_channels or any(c < 1 for c in self.block_out_channels):
            raise ValueError(f"model.block_out_channels: expected positive widths, got {self.block_out_channels}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"model.block_out_channels: {bad} not divisible by model.norm_num_groups="
                             f"{self.norm_num_groups}")
        if self.layers_per_block < 1 or self.latent_channels < 1:
            raise ValueError("model.layers_per_block and model.latent_channels: expected >= 1")

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def build(self, sample_size: int):
        from diffusers import AutoencoderKL

        n = len(self.block_out_channels)
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups, sample_size=sample_size, scaling_factor=1.0,
            mid_block_add_attention=False, force_upcast=False)


@dataclass
class TokenizerTrainConfig:
    max_steps: int = 3000
    batch_size: int = 16
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay_steps: int = 500          # linear decay to min_lr_ratio over the last decay_steps
    min_lr_ratio: float = 0.1
    change_weight: float = 10.0     # extra loss weight of pixels that change between frames
    hud_rows: int = 0               # the frame's top rows that hold the score strip (layout "hud": 7)
    hud_weight: float = 0.0         # extra loss weight of those rows, so the digits survive when they hold still
    kl_weight: float = 1.0e-6
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    keep_last: int = 2
    log_every: int = 25
    num_threads: Optional[int] = 1
    seed: int = 0
    max_minutes: Optional[float] = None
    stats_frames: int = 2048        # training frames the export measures the latent statistics on

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "checkpoint_every", "keep_last", "log_every", "stats_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr", "change_weight", "kl_weight", "weight_decay", "warmup_steps", "decay_steps", "hud_rows",
                     "hud_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"train.{name}: expected a finite number >= 0, got {value}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("train.ema_decay: expected [0, 1); train.min_lr_ratio: expected [0, 1]")


@dataclass
class TokenizerRunConfig:
    """One YAML file: `model` (the autoencoder), `data` (recordings, as `magi train` takes them: items
    with `video`; the tokenizer reads each episode whole) and `train` (the recipe)."""

    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "TokenizerRunConfig":
        return cls.from_dict(load_yaml(path, overrides))

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerRunConfig":
        run = from_dict(cls, data)
        run.model.validate()
        run.data.validate()
        run.train.validate()
        return run

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Data: every frame of the recordings in memory, sampled as (previous, current) pairs


class FramePairs:
    """All frames of a dataset's episodes as one uint8 tensor (F, 3, H, W), and the indices t whose
    previous frame t-1 is in the same episode. 48 Boxing episodes of 1,000 frames at 64x64: 590 MB."""

    def __init__(self, dataset, max_episodes: int | None = None, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        n = len(dataset) if max_episodes is None else min(len(dataset), max_episodes)
        episodes, self.paths = [], []
        for i in tqdm(range(n), desc="reading episodes", unit="episode", disable=not progress):
            length = dataset.video_frames(i)
            episodes.append(dataset.frames(i, num_frames=length, interval=1, start=0))  # (T_i, 3, H, W)
            self.paths.append(dataset.path_of(i))
        if not episodes:
            raise ValueError("tokenizer data: the dataset has no episodes")
        offsets = np.cumsum([0] + [len(e) for e in episodes])
        self.frames = torch.cat(episodes)  # (F, 3, H, W) uint8
        self.episode_starts = offsets[:-1]
        self.current = torch.from_numpy(np.concatenate(
            [np.arange(a + 1, b) for a, b in zip(offsets[:-1], offsets[1:])]))  # (P,) t with t-1 alike
        if len(self.current) == 0:
            raise ValueError("tokenizer data: no episode has two frames")

    @property
    def size(self) -> int:
        return int(self.frames.shape[-1])

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(previous, current) uint8 (B, 3, H, W) for training step `step`: a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, step, 7])
        t = self.current[torch.from_numpy(rng.integers(0, len(self.current), batch_size))]  # (B,)
        return self.frames[t - 1], self.frames[t]

    def spread(self, count: int) -> torch.Tensor:
        """`count` frames evenly spaced over all episodes, uint8 (count, 3, H, W)."""
        idx = torch.linspace(0, len(self.frames) - 1, min(count, len(self.frames))).round().long()
        return self.frames[idx]


def change_weights(previous: torch.Tensor, current: torch.Tensor, change_weight: float, hud_rows: int = 0,
                   hud_weight: float = 0.0) -> torch.Tensor:
    """float (B, 1, H, W): 1 + change_weight where a pixel (or its 3x3 neighbourhood) differs from the
    previous frame in any channel, + hud_weight in the top `hud_rows` rows (a score strip)."""
    changed = (previous != current).any(dim=1, keepdim=True).float()  # (B, 1, H, W)
    changed = F.max_pool2d(changed, kernel_size=3, stride=1, padding=1)  # dilate by one pixel
    w = 1.0 + change_weight * changed
    w[:, :, :hud_rows] += hud_weight
    return w


def tokenizer_loss(model: nn.Module, previous: torch.Tensor, current: torch.Tensor, change_weight: float,
                   kl_weight: float, generator: torch.Generator | None = None, hud_rows: int = 0,
                   hud_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The change-weighted L1 reconstruction of `current` (uint8 (B, 3, H, W)) plus a small KL; the top
    `hud_rows` rows (a score strip) weigh `hud_weight` more."""
    from magi.video_io import to_float_video

    x = to_float_video(current)  # (B, 3, H, W) in [-1, 1]
    w = change_weights(previous, current, change_weight, hud_rows, hud_weight)  # (B, 1, H, W)
    posterior = model.encode(x).latent_dist
    recon = model.decode(posterior.sample(generator=generator)).sample  # (B, 3, H, W)
    l1 = (w * (recon - x).abs()).sum() / (w.sum() * x.shape[1])
    kl = posterior.kl().mean() / x[0].numel()  # per pixel value, as the reconstruction term
    with torch.no_grad():
        mse = F.mse_loss(recon.clamp(-1, 1), x)
    return {"loss": l1 + kl_weight * kl, "l1_weighted": l1.detach(), "kl": kl.detach(),
            "psnr": 10 * torch.log10(4.0 / mse.clamp_min(1e-10))}


# --------------------------------------------------------------------------------------------------
# Training


def _lr_factor(train: TokenizerTrainConfig, step: int) -> float:
    from magi.recipe import LRSchedule

    return LRSchedule(train.warmup_steps, train.max_steps, "constant", train.min_lr_ratio, train.decay_steps)(step)


class _Stop:
    """SIGINT/SIGTERM ask the loop to save after the current step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        def handler(signum, frame):  # noqa: ARG001
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signal = signum
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then exiting",
                  file=sys.stderr)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train_tokenizer(run: TokenizerRunConfig, out_dir: str | Path, resume: str | None = None,
                    frames: FramePairs | None = None, progress: bool = True,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train (or continue) the tokenizer into `out_dir`; returns {"step", "checkpoint", "loss", "psnr"}.

    `resume`: None (the directory must hold no checkpoint), "auto" (the newest checkpoint, if any) or a
    checkpoint directory. `frames` may be passed to reuse loaded episodes (they stay on the CPU; each
    batch moves to `device`). The batches and the posterior noise are the same on every device (the
    noise is drawn on the CPU); the arithmetic, and so the weights, match only on the same device."""
    from tqdm.auto import tqdm

    from magi import checkpoint as ckpt
    from magi.data import build_dataset
    from magi.distributed import DistInfo
    from magi.ema import ema_decay_at, make_ema, update_ema
    from magi.logging_utils import MetricsLogger

    tc = run.train
    out = Path(out_dir)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    start_from = None
    if resume == "auto":
        start_from = ckpt.latest_checkpoint(out)
    elif resume is not None:
        start_from = Path(resume)
    elif ckpt.list_checkpoints(out):
        raise FileExistsError(f"{out} already holds a tokenizer run; pass --resume auto to continue it")
    if frames is None:
        frames = FramePairs(build_dataset(run.data.kind, **run.data.options), progress=progress)

    device = torch.device(device)
    torch.manual_seed(tc.seed)  # the initial weights (a resumed run overwrites them)
    model = run.model.build(frames.size).to(device)
    ema = make_ema(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(tc, s))
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    step = 0
    out.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temporaries(out)
    if start_from is not None:
        state = ckpt.restore_checkpoint(start_from, model=model, ema=ema, optimizer=optimizer,
                                     scheduler=scheduler, info=info)
        step = int(state["step"])
        print(f"resumed from {start_from} at step {step}")
    (out / "tokenizer_config.yaml").write_text(run.to_yaml())
    model_config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}

    def save() -> Path:
        return ckpt.save_checkpoint(out, step, model=model, ema=ema, optimizer=optimizer, scheduler=scheduler,
                                    model_config=model_config, run_config_yaml=run.to_yaml(),
                                    state={"step": step, "frames": int(len(frames.frames))}, info=info,
                                    keep_last=tc.keep_last)

    logger = MetricsLogger(out, tensorboard=True)
    began, window, last = time.monotonic(), [], {}
    model.train()
    bar = tqdm(total=tc.max_steps, initial=step, desc="tokenizer", unit="step", disable=not progress)
    with _Stop() as stop:
        while step < tc.max_steps:
            previous, current = (x.to(device) for x in frames.batch(tc.seed, step, tc.batch_size))
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence([tc.seed, step, 11])
                                                          .generate_state(1)[0]))  # on the CPU, for every device
            losses = tokenizer_loss(model, previous, current, tc.change_weight, tc.kl_weight, generator,
                                    tc.hud_rows, tc.hud_weight)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"tokenizer: non-finite loss at step {step}; last checkpoint kept")
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            scheduler.step()
            update_ema(ema, model, ema_decay_at(step, tc.ema_decay))
            step += 1
            bar.update(1)
            window.append({k: float(v.detach()) for k, v in losses.items()})
            if step % tc.log_every == 0 or step == tc.max_steps:
                last = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                last["lr"] = optimizer.param_groups[0]["lr"]
                logger.log(step, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.1f}")
                window = []
            out_of_time = tc.max_minutes is not None and time.monotonic() - began > 60 * tc.max_minutes
            if step % tc.checkpoint_every == 0 or step == tc.max_steps or stop.signal or out_of_time:
                path = save()
            if stop.signal or out_of_time:
                break
    bar.close()
    logger.close()
    path = ckpt.latest_checkpoint(out)
    if path is None or int(path.name) != step:
        path = save()
    return {"step": step, "checkpoint": str(path), **last}


# --------------------------------------------------------------------------------------------------
# Export: a diffusers folder with the latent statistics in its config


@torch.no_grad()
def latent_statistics(model: nn.Module, frames: torch.Tensor, batch_size: int = 64) -> tuple[list, list]:
    """Per-channel mean and std of the posterior modes of uint8 frames (N, 3, H, W)."""
    from magi.video_io import to_float_video

    z = torch.cat([model.encode(to_float_video(f)).latent_dist.mode() for f in frames.split(batch_size)])
    z = z.transpose(0, 1).flatten(1)  # (C, N*h*w)
    return z.mean(dim=1).tolist(), z.std(dim=1).clamp_min(1e-6).tolist()


def export_tokenizer(run_dir: str | Path, out: str | Path, step: int | None = None,
                     frames: FramePairs | None = None, progress: bool = True) -> Path:
    """Write the EMA weights of `run_dir`'s newest (or `step`) checkpoint as a diffusers folder at `out`
    (atomically), with `latents_mean` / `latents_std` measured on its training frames and
    `scaling_factor` 1, and `tokenizer.json` saying where it came from. Returns `out`."""
    from safetensors.torch import load_file

    from magi import checkpoint as ckpt
    from magi.data import build_dataset

    run_dir, out = Path(run_dir), Path(out)
    path = ckpt.latest_checkpoint(run_dir) if step is None else ckpt.checkpoint_root(run_dir) / str(step)
    if path is None or not path.is_dir():
        raise FileNotFoundError(f"{run_dir}: no tokenizer checkpoint{'' if step is None else f' at step {step}'}")
    run = TokenizerRunConfig.from_dict(yaml.safe_load((path / ckpt.RUN_CONFIG_FILE).read_text()))
    if frames is None:
        frames = FramePairs(build_dataset(run.data.kind, **run.data.options), progress=progress)
    model = run.model.build(frames.size)
    model.load_state_dict(load_file(str(path / ckpt.EMA_FILE)))
    model.eval()
    mean, std = latent_statistics(model, frames.spread(run.train.stats_frames))
    model.register_to_config(latents_mean=mean, latents_std=std, scaling_factor=1.0, shift_factor=None)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / EXPORT_INFO).write_text(json.dumps({
        "checkpoint": str(path), "step": int(path.name), "ema": True, "latents_mean": mean, "latents_std": std,
        "stats_frames": min(run.train.stats_frames, len(frames.frames)), "config": to_dict(run)}, indent=1))
    if out.exists():
        old = out.parent / f".old-{out.name}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    return out


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    from magi.data import build_dataset
    from magi.errors import USER_ERRORS, ArgumentParser, fail
    from magi.pretrained import add_device_argument, pick_device

    p = ArgumentParser(prog="magi tokenizer", description="train and export a frame tokenizer (a small "
                       "diffusers AutoencoderKL) on recordings")
    sub = p.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train (or continue) a tokenizer from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    t.add_argument("--resume", help="'auto' (newest checkpoint in --out) or a checkpoint directory")
    t.add_argument("--export", help="after training, export the EMA weights as a diffusers folder here")
    add_device_argument(t)
    e = sub.add_parser("export", help="export a run's EMA weights as a diffusers VAE folder (load_vae)")
    e.add_argument("run")
    e.add_argument("--out", required=True)
    e.add_argument("--step", type=int)
    args = p.parse_args(argv)
    prog = f"magi tokenizer {args.action}"
    try:
        if args.action == "train":
            run = TokenizerRunConfig.load(args.config, args.set)
            device = pick_device(args.device)
            frames = FramePairs(build_dataset(run.data.kind, **run.data.options))
            result = train_tokenizer(run, args.out, resume=args.resume, frames=frames, device=device)
            print(f"tokenizer: step {result['step']}, checkpoint {result['checkpoint']}"
                  + (f", loss {result['loss']:.4f}, PSNR {result['psnr']:.2f} dB" if "loss" in result else ""))
            if args.export and result["step"] < run.train.max_steps:
                print(f"{prog}: stopped at step {result['step']} of {run.train.max_steps}; not exported "
                      f"(run the same command again to continue)", file=sys.stderr)
            elif args.export:
                print(f"exported to {export_tokenizer(args.out, args.export, frames=frames)}")
        else:
            print(f"exported to {export_tokenizer(args.run, args.out, step=args.step)}")
    except USER_ERRORS as err:
        return fail(prog, err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["TokenizerModelConfig", "TokenizerTrainConfig", "TokenizerRunConfig", "FramePairs",
           "change_weights", "tokenizer_loss", "train_tokenizer", "latent_statistics", "export_tokenizer"]


if __name__ == "__main__":
    sys.exit(main())
