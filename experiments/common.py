"""Shared pieces of the reproduction experiments: datasets, run configs, training, evaluation.

Every experiment trains small models with the project's own `Trainer` (resumable: a run directory is
continued from its newest checkpoint) and evaluates them on held-out videos that no training clip comes
from: moving digits drawn from the test digit images with other trajectories, and Atari episodes kept
out of the training list (split by episode, never by frame).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# Checkpoints (git-ignored) and small committed outputs (JSON, PNG, GIF); the variables redirect both
# for smoke tests.
RUNS = Path(os.environ.get("MAGI_REPRO_RUNS") or ROOT / "runs" / "reproduction")
RESULTS = Path(os.environ.get("MAGI_REPRO_RESULTS") or ROOT / "results" / "reproduction")
DATA = ROOT / "runs" / "data"

TRAIN_FRAMES = 6  # frames per training clip
CONTEXT = 2  # given frames at evaluation
HORIZON = 2 * TRAIN_FRAMES  # predicted frames at evaluation: twice the training length

# One digit on a 16x16 canvas through pixels:2:gray (4 x 8 x 8 latents, 16 tokens of 16 values): the
# demo checkpoint's setting, the smallest where a CPU-trained model keeps a digit's shape.
DIGITS = {
    "model": {"preset": "tiny", "latent_channels": 4, "latent_size": 8, "num_frames": TRAIN_FRAMES},
    "data": {"kind": "moving-digits",
             "options": {"num_videos": 20000, "num_frames": TRAIN_FRAMES, "size": 16, "digit_size": 8,
                         "num_digits": 1, "speed": [0.5, 1.5], "split": "train", "seed": 0}},
    "vae": {"spec": "pixels:2:gray"},
}

# Pong and Breakout at 32x32 grayscale through pixels:4:gray (16 x 8 x 8 latents, 16 tokens of 64 values:
# the `tiny` preset), 15 fps (frameskip 4), a sticky random policy; the game is the class label. At 32x32
# the whole-screen resize keeps the paddles and the bricks but makes the ball faint. (A first attempt at
# 64x64 through pixels:8:gray gave 256-value tokens to the 128-wide MAR head; both arms plateaued at a
# loss of ~0.52, the floor of a head narrower than the token it must denoise.)
ATARI_GAMES = ["Breakout", "Pong"]
ATARI_EPISODES, ATARI_VAL_EPISODES, ATARI_MAX_FRAMES = 10, 2, 300
ATARI = {
    "model": {"preset": "tiny", "num_classes": 2, "num_frames": TRAIN_FRAMES},
    "data": {"kind": "folder",
             "options": {"root": str(DATA / "atari32"), "num_frames": TRAIN_FRAMES, "size": 32,
                         "interval": 1, "split_file": str(DATA / "atari32" / "trainlist.txt"),
                         "progress": False}},
    "vae": {"spec": "pixels:4:gray"},
}

# Small-batch CPU recipe shared by every run (the paper's optimizer, docs/design.md §1; shorter warm-up, WSD decay).
TRAIN = {"global_batch_size": 8, "lr": 1e-3, "warmup_steps": 200, "min_lr_ratio": 0.05,
         "precision": "fp32", "ema_decay": 0.999, "checkpoint_every": 500, "keep_last": 1,
         "log_every": 50, "num_threads": 1, "sample_every": 0, "sample": {"num_videos": 0},
         "progress": True}


def prepare_atari() -> Path:
    """Record the Atari episodes once and write the by-episode train / validation lists."""
    from magi.world.atari import record_atari

    root = DATA / "atari32"
    paths = record_atari(root, game=ATARI_GAMES, episodes=ATARI_EPISODES + ATARI_VAL_EPISODES,
                         max_frames=ATARI_MAX_FRAMES, size=32, policy="sticky", seed=0, progress=False)
    train, val = [], []
    for label, game in enumerate(ATARI_GAMES):
        episodes = sorted(p for p in paths if p.parent.name == game)  # episode_0000.mp4, ...
        for k, path in enumerate(episodes):
            line = f"{game}/{path.name} {label + 1}"  # 1-based labels, UCF-101 list style
            (train if k < ATARI_EPISODES else val).append(line)
    (root / "classInd.txt").write_text("".join(f"{i + 1} {g}\n" for i, g in enumerate(ATARI_GAMES)))
    (root / "trainlist.txt").write_text("\n".join(train) + "\n")
    (root / "vallist.txt").write_text("\n".join(val) + "\n")
    return root


def run_config(dataset: str, teacher_forcing: str = "ctf", steps: int = 5000, interval: Any = 1,
               seed: int = 0, max_interval: int = 6) -> dict:
    """The RunConfig dict of one experiment arm."""
    base = {"digits": DIGITS, "atari": ATARI}[dataset]
    cfg = json.loads(json.dumps(base))  # deep copy
    cfg["model"]["teacher_forcing"] = teacher_forcing
    if dataset == "digits":
        cfg["data"]["options"]["interval"] = interval
        cfg["data"]["options"]["max_interval"] = max_interval
    cfg["train"] = dict(TRAIN, max_steps=steps, decay_steps=int(0.3 * steps), seed=seed)
    return cfg


def train(name: str, cfg: dict) -> Path:
    """Train (or continue) run `name`; returns its directory. The run stops at `train.max_steps`."""
    from magi.config import RunConfig
    from magi.trainer import Trainer

    torch.set_num_threads(1)
    out = RUNS / name
    run = RunConfig.from_dict(cfg)
    trainer = Trainer(run, out)
    trainer.resume("auto")
    if trainer.step < run.train.max_steps:
        trainer.fit()
    return out


def load(name: str):
    """(model, VAE, run config) of a finished run, with its final weights, not the EMA.

    These runs anneal the learning rate to 5% over their last 30%, so the final weights are already an
    average of sorts; their EMA (decay 0.999, trained before `train.ema_warmup` existed) still held
    0.7-5% of the initial weights and ~20% of the first half of training after 3-5k steps, and scored
    a 1.3x (digits) to 10x (Atari) higher held-out loss than the final weights. The final weights do
    not depend on the EMA, so re-running a script reproduces these numbers."""
    from magi import Magi
    from magi.checkpoint import latest_checkpoint
    from magi.config import RunConfig
    from magi.vae import load_vae

    ckpt = latest_checkpoint(RUNS / name)
    if ckpt is None:
        raise FileNotFoundError(f"{RUNS / name}: no checkpoint; train this arm first")
    run = RunConfig.load(ckpt / "train_config.yaml")
    return Magi.from_pretrained(ckpt, ema=False).eval(), load_vae(run.vae.spec), run


def eval_clips(dataset: str, num_frames: int, count: int, interval: int = 1, seed: int = 1,
               split: str = "test") -> dict:
    """`count` clips of `num_frames` frames as one batch: video (B, T, 3, H, W), label, interval.
    Held out by default; split="train" draws from the training videos/episodes (to measure overfitting)."""
    if split not in ("test", "train"):
        raise ValueError(f"eval_clips: split must be 'test' or 'train', got {split!r}")
    from magi.data import MovingDigits, VideoFolder
    from magi.recipe import collate

    if dataset == "digits":
        o = DIGITS["data"]["options"]
        data = MovingDigits(num_videos=count, num_frames=num_frames, size=o["size"], digit_size=o["digit_size"],
                            num_digits=1, speed=o["speed"], split=split, seed=seed, interval=interval,
                            max_interval=max(interval, 1))
        items = [data[i] for i in range(count)]
    else:
        root = DATA / "atari32"
        split_file = root / ("vallist.txt" if split == "test" else "trainlist.txt")
        data = VideoFolder(root, num_frames, 32, interval=interval, split_file=split_file,
                           seed=seed, progress=False)
        rng = np.random.default_rng(seed)  # clips spread over the split's episodes
        items = [data[int(i)] for i in rng.choice(len(data), size=count, replace=len(data) < count)]
    return collate(items)


@torch.no_grad()
def inference_loss(model, latents: torch.Tensor, labels, intervals, repeats: int = 4, seed: int = 0,
                   moving_threshold: float = 0.1) -> dict:
    """Validation masked-prediction loss under the inference condition: every frame is predicted from
    complete (unmasked) earlier frames, computed exactly as generation does (KV cache of clean frames).
    Masks follow the training distribution; noise and timesteps are seeded, so both models are scored
    on the same draws. Also the loss under the model's own training condition, for reference, and the
    inference-condition loss on the masked tokens that changed since the previous frame ("moving"
    tokens, any latent value off by more than `moving_threshold`): where the context is informative.
    On nearly static screens (Atari) the label alone predicts most tokens and the mean hides the rest."""
    from magi.model.magi import random_token_mask

    c = model.config
    B, T = latents.shape[:2]
    per_frame = torch.zeros(T, dtype=torch.float64)
    counts = torch.zeros(T, dtype=torch.float64)
    moving_sum, moving_count, train_cond = 0.0, 0, []
    tokens = model.patchify(latents)  # (B, T, N, P)
    moving = torch.zeros(tokens.shape[:3], dtype=torch.bool)  # (B, T, N); frame 0 has no previous frame
    moving[:, 1:] = (tokens[:, 1:] - tokens[:, :-1]).abs().amax(-1) > moving_threshold
    for r in range(repeats):
        torch.manual_seed(seed + r)
        mask = random_token_mask(B, T, c.tokens_per_frame, c.mask_ratio_min, c.mask_ratio_std, latents.device)
        z = model.conditions_incremental(latents, mask, labels=labels, intervals=intervals)  # (B, T, N, D)
        for t in range(T):
            m = mask[:, t]
            if m.any():
                torch.manual_seed(10_000 + 100 * r + t)
                per_frame[t] += float(model.head(tokens[:, t][m], z[:, t][m])) * int(m.sum())
                counts[t] += int(m.sum())
            mm = m & moving[:, t]
            if mm.any():
                torch.manual_seed(20_000 + 100 * r + t)
                moving_sum += float(model.head(tokens[:, t][mm], z[:, t][mm])) * int(mm.sum())
                moving_count += int(mm.sum())
        torch.manual_seed(seed + r)
        train_cond.append(float(model(latents, labels=labels, intervals=intervals)["loss"]))
    per_frame = per_frame / counts.clamp(min=1)
    with_context = per_frame[1:]  # frame 0 has no context
    weights = counts[1:] / counts[1:].sum()
    return {"inference_loss": float((with_context * weights).sum()),
            "inference_loss_moving_tokens": moving_sum / max(moving_count, 1),
            "moving_token_fraction": float(moving[:, 1:].float().mean()),
            "inference_loss_per_frame": per_frame.tolist(),
            "training_condition_loss": float(np.mean(train_cond))}


@torch.no_grad()
def predict(model, vae, batch: dict, total_frames: int, context: int = CONTEXT, seed: int = 0,
            interval: Any = None, long_video: str = "interpolate", **sampling) -> torch.Tensor:
    """Continue the clips' first `context` frames to `total_frames` latent frames; pixels (B, T, 3, H, W)."""
    latents = vae.encode(batch["video"])  # (B, T, C, h, w)
    # 4 mask steps for 16 tokens per frame: training masks 70-100% of a frame, so revealing one token
    # at a time (16 steps) conditions the last steps on frames 60-94% visible, which the model never saw;
    # on the demo checkpoint the digit survived the 4-frame horizon in 70% of 64 clips at 16 steps,
    # 86% at 4 (classifier-read, 2 seeds).
    opts = dict(mask_steps=4, diffusion_steps=25, sampler="ddim", temperature=0.5, cfg=1.0)
    opts.update(sampling)
    out = model.generate(total_frames, context=latents[:, :context], labels=batch["label"],
                         intervals=batch["interval"] if interval is None else interval,
                         generator=torch.Generator().manual_seed(seed), long_video=long_video,
                         **opts)
    return vae.decode(out).clamp(-1, 1)


