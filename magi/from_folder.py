"""`magi train --data DIR`: the run config for a folder of your own videos, built instead of written.

    DIR/<class>/<video>.mp4 ...   (videos directly in DIR: one unnamed class, an unconditional model)
    DIR/metadata.jsonl or DIR/metadata.csv   (optional captions: columns file_name, text)

A folder with captions (the Hugging Face folder convention, `magi.data.video.VideoFolder`'s `captions`)
is found on its own: the run config records it as `data.options.captions: true`, so the run (and
`--config RUN/train_config.yaml`) reads them again or stops when they are gone, and every item carries
its `caption`.

Classes come from the sub-folders (a class-conditional model when there are two or more), the latent
shape (channels, grid, latent frames) from the VAE at the chosen frame size and clip length, and the
model size, batch and recipe from a preset sized for the device (`DEVICE_DEFAULTS`). The result is an
ordinary `RunConfig`: `magi train` prints it, writes it to `RUN/train_config.yaml` (so
`magi train --config RUN/train_config.yaml` reproduces the run), and `--set key=value` changes any of
it, exactly as for a YAML file.

Every check that needs no training runs here, before anything is built or written: the folder exists
and holds videos, enough of them hold a clip of the asked length (the message says how many are
shorter or unreadable), the frame size suits the VAE and the patch size.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

#: What `--data` picks per device when no flag says otherwise. CPU: the 2M `tiny` model on 16 px clips
#: of 8 frames through the weightless `pixels:2` VAE (12 x 8x8 latents: 16 tokens of 48 values a frame).
#: Decision, measured (2026-11-29, 4 classes of synthetic clips, 1 thread): at 32 px through `pixels:4`
#: (tokens of 192 values) the loss sat at 0.37 from step 150 to 728 and samples stayed noise; at 16 px
#: through `pixels:2` it reached 0.04 by step 300. CUDA: the 190M `magi-b` on 32 px clips of 16 frames
#: (`pixels:2`: 64 tokens of 48 values a frame, near the paper's 64); not measured here.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "preset": "tiny", "vae": "pixels:2", "size": 16, "frames": 8, "steps": 3000,
        "train": {"global_batch_size": 8, "lr": 1e-3, "warmup_steps": 100, "precision": "fp32",
                  "ema_decay": 0.99, "checkpoint_every": 250, "sample_every": 250, "keep_last": 2,
                  "log_every": 10},
        "sample": {"num_videos": 4, "context_frames": 1, "mask_steps": 8, "diffusion_steps": 50,
                   "sampler": "ddim", "fps": 4},
        "model": {"attention": "sdpa"},
    },
    "cuda": {
        "preset": "magi-b", "vae": "pixels:2", "size": 32, "frames": 16, "steps": 20000,
        "train": {"global_batch_size": 32, "lr": 2e-4, "warmup_steps": 1000, "precision": "bf16",
                  "ema_decay": 0.999, "checkpoint_every": 1000, "sample_every": 1000, "keep_last": 2,
                  "log_every": 20},
        "sample": {"num_videos": 8, "context_frames": 1, "mask_steps": 16, "diffusion_steps": 50,
                   "sampler": "ddim", "fps": 8},
        "model": {"attention": "flex"},
    },
}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def folder_classes(root: Path) -> list[str]:
    """Class names: the sub-folders of `root` that hold at least one file, sorted (as `VideoFolder`)."""
    from magi.data.video import scan_folder

    return sorted({name for _, name in scan_folder(root) if name})


def build_folder_config(data: str | Path, *, vae: str | None = None, preset: str | None = None,
                        frames: int | None = None, size: int | None = None, minutes: float | None = None,
                        steps: int | None = None, interval: int | str = 1, device: str | None = None
                        ) -> tuple[dict, Any, Any]:
    """(run config as a plain dict, the VAE, the dataset) for training on the videos in `data`.

    Raises ValueError / FileNotFoundError naming the flag (`--data`, `--size`, ...) when the folder,
    the VAE or the clip shape cannot work. The dict is not validated yet: `--set` overrides go on top.
    """
    from magi.config import PRESETS
    from magi.data.video import VideoFolder
    from magi.vae import load_vae

    device = device or default_device()
    defaults = DEVICE_DEFAULTS["cuda" if device.startswith("cuda") else "cpu"]
    root = Path(data).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--data: folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"--data: {root} is a file; expected a folder of videos "
                                 "(DIR/<class>/<video>.mp4)")
    preset = preset or defaults["preset"]
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    frames = defaults["frames"] if frames is None else frames
    size = defaults["size"] if size is None else size
    if frames < 2:
        raise ValueError(f"--frames: expected at least 2 video frames per clip (one to continue from), got {frames}")
    if size < 1:
        raise ValueError(f"--size: expected a positive frame size in pixels, got {size}")
    if minutes is not None and minutes <= 0:
        raise ValueError(f"--minutes: expected a positive number of minutes, got {minutes:g}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps: expected a positive number of steps, got {steps}")
    if interval != "dynamic" and (not isinstance(interval, int) or interval < 1):
        raise ValueError(f"--interval: expected a positive integer or 'dynamic', got {interval!r}")

    # the latent shape, from the VAE (a real one is loaded once here and handed to the trainer)
    spec = vae or defaults["vae"]
    try:
        autoencoder = load_vae(spec, what="--vae")
    except ValueError as e:
        raise ValueError(f"--vae {spec}: {e}") from e
    try:
        latent_t, channels, h, w = autoencoder.latent_shape(frames, size, size)
    except ValueError as e:
        flag = "--size" if "size" in str(e) else "--frames"
        raise ValueError(f"{flag}: {e}") from e
    patch = PRESETS[preset].get("patch_size", 2)
    if h % patch:
        good = autoencoder.spatial_stride * patch
        raise ValueError(f"--size: {size} px gives a {h}x{w} latent grid with VAE {spec!r}, which the patch "
                         f"size {patch} does not divide; use a multiple of {good} (e.g. {good * max(1, size // good)})")
    if latent_t < 2:
        raise ValueError(f"--frames: {frames} frames are {latent_t} latent frame(s) with VAE {spec!r}; a model "
                         f"needs at least 2 to learn motion")

    # the data: which videos hold a clip, with which class; built from the options the config records,
    # so the run trains exactly what RUN/train_config.yaml says
    options: dict[str, Any] = {"root": str(root.resolve()), "num_frames": frames, "size": size,
                               "interval": interval}
    if interval == "dynamic":
        options["interval_sampling"] = "video_first"  # the paper's order (magi.data.clips)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = VideoFolder(**options, progress=False)
        except ValueError as e:  # e.g. a folder holding both metadata.jsonl and metadata.csv
            raise ValueError(f"--data: {e}") from e
    if dataset.captions:  # recorded, so the run reads them again (and stops if they are gone)
        options["captions"] = True
    for warned in caught:  # passed on, but for the dataset's "no usable videos": the error below says more
        if not (len(dataset) == 0 and "no usable videos" in str(warned.message)):
            warnings.warn_explicit(warned.message, warned.category, warned.filename, warned.lineno)
    if len(dataset) == 0:
        hint = ("; lower --frames" + (" or --interval" if interval != 1 else "") + " or add longer videos"
                if dataset.too_short else "")  # not when nothing there is a readable video
        raise ValueError(f"--data: {dataset.describe_usable()}{hint}")
    small = dataset.smaller_than(size)
    if small:
        rel, H, W = small[0]
        warnings.warn(f"--data: {len(small)} of {len(dataset)} usable videos have frames smaller than the model's "
                      f"{size}x{size} input (the minimum that is not upscaled), the smallest {rel} at {W}x{H}: they "
                      f"are stretched to {size} px, which adds no detail (a 1-2 px side becomes flat colour)",
                      stacklevel=2)
    classes = dataset.classes
    num_classes = len(classes) if len(classes) >= 2 else 0
    batch = min(defaults["train"]["global_batch_size"], len(dataset))

    model = {"preset": preset, "latent_channels": channels, "latent_size": h if h == w else [h, w],
             "num_frames": latent_t, "num_classes": num_classes, **defaults["model"]}
    train = copy.deepcopy(defaults["train"])
    train.update(max_steps=steps or defaults["steps"], global_batch_size=batch,
                 sample={**defaults["sample"], "num_videos": min(defaults["sample"]["num_videos"], len(dataset))})
    if minutes is not None:
        train["max_minutes"] = float(minutes)
    run = {"model": model, "data": {"kind": "folder", "options": options}, "vae": {"spec": spec}, "train": train}
    return run, autoencoder, dataset


def describe(run: dict, dataset) -> str:
    """Two lines saying what `--data` found and chose."""
    m, t = run["model"], run["train"]
    classes = getattr(dataset, "classes", [])
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    captioned = getattr(dataset, "captions", False)
    what = (f"{len(classes)} classes ({shown})" if m["num_classes"] else
            "no class sub-folders with two or more classes" + ("" if captioned else ": an unconditional model"))
    if captioned:
        files = [Path(p).relative_to(dataset.root).as_posix() for p in dataset.caption_files]
        what += f"; captions from {', '.join(files)}"  # bad rows: in describe_usable()
    return (f"magi train --data: {dataset.describe_usable()}; {what}\n"
            f"model {m['preset']} on latents {m['num_frames']} x {m['latent_channels']} x {m['latent_size']} "
            f"(VAE {run['vae']['spec']}), batch {t['global_batch_size']}, {t['max_steps']} steps"
            + (f" or {t['max_minutes']:g} minutes" if t.get("max_minutes") else ""))


__all__ = ["DEVICE_DEFAULTS", "build_folder_config", "describe", "folder_classes"]
