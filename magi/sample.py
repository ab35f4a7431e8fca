"""`magi sample`: generate videos from a checkpoint, and the loading/generation helpers `magi eval` uses.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from magi.video_io import save_grid_png, side_by_side, to_uint8, write_video

RUN_CONFIG_FILE = "train_config.yaml"


# --------------------------------------------------------------------------------------------------
# Loading


def resolve_checkpoint(path: str | Path, step: Optional[int] = None) -> tuple[Path | str, Optional[int]]:
    """(directory holding config.json, step or None). Accepts a checkpoint dir, a run dir or a hub id."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        if step is not None:
            raise ValueError(f"--step {step}: {p} is already a checkpoint directory; pass the run "
                             "directory to choose a step")
        return p, int(p.name) if p.name.isdigit() else None
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    if root.is_dir():
        steps = sorted(int(d.name) for d in root.iterdir()
                       if d.is_dir() and d.name.isdigit() and (d / "config.json").is_file())
        if not steps:
            raise FileNotFoundError(f"{p}: neither a checkpoint directory (config.json + "
                                    f"*.safetensors) nor a run directory with checkpoints/<step>/")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"{root}: no checkpoint for step {step}; available: {steps}")
        return root / str(step), step
    if p.exists():
        raise ValueError(f"{p}: expected a checkpoint directory, found a file")
    text = str(path)
    from magi.errors import missing_local_path

    if missing_local_path(text):  # a typo in a local path, not a Hub id: say so instead of going online
        parent = p.parent if str(p.parent) not in ("", ".") else Path(".")
        near = sorted(d.name for d in parent.iterdir() if d.is_dir())[:8] if parent.is_dir() else []
        raise FileNotFoundError(f"checkpoint not found: {p} (no such directory"
                                + (f"; {parent} holds {', '.join(near)}" if near else "") + ")")
    return text, step  # a Hugging Face Hub id ("namespace/name")


def read_run_config(checkpoint_dir: Path | str) -> Optional[dict]:
    """The run config (`train_config.yaml`) saved with a checkpoint or its run, as a dict, if any."""
    from magi.config import load_yaml

    d = Path(checkpoint_dir)
    for candidate in (d / RUN_CONFIG_FILE, d.parent.parent / RUN_CONFIG_FILE):
        if candidate.is_file():
            return load_yaml(candidate)
    return None


@dataclass
class LoadedCheckpoint:
    """A model in eval mode with the VAE it was trained with, and where they came from."""

    model: Any  # magi.Magi
    vae: Any  # magi.vae.VideoVAE
    path: str
    step: Optional[int]
    ema: bool  # True when the EMA weights were loaded
    vae_spec: str
    run_config: Optional[dict]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the videos the model generates."""
        h, w = self.model.config.grid
        s = self.vae.spatial_stride
        return h * s, w * s

    @property
    def train_frames(self) -> int:
        """Video frames of a training clip (e.g. 16 with a 2D VAE, 17 with a 4x causal 3D VAE)."""
        return self.vae.video_frames(self.model.config.num_frames)

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes

    @property
    def trained_intervals(self) -> Optional[tuple[int, int]]:
        """(lowest, highest) frame interval the model was trained on: recorded in its config, or (for
        checkpoints written before the record) read from the data section of its `train_config.yaml`;
        None when neither says."""
        recorded = self.model.config.trained_intervals
        if recorded is not None:
            return int(recorded[0]), int(recorded[1])
        return intervals_of_run_config(self.run_config)

    @property
    def default_interval(self) -> int:
        """The interval to condition on when none is given: the model's `default_interval`, or the
        lowest trained interval when that lies outside the trained ones (an older checkpoint trained on
        a fixed interval other than 1)."""
        d = self.model.config.default_interval
        trained = self.trained_intervals
        return d if trained is None or trained[0] <= d <= trained[1] else trained[0]

    def describe_intervals(self) -> str:
        trained = self.trained_intervals
        if trained is None:
            return f"intervals not recorded (allowed: 1..max_interval = {self.model.config.max_interval})"
        where = "its config" if self.model.config.trained_intervals is not None else "its train_config.yaml"
        what = f"interval {trained[0]}" if trained[0] == trained[1] else f"intervals {trained[0]}..{trained[1]}"
        return f"{what} (from {where})"

    def check_intervals(self, intervals, allow_untrained: bool = False) -> None:
        """Refuse to condition on intervals the model never trained on, naming what it trained on."""
        values = [intervals] if isinstance(intervals, int) else [int(k) for k in intervals]
        lo, hi = self.trained_intervals or (1, self.model.config.max_interval)
        bad = sorted({k for k in values if not lo <= k <= hi})
        if bad and not allow_untrained:
            raise ValueError(f"frame interval {', '.join(map(str, bad))}: this model was trained on "
                             f"{self.describe_intervals()}; its interval embedding never learnt "
                             f"{'these' if len(bad) > 1 else 'this one'}. Condition on a trained interval, "
                             f"or pass --allow-untrained-interval (allow_untrained_interval=True) to do it anyway")

    def latent_frames(self, video_frames: int) -> int:
        return self.vae.latent_frames(video_frames)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> latents (B, T', C, h, w) on the model's device."""
        H, W = self.frame_size
        if video.ndim != 5 or tuple(video.shape[2:]) != (3, H, W):
            raise ValueError(f"context frames: expected (B, T, 3, {H}, {W}) to match the model's "
                             f"{H}x{W} videos, got {tuple(video.shape)}")
        x = video.to(self.device).float() / 127.5 - 1.0  # (B, T, 3, H, W) in [-1, 1]
        return self.vae.encode(x).to(self.device).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, T', C, h, w) -> uint8 video (B, T, 3, H, W) on the CPU."""
        return to_uint8(self.vae.decode(latents)).cpu()