@torch.no_grad()
def reference(vae, batch: dict) -> torch.Tensor:
    """The ground truth as the model can at best reproduce it: the clips through the VAE and back
    (grayscale for the pixels:F:gray latents; identical to the input for the gray digits)."""
    return vae.decode(vae.encode(batch["video"])).clamp(-1, 1)


def video_metrics(pred: torch.Tensor, truth: torch.Tensor, context: int = CONTEXT) -> dict:
    """Per-frame PSNR/SSIM (mean over clips) and adjacent-frame L2 curves of prediction and truth."""
    from magi.evaluate.metrics import adjacent_frame_l2, prediction_metrics
    from magi.video_io import to_uint8

    p, t = to_uint8(pred), to_uint8(truth)  # (B, T, 3, H, W) uint8
    m = prediction_metrics(p, t, context_frames=context)
    from magi.evaluate.metrics import psnr

    ps = psnr(p, t)[:, context:]  # (B, H)
    m["psnr_last"] = float(torch.nanmean(torch.where(torch.isfinite(ps[:, -1]), ps[:, -1], torch.nan)))
    m["psnr_predicted_frames"] = torch.nanmean(torch.where(torch.isfinite(ps), ps, torch.nan), 0).tolist()
    m["psnr_predicted_frames_std"] = ps.std(dim=0).tolist()
    m["l2_pred"] = adjacent_frame_l2(p).mean(0).tolist()
    m["l2_truth"] = adjacent_frame_l2(t).mean(0).tolist()
    return m


def save_gif(path: Path, pred: torch.Tensor, truth: torch.Tensor, count: int = 8, fps: float = 4) -> Path:
    """Truth | prediction side by side for the first `count` clips, two clips per row, upscaled."""
    from magi.video_io import side_by_side, write_gif
    from magi.visualize import mark_frames, stack_rows, to_uint8, upscale

    scale = max(1, 96 // truth.shape[-1])
    pairs = [side_by_side(upscale(to_uint8(truth[i]), scale),
                          mark_frames(upscale(to_uint8(pred[i]), scale), CONTEXT))
             for i in range(min(count, len(truth)))]
    rows = [side_by_side(*pairs[i:i + 2], pad=8) for i in range(0, len(pairs), 2)]
    if len(rows) > 1 and rows[-1].shape != rows[0].shape:
        rows = rows[:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gif(path, stack_rows(rows), fps=fps)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    print(f"wrote {path}")
    return path


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")
    return path


def threads_from_env() -> None:
    """One intra-op thread unless OMP_NUM_THREADS says otherwise (two jobs side by side on 2 cores)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
