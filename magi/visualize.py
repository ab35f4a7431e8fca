"""Composing prediction-vs-truth pictures for training samples and the demo: stacked rows, frame
strips, upscaling, marked predicted frames, PSNR of float videos.

Videos are float tensors (T, 3, H, W) or (B, T, 3, H, W) in [-1, 1] (the data convention) or uint8
arrays (T, H, W, 3). Writing GIF/MP4 and joining clips side by side live in `magi.video_io`.
"""

from __future__ import annotations

import numpy as np
import torch

from magi import video_io
from magi.atomic import atomic_write


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., T, 3, H, W) float in [-1, 1] -> (..., T, H, W, 3) uint8 numpy."""
    return video_io.to_uint8(video.detach()).movedim(-3, -1).cpu().numpy()  # (..., T, H, W, 3)


def psnr(pred: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...] = (-3, -2, -1)) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), reduced over `dims` (per frame by default)."""
    mse = (pred.float().clamp(-1, 1) - target.float().clamp(-1, 1)).pow(2).mean(dim=dims)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def stack_rows(videos: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack uint8 videos (T, H, W, 3) of the same T and W vertically with a white gap."""
    t, _, w = videos[0].shape[:3]
    parts = []
    for i, v in enumerate(videos):
        if i:
            parts.append(np.full((t, gap, w, 3), 255, np.uint8))
        parts.append(v)
    return np.concatenate(parts, axis=1)  # (T, sum H, W, 3)


def frame_grid(video: np.ndarray, gap: int = 2) -> np.ndarray:
    """All frames of a uint8 video (T, H, W, 3) left to right as one image (H, T*W, 3)."""
    t, h, w, _ = video.shape
    out = np.full((h, t * w + (t - 1) * gap, 3), 255, np.uint8)
    for i in range(t):
        out[:, i * (w + gap): i * (w + gap) + w] = video[i]
    return out


def comparison_image(truth: list[np.ndarray], pred: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """One image of clips as frame strips: for each clip a row of ground-truth frames above a row of
    predicted frames (uint8 videos (T, H, W, 3)); clips separated by a wider white gap."""
    rows = []
    for i, (t, p) in enumerate(zip(truth, pred)):
        pair = np.concatenate([frame_grid(t, gap), np.full((gap, frame_grid(t, gap).shape[1], 3), 255, np.uint8),
                               frame_grid(p, gap)], axis=0)  # (2H + gap, T*W, 3)
        if i:
            rows.append(np.full((4 * gap, pair.shape[1], 3), 255, np.uint8))
        rows.append(pair)
    return np.concatenate(rows, axis=0)


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (T, H, W, 3) so small videos are visible."""
    return video.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else video


def mark_frames(video: np.ndarray, start: int, color=(220, 40, 40), width: int = 2) -> np.ndarray:
    """A copy of uint8 video (T, H, W, 3) with a coloured border on frames `start`.. (e.g. predicted ones)."""
    video = video.copy()
    v = video[start:]
    v[:, :width], v[:, -width:], v[:, :, :width], v[:, :, -width:] = color, color, color, color
    return video


__all__ = ["to_uint8", "psnr", "stack_rows", "frame_grid", "comparison_image", "upscale", "mark_frames"]


def plot_loss(metrics_jsonl, png, reference: list[list[float]] | None = None,
              title: str | None = None):
    """Training loss against step from a run's metrics.jsonl (a reference curve, e.g. the pretrained
    run's, in grey), log scale, written to `png` (replaced atomically, so a viewer never reads half a
    file). Returns the path."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from magi.logging_utils import read_jsonl

    png = Path(png)
    recs = [r for r in read_jsonl(metrics_jsonl) if isinstance(r.get("train/loss"), float)]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    if reference:
        ax.plot([s for s, _ in reference], [v for _, v in reference], color="0.7", lw=1,
                label="pretrained run (batch 128)")
    ax.plot([r["step"] for r in recs], [r["train/loss"] for r in recs], color="C0", lw=1.5,
            label="this run")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if recs:
        ax.set_yscale("log")
    if reference and recs:
        ax.set_xlim(0, max(recs[-1]["step"] * 3, 100))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(png, fig.savefig)
    plt.close(fig)
    return png


def caption_grid(rows: list[np.ndarray], labels: list[str], pixels: int = 96, gap: int = 2) -> np.ndarray:
    """Rows of videos under their captions: rows[r] uint8 (k, T, H, W, 3), shown side by side, enlarged
    to about `pixels` px, `labels[r]` written above -> uint8 (T, H', W', 3) for `write_gif`."""
    from PIL import Image, ImageDraw

    T, H, W = rows[0].shape[1:4]
    scale, label = max(1, pixels // H), 14
    h, w = H * scale, W * scale
    cols = max(len(r) for r in rows)
    canvas = np.full((T, (label + h + gap) * len(rows), cols * (w + gap), 3), 255, np.uint8)
    for r, videos in enumerate(rows):
        y = r * (label + h + gap)
        for c, v in enumerate(videos):
            canvas[:, y + label:y + label + h, c * (w + gap):c * (w + gap) + w] = v.repeat(scale, 1).repeat(scale, 2)
    for t in range(T):  # the captions, drawn once per frame
        img = Image.fromarray(canvas[t])
        draw = ImageDraw.Draw(img)
        for r, text in enumerate(labels):
            draw.text((2, r * (label + h + gap) + 1), text, fill=(0, 0, 0))
        canvas[t] = np.asarray(img)
    return canvas

