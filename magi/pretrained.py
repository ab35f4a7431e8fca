"""A trained run for inference: find its checkpoint, load the model (EMA weights by default) with the
VAE it was trained with, choose the sampling options, and generate videos.

The commands (`magi sample`, `magi eval`, `magi play`, the demo) build on this module; it imports none
of them.

Checkpoints: a `from_pretrained` directory (`config.json` + `ema.safetensors`/`model.safetensors`), a
training checkpoint `RUN/checkpoints/<step>/` (same layout), a run directory `RUN` (the latest step,
or `step=`), or a Hugging Face Hub id. The VAE is read from the checkpoint's `train_config.yaml`
(`vae.spec`), or given with `vae=`.
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from magi.checkpoint import RUN_CONFIG_FILE

#: sampling warns on a trained interval seen in fewer than this share of the training clips
RARE_INTERVAL_SHARE = 0.01
from magi.video_io import to_float_video, to_uint8_video


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
    from magi.config_io import load_yaml

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

    def compile(self, enabled: bool = True) -> None:
        """torch.compile the per-frame hot spots that are not large matrix products, the diffusion head's
        DDIM loop and the VAE decoder (with `enabled`; eager again without). The backbone is left eager:
        compiled, its stream frame was no faster on the CPU. The first call at each new shape compiles
        (~40 s on a 2.0 GHz EPYC core); the results agree with eager to float rounding."""
        self.model.head.compile_sampler(enabled)
        self.vae.compile_decoder(enabled)

    @property
    def compiled(self) -> bool:
        """Whether `compile` is in effect (a failed compilation turns it off again)."""
        return self.model.head._compiled_ddim is not None

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
        shares = self.model.config.trained_interval_shares
        rare = sorted({k for k in values if shares is not None and lo <= k <= hi
                       and (shares[k - 1] if k <= len(shares) else 0.0) < RARE_INTERVAL_SHARE})
        if rare:
            seen = ", ".join(f"{k}: {shares[k - 1] if k <= len(shares) else 0.0:.2%}" for k in rare)
            warnings.warn(f"frame interval {', '.join(map(str, rare))}: within the trained range but seen in under "
                          f"{RARE_INTERVAL_SHARE:.0%} of this model's training clips ({seen}); its interval "
                          f"embedding barely learnt {'them' if len(rare) > 1 else 'it'}", stacklevel=2)

    def latent_frames(self, video_frames: int) -> int:
        return self.vae.latent_frames(video_frames)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> latents (B, T', C, h, w) on the model's device."""
        H, W = self.frame_size
        if video.ndim != 5 or tuple(video.shape[2:]) != (3, H, W):
            raise ValueError(f"context frames: expected (B, T, 3, {H}, {W}) to match the model's "
                             f"{H}x{W} videos, got {tuple(video.shape)}")
        x = to_float_video(video.to(self.device))  # (B, T, 3, H, W) in [-1, 1]
        return self.vae.encode(x).to(self.device).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, T', C, h, w) -> uint8 video (B, T, 3, H, W) on the CPU."""
        return to_uint8_video(self.vae.decode(latents)).cpu()


def intervals_of_run_config(run: Optional[dict]) -> Optional[tuple[int, int]]:
    """(lowest, highest) interval a run config's data section trains: a fixed `interval` (the dataset
    kind's default when unset) or "dynamic" 1..max_interval. None for latent caches and unknown data."""
    import inspect

    from magi.data import _builders
    from magi.data.clips import MAX_INTERVAL
    from magi.data.video import VideoFolder

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


def load_pretrained(path: str | Path, step: Optional[int] = None, ema: bool = True,
                    vae: Optional[str] = None, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a model for sampling (EMA weights by default) together with its VAE.

    The VAE spec comes from `vae` if given, else from the checkpoint's `train_config.yaml`; a relative
    spec naming a folder inside the model's own folder (an exported world model's `tokenizer/`) is read
    from there, so the folder works wherever it is copied or downloaded to.
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
        if not Path(spec).is_absolute() and (local / spec).is_dir():  # a VAE the folder carries itself
            spec = str(local / spec)
    autoencoder = load_vae(spec, device=device, what="--vae" if vae else f"vae.spec of {local}", **vae_options)
    if hasattr(autoencoder, "eval"):
        autoencoder.eval()
    if autoencoder.latent_channels != model.config.latent_channels:
        raise ValueError(f"VAE {spec!r} has {autoencoder.latent_channels} latent channels but the model "
                         f"at {local} expects {model.config.latent_channels}; pass the VAE it was trained with")
    return LoadedCheckpoint(model, autoencoder, str(local), step, used_ema, spec, run)


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