def intervals_of_run_config(run: Optional[dict]) -> Optional[tuple[int, int]]:
    """(lowest, highest) interval a run config's data section trains: a fixed `interval` (the dataset
    kind's default when unset) or "dynamic" 1..max_interval. None for latent caches and unknown data."""
    import inspect

    from magi.data import _builders
    from magi.data.video import MAX_INTERVAL, VideoFolder

    data = (run or {}).get("data") or {}
    kind, options = data.get("kind"), dict(data.get("options") or {})
    builder = _builders().get(kind)
    if builder is None or kind == "latents":
        return None
    interval = options.get("interval")
    if interval is None:
        params = inspect.signature(builder).parameters
        if "interval" not in params:  # builders forwarding **options to VideoFolder
            params = inspect.signature(VideoFolder).parameters
        interval = params["interval"].default if "interval" in params else None
    if interval == "dynamic":
        return 1, int(options.get("max_interval") or MAX_INTERVAL)
    if isinstance(interval, int) and not isinstance(interval, bool):
        return interval, interval
    return None


def load_checkpoint(path: str | Path, step: Optional[int] = None, ema: bool = True,
                    vae: Optional[str] = None, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a model for sampling (EMA weights by default) together with its VAE.

    The VAE spec comes from `vae` if given, else from the checkpoint's `train_config.yaml`.
    """
    from magi import Magi
    from magi.vae import load_vae

    directory, step = resolve_checkpoint(path, step)
    model = Magi.from_pretrained(directory, ema=ema).to(device).eval()
    local = Path(directory) if Path(directory).is_dir() else None
    if local is None:  # a hub id: from_pretrained downloaded it
        from magi.model.magi import resolve_pretrained

        local = resolve_pretrained(directory)
    used_ema = ema and (local / "ema.safetensors").is_file()
    run = read_run_config(local)
    spec, vae_options = vae, {}
    if spec is None:
        section = (run or {}).get("vae") or {}
        spec, vae_options = section.get("spec"), dict(section.get("options") or {})
        if not spec:
            raise ValueError(f"{local}: no {RUN_CONFIG_FILE} with a `vae.spec` next to the checkpoint; "
                             "pass the VAE the model was trained with, e.g. --vae pixels:4")
    from magi.errors import missing_local_path

    if missing_local_path(spec):
        raise FileNotFoundError(f"{'--vae' if vae else f'vae.spec of {local}'}: {spec} does not exist (expected "
                                f"'pixels[:F[:gray]]', a local diffusers VAE folder or a Hugging Face Hub id)")
    autoencoder = load_vae(spec, device=device, **vae_options)
    if hasattr(autoencoder, "eval"):
        autoencoder.eval()
    if autoencoder.latent_channels != model.config.latent_channels:
        raise ValueError(f"VAE {spec!r} has {autoencoder.latent_channels} latent channels but the model "
                         f"at {local} expects {model.config.latent_channels}; pass the VAE it was trained with")
    return LoadedCheckpoint(model, autoencoder, str(local), step, used_ema, spec, run)


# --------------------------------------------------------------------------------------------------
# Generation


@dataclass
class SamplingOptions:
    """How each frame is sampled (DESIGN §4); the paper's inference is 64 x 100 DDPM."""

    mask_steps: int = 64
    diffusion_steps: int = 100
    sampler: str = "ddpm"
    temperature: float = 1.0
    cfg: float = 1.0
    long_video: str = "interpolate"

    def validate(self) -> None:
        if self.mask_steps < 1 or self.diffusion_steps < 1:
            raise ValueError(f"mask_steps and diffusion_steps must be >= 1, got {self.mask_steps}, "
                             f"{self.diffusion_steps}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler: expected 'ddpm' or 'ddim', got {self.sampler!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if self.cfg < 0:
            raise ValueError(f"cfg: expected >= 0, got {self.cfg}")
        if self.long_video not in ("interpolate", "window"):
            raise ValueError(f"long_video: expected 'interpolate' or 'window', got {self.long_video!r}")


def iter_generate(ckpt: LoadedCheckpoint, num_frames: int, count: Optional[int] = None,
                  labels: Optional[Sequence[int]] = None, context: Optional[torch.Tensor] = None,
                  intervals: Optional[Sequence[int] | int] = None,
                  options: Optional[SamplingOptions] = None, batch_size: int = 8, seed: int = 0,
                  progress: bool = True, generator: Optional[torch.Generator] = None,
                  allow_untrained_interval: bool = False) -> Iterator[torch.Tensor]:
    """Generate videos batch by batch, yielding uint8 `(b, num_frames, 3, H, W)` on the CPU.

    `num_frames` counts video frames, context included (it must map onto whole latent frames, e.g.
    1 + 4k for a 4x causal VAE). The number of videos is `count`, or the number of `labels`, or the
    number of `context` clips (uint8 `(B, k, 3, H, W)`, the first k frames of each output). One
    `torch.Generator` seeded with `seed` (or the `generator` passed, to continue a stream across
    calls) drives everything, so a (seed, batch size) pair gives the same videos on every run.
    `intervals` default to the checkpoint's `default_interval`; intervals the model was not trained on
    are refused unless `allow_untrained_interval`.
    """
    options = options or SamplingOptions()
    options.validate()
    total = _count(count, labels, context)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    latent_total = ckpt.latent_frames(num_frames)
    latent_context = 0
    if context is not None:
        latent_context = ckpt.latent_frames(context.shape[1])
        if latent_context >= latent_total:
            raise ValueError(f"{num_frames} frames leave nothing to generate after "
                             f"{context.shape[1]} context frames")
    if labels is not None and ckpt.num_classes == 0:
        raise ValueError("labels: this model is unconditional (num_classes = 0)")
    if intervals is not None and not isinstance(intervals, int) and len(intervals) != total:
        raise ValueError(f"intervals: expected one per video ({total}), got {len(intervals)}")
    if intervals is None:
        intervals = ckpt.default_interval
    ckpt.check_intervals(intervals, allow_untrained_interval)
    device = ckpt.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="videos", unit="video", disable=not progress)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        batch_labels = None if labels is None else torch.as_tensor(list(labels[start:stop]), device=device)
        batch_intervals = intervals if intervals is None or isinstance(intervals, int) else \
            torch.as_tensor(list(intervals[start:stop]), device=device)
        batch_context = None if context is None else ckpt.encode(context[start:stop])  # (b, k', C, h, w)
        latents = ckpt.model.generate(
            latent_total, context=batch_context, labels=batch_labels, intervals=batch_intervals,
            cfg=options.cfg, mask_steps=options.mask_steps, diffusion_steps=options.diffusion_steps,
            temperature=options.temperature, sampler=options.sampler, generator=generator,
            batch_size=stop - start, long_video=options.long_video, progress=progress)
        yield ckpt.decode(latents)  # (b, num_frames, 3, H, W)
        bar.update(stop - start)
    bar.close()


def _count(count, labels, context) -> int:
    sizes = {name: n for name, n in (("count", count), ("labels", None if labels is None else len(labels)),
                                     ("context", None if context is None else len(context)))
             if n is not None}
    if not sizes:
        raise ValueError("give the number of videos, labels or context clips")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the number of videos disagrees between {sizes}")
    n = next(iter(sizes.values()))
    if n < 1:
        raise ValueError(f"nothing to generate: {sizes}")
    return n


def generate(ckpt: LoadedCheckpoint, num_frames: int, **kwargs) -> torch.Tensor:
    """All of `iter_generate` as one uint8 tensor (B, T, 3, H, W)."""
    return torch.cat(list(iter_generate(ckpt, num_frames, **kwargs)))


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


def parse_options(items: Sequence[str]) -> dict:
    """['size=32', 'split=test'] -> {'size': 32, 'split': 'test'} (values parsed as YAML)."""
    from magi.config import parse_override

    out: dict = {}
    for item in items:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def build_data(ckpt: LoadedCheckpoint, kind: Optional[str], overrides: dict) -> Any:
    """A clip source: `kind` with `overrides`, or the checkpoint's training data with `overrides`."""
    from magi.data import build_dataset

    section = (ckpt.run_config or {}).get("data") or {}
    if kind is None:
        kind = section.get("kind")
        if kind is None:
            raise ValueError("no dataset: the checkpoint has no train_config.yaml with a `data` section; "
                             "pass --data KIND (and --data-option key=value ...)")
        options = dict(section.get("options") or {})
        options.update(overrides)
    else:
        options = dict(overrides)
    return build_dataset(kind, **options)


def class_names_of(dataset: Any) -> Optional[list[str]]:
    names = getattr(dataset, "classes", None)
    if names is None and getattr(dataset, "num_classes", None) == 10 and type(dataset).__name__ == "MovingDigits":
        names = [str(i) for i in range(10)]
    return list(names) if names is not None else None


# --------------------------------------------------------------------------------------------------
# Writing


def write_outputs(out: Path, videos: torch.Tensor, names: list[str], fps: float, gif: bool = True,
                  ground_truth: Optional[torch.Tensor] = None, grid_frames: int = 16) -> dict:
    """Per-sample MP4 (+GIF), a PNG grid, and side-by-sides with the ground truth when given."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {"mp4": [], "gif": [], "compare_mp4": [], "compare_gif": []}
    for i, (video, name) in enumerate(zip(videos, names)):
        files["mp4"].append(write_video(out / f"{name}.mp4", video, fps).name)
        if gif:
            files["gif"].append(write_video(out / f"{name}.gif", video, fps).name)
        if ground_truth is not None:
            both = side_by_side(ground_truth[i], video)  # (T, H, 2W + pad, 3): truth | generated
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


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags shared by `magi sample` and `magi eval`."""
    g = p.add_argument_group("sampling")
    g.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (paper UCF-101: 7)")
    g.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    g.add_argument("--diffusion-steps", type=int, default=100, help="denoising steps per token (paper: 100)")
    g.add_argument("--mask-steps", type=int, default=64, help="masked-prediction steps per frame (paper: 64)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--long-video", choices=["interpolate", "window"], default="interpolate",
                   help="past the training length: interpolate temporal positions (paper) or slide a window")
    g.add_argument("--allow-untrained-interval", action="store_true",
                   help="condition on a frame interval outside those the model was trained on")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    options = SamplingOptions(args.mask_steps, args.diffusion_steps, args.sampler, args.temperature,
                              args.cfg, args.long_video)
    options.validate()
    return options


def build_parser() -> argparse.ArgumentParser:
    from magi.errors import ArgumentParser

    p = ArgumentParser(prog="magi sample", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint dir, run dir (latest step), or Hugging Face Hub id")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--step", type=int, help="with a run dir: which checkpoints/<step>/ to use")
    p.add_argument("--raw-weights", action="store_true", help="use model.safetensors instead of the EMA")
    p.add_argument("--vae", help="VAE spec (default: vae.spec from the checkpoint's train_config.yaml)")
    g = p.add_argument_group("what to generate")
    g.add_argument("--classes", help="class indices or names, comma-separated (class-conditional)")
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
    g.add_argument("--fps", type=float, default=8.0)
    g.add_argument("--no-gif", action="store_true")
    g.add_argument("--overwrite", action="store_true", help="write into an --out that already holds samples")
    g.add_argument("--yes", action="store_true",
                   help=f"start a generation estimated at more than {CONFIRM_SECONDS / 3600:g} h")
    return p


def _file_name(text: str) -> str:
    """A class name as a safe file-name stem ("Playing Guitar/2" -> "Playing_Guitar_2")."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "class"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _read_context(args, ckpt: LoadedCheckpoint, k: int, total: int, interval: int
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], list[dict]]:
    """(context uint8 (B, k, 3, H, W), ground truth (B, total, ...) or None, source records)."""
    from magi.data import probe, read_clip
    from magi.data.video import clip_span

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
        dataset = build_data(ckpt, args.data, parse_options(args.data_option))
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
# `--yes` is needed. The estimate times one frame at 2 mask steps and scales (a lower bound: attention
# over a long context costs more per frame); it runs only for jobs above ESTIMATE_WORK token-steps.
WARN_SECONDS = 600.0
CONFIRM_SECONDS = 3600.0
ESTIMATE_WORK = 500_000


def estimate_seconds(ckpt: LoadedCheckpoint, num_videos: int, new_latent_frames: int, batch_size: int,
                     options: SamplingOptions, labelled: bool) -> float:
    """Seconds to generate `new_latent_frames` frames for `num_videos` videos, from timing one frame of
    one batch at 2 mask steps (scaled to `options.mask_steps`); decoding is not counted."""
    b = min(batch_size, num_videos)
    labels = torch.zeros(b, dtype=torch.long, device=ckpt.device) if labelled else None
    probe_steps = min(2, options.mask_steps)
    t0 = time.perf_counter()
    with torch.no_grad():
        ckpt.model.generate(1, labels=labels, intervals=ckpt.default_interval, cfg=options.cfg,
                            mask_steps=probe_steps, diffusion_steps=options.diffusion_steps,
                            sampler=options.sampler, generator=torch.Generator(device=ckpt.device).manual_seed(0),
                            batch_size=b)
    per_frame = (time.perf_counter() - t0) * options.mask_steps / probe_steps
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
            f"{options.diffusion_steps} diffusion steps each) take at least {_duration(seconds)} here"
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


def run(args: argparse.Namespace) -> int:
    """`magi sample` with parsed arguments."""
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, args.step, ema=not args.raw_weights, vae=args.vae, device=device)
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
    if args.classes is not None:
        if ckpt.num_classes == 0:
            raise ValueError("--classes given but this model is unconditional")
        recorded = ckpt.model.config.class_names
        if recorded is not None and args.data is None:  # stored in the checkpoint: no data needed
            class_names = list(recorded)
        elif not all(s.strip().lstrip("-").isdigit() for s in args.classes.split(",") if s.strip()):
            try:
                class_names = class_names_of(build_data(ckpt, args.data, parse_options(args.data_option)))
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
    elif labels is not None:
        labels = [c for c in labels for _ in range(args.num_samples)]
        names = [f"{_file_name(class_names[c]) if class_names and c < len(class_names) else f'class{c}'}_{i:03d}"
                 for i, c in enumerate(labels)]
        task = "class-conditional"
    else:
        names = [f"sample_{i:03d}" for i in range(args.num_samples)]
        task = "unconditional"
    if options.cfg != 1.0 and ckpt.num_classes == 0:
        raise ValueError("--cfg needs a class-conditional model")
    if options.cfg != 1.0 and labels is None:
        raise ValueError("--cfg needs --classes (guidance is towards a class)")

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file; expected a directory for the samples")
    if (out / "samples.json").is_file() and not args.overwrite:
        raise FileExistsError(f"--out: {out} already holds samples (samples.json); choose another --out or "
                              f"pass --overwrite")
    estimate = check_workload(ckpt, len(names), total, 0 if context is None else int(context.shape[1]),
                              args.batch_size, options, labels is not None, args.yes)
    t0 = time.perf_counter()
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
        "labels": labels, "sampling": asdict(options), "seed": args.seed, "batch_size": args.batch_size,
        "device": str(device), "seconds": seconds, "estimated_seconds": estimate,
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
    print(f"wrote {len(videos)} {task} videos of {total} frames to {out} ({seconds:.1f} s)")
    return 0


__all__ = ["LoadedCheckpoint", "SamplingOptions", "load_checkpoint", "resolve_checkpoint",
           "read_run_config", "iter_generate", "generate", "write_outputs", "main"]
