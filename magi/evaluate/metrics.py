"""Prediction metrics and the adjacent-frame analysis.

* `psnr` / `ssim`: per-frame scores of a predicted video against the ground truth, `(B, T)`. Both
  work on uint8 frames (data range 255), the same quantized frames that are written to disk and fed
  to FVD. SSIM is Wang et al. (2004) as usually implemented (11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, population statistics inside the window, only windows fully inside the
  frame), computed per RGB channel and averaged.
* `adjacent_frame_l2`: the curve of the paper's Figure 8 — for each t >= 1 the mean over pixels of
  the Euclidean distance between the RGB values (in [0, 1]) of frames t and t-1, averaged over
  videos. A generator that freezes (or flickers) shows up as a curve far below (above) the ground
  truth's. `save_curves` writes the curves as JSON and a PNG plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW = 11

__all__ = ["psnr", "ssim", "adjacent_frame_l2", "save_curves", "prediction_metrics"]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} "
                         "must have the same shape")
    if pred.ndim != 5:
        raise ValueError(f"expected videos (B, T, C, H, W), got shape {tuple(pred.shape)}")
    for name, v in (("prediction", pred), ("ground truth", target)):
        if v.dtype != torch.uint8:
            raise ValueError(f"{name}: expected uint8 frames (magi.video_io.to_uint8), got {v.dtype}")
    return pred.double(), target.double()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB of uint8 videos `(B, T, C, H, W)` -> float64 `(B, T)`.

    Identical frames give +inf (the MSE is 0); average with care (`prediction_metrics` reports the
    mean over finite values and counts the identical frames).
    """
    p, t = _check_pair(pred, target)
    mse = (p - t).pow(2).flatten(2).mean(dim=2)  # (B, T)
    return 10 * torch.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = 1.5
         ) -> torch.Tensor:
    """Per-frame SSIM of uint8 videos `(B, T, C, H, W)` -> float64 `(B, T)`, channels averaged."""
    p, t = _check_pair(pred, target)
    B, T, C, H, W = p.shape
    if H < window or W < window:
        raise ValueError(f"ssim: frames {H}x{W} are smaller than the {window}x{window} window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window(window, sigma).to(p.device)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, VALID: (M, 1, H', W')
        x = F.conv2d(x, g.view(1, 1, 1, -1))
        return F.conv2d(x, g.view(1, 1, -1, 1))

    x = p.reshape(B * T * C, 1, H, W)  # every channel of every frame: (B*T*C, 1, H, W)
    y = t.reshape(B * T * C, 1, H, W)
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).view(B, T, C).mean(dim=2)  # (B, T)


def adjacent_frame_l2(video: torch.Tensor) -> torch.Tensor:
    """Per-video adjacent-frame distance of uint8 `(B, T, 3, H, W)` -> float64 `(B, T-1)`.

    Entry t-1 is the mean over pixels of `|| frame_t - frame_{t-1} ||_2` over RGB, values in [0, 1].
    """
    if video.dtype != torch.uint8 or video.ndim != 5:
        raise ValueError(f"adjacent_frame_l2: expected uint8 (B, T, C, H, W), got {video.dtype} "
                         f"{tuple(video.shape)}")
    if video.shape[1] < 2:
        raise ValueError("adjacent_frame_l2: need at least 2 frames")
    v = video.double() / 255.0
    diff = v[:, 1:] - v[:, :-1]  # (B, T-1, C, H, W)
    return diff.pow(2).sum(dim=2).sqrt().flatten(2).mean(dim=2)  # (B, T-1)


def prediction_metrics(pred: torch.Tensor, target: torch.Tensor, context_frames: int = 0) -> dict:
    """PSNR/SSIM per frame (mean over videos) and overall, on the predicted frames only.

    `context_frames` leading frames are given to the model, so they are excluded from the averages
    (they are still reported per frame). SSIM is None for frames smaller than its 11x11 window.
    """
    ps = psnr(pred, target)  # (B, T)
    finite = torch.isfinite(ps)
    ps_clean = torch.where(finite, ps, torch.nan)
    per_frame_psnr = torch.nanmean(ps_clean, dim=0)
    k = context_frames
    future = ps_clean[:, k:]
    out = {
        "context_frames": k,
        "psnr_per_frame": [None if not np.isfinite(x) else float(x) for x in per_frame_psnr.tolist()],
        "psnr": float(torch.nanmean(future)) if torch.isfinite(future).any() else None,
        "identical_frames": int((~finite[:, k:]).sum()),
        "num_videos": int(pred.shape[0]),
    }
    if min(pred.shape[-2:]) >= SSIM_WINDOW:
        ss = ssim(pred, target)  # (B, T)
        out.update(ssim_per_frame=ss.mean(dim=0).tolist(), ssim=float(ss[:, k:].mean()))
    else:
        out.update(ssim_per_frame=None, ssim=None,
                   ssim_note=f"frames smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window")
    return out


def save_curves(path: str | Path, curves: dict[str, torch.Tensor | np.ndarray], title: str = "",
                ylabel: str = "mean adjacent-frame L2 (RGB in [0, 1])",
                xlabel: str = "frame t (distance between t and t-1)", start: int = 1) -> tuple[Path, Path]:
    """Write per-video curves `{name: (B, L)}` as JSON (mean, std, per-video values) and a PNG plot.

    `path` without a suffix; returns (json path, png path). x values start at `start`.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict = {"title": title, "xlabel": xlabel, "ylabel": ylabel, "curves": {}}
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for name, values in curves.items():
        v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                       dtype=np.float64)
        if v.ndim == 1:
            v = v[None]
        x = np.arange(start, start + v.shape[1])
        mean, std = v.mean(axis=0), v.std(axis=0)
        record["curves"][name] = {"x": x.tolist(), "mean": mean.tolist(), "std": std.tolist(),
                                  "per_video": v.tolist()}
        ax.plot(x, mean, marker="o", markersize=3, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    json_path, png_path = path.with_suffix(".json"), path.with_suffix(".png")
    fig.savefig(png_path)
    json_path.write_text(json.dumps(record, indent=1))
    return json_path, png_path