DEVICE_HELP = "auto (CUDA when present, else the CPU; the default), cpu, cuda, cuda:1, ..."


def add_device_argument(parser, help: str = DEVICE_HELP) -> None:
    """`--device`, one convention for every command that runs a model (sample, play, eval world-model,
    tokenizer): default "auto", resolved by `pick_device`."""
    parser.add_argument("--device", default="auto", help=help)


def pick_device(name: str | torch.device) -> torch.device:
    """"auto" -> CUDA when present, else the CPU; anything else as torch spells it. ValueError names
    `--device` for a string torch does not know or a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r}: {e} (expected {DEVICE_HELP})") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


# --------------------------------------------------------------------------------------------------
# Generation


@dataclass
class SamplingOptions:
    """How each frame is sampled (docs/design.md §4); the paper's inference is 64 x 100 DDPM."""

    mask_steps: int = 64
    diffusion_steps: int = 100
    sampler: str = "ddpm"
    temperature: float = 1.0
    cfg: float = 1.0
    long_video: str = "interpolate"
    window: Optional[int] = None  # "window": frames the window holds (2..training length; None = all)
    compile: bool = False  # torch.compile the DDIM head and the VAE decoder (`LoadedCheckpoint.compile`)

    def validate(self) -> None:
        if self.mask_steps < 1 or self.diffusion_steps < 1:
            raise ValueError(f"mask_steps and diffusion_steps must be >= 1, got {self.mask_steps}, "
                             f"{self.diffusion_steps}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler: expected 'ddpm' or 'ddim', got {self.sampler!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):  # nan samples black frames
            raise ValueError(f"--temperature: expected a finite number > 0, got {self.temperature}")
        if not (math.isfinite(self.cfg) and self.cfg >= 0):
            raise ValueError(f"--cfg: expected a finite number >= 0, got {self.cfg}")
        if self.long_video not in ("interpolate", "window"):
            raise ValueError(f"long_video: expected 'interpolate' or 'window', got {self.long_video!r}")
        if self.window is not None and (self.long_video != "window" or self.window < 2):
            raise ValueError(f"window: expected >= 2 frames with long_video='window', got {self.window} "
                             f"with long_video={self.long_video!r}")


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
            batch_size=stop - start, long_video=options.long_video, progress=progress, window=options.window)
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


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags shared by `magi sample` and `magi eval`."""
    from magi.errors import number

    g = p.add_argument_group("sampling")
    g.add_argument("--cfg", type=number(float, low=0), default=1.0,
                   help="classifier-free guidance scale (paper UCF-101: 7)")
    g.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    g.add_argument("--diffusion-steps", type=number(int, low=1), default=100,
                   help="denoising steps per token (paper: 100)")
    g.add_argument("--mask-steps", type=number(int, low=1), default=64,
                   help="masked-prediction steps per frame (paper: 64)")
    g.add_argument("--temperature", type=number(float, above=0), default=1.0)
    g.add_argument("--long-video", choices=["interpolate", "window"], default="interpolate",
                   help="past the training length: interpolate temporal positions (paper) or slide a window")
    g.add_argument("--allow-untrained-interval", action="store_true",
                   help="condition on a frame interval outside those the model was trained on")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=number(int, low=1), default=8)
    add_device_argument(g)
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    options = SamplingOptions(args.mask_steps, args.diffusion_steps, args.sampler, args.temperature,
                              args.cfg, args.long_video)
    options.validate()
    return options


__all__ = ["LoadedCheckpoint", "SamplingOptions", "load_pretrained", "resolve_checkpoint", "read_run_config",
           "intervals_of_run_config", "iter_generate", "generate", "build_data", "class_names_of", "pick_device",
           "add_device_argument", "DEVICE_HELP",
           "add_sampling_arguments", "sampling_options"]
