"""Video decoding with PyAV, clip sampling (fixed or dynamic interval) and folder datasets.

A clip is `num_frames` frames taken every `interval` frames from `start`: frames start,
start + interval, ..., start + (num_frames - 1) * interval. It spans `(num_frames - 1) * interval + 1`
frames of the video, so a video must have at least that many frames to hold the clip.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_INTERVAL = 25  # the paper's dynamic-interval range is 1..25


def clip_span(num_frames: int, interval: int) -> int:
    """Frames of the video covered by a clip: (num_frames - 1) * interval + 1."""
    return (num_frames - 1) * interval + 1


def max_interval_for(num_frames: int, video_frames: int, max_interval: int = MAX_INTERVAL) -> int:
    """Largest interval <= max_interval whose clip fits in `video_frames` frames (0 if none fits)."""
    if video_frames < num_frames:
        return 0
    if num_frames == 1:
        return max_interval
    return min(max_interval, (video_frames - 1) // (num_frames - 1))


def draw_interval(rng: np.random.Generator, max_interval: int = MAX_INTERVAL,
                  num_frames: int | None = None, video_frames: int | None = None) -> int:
    """A dynamic interval: uniform on 1..max_interval, capped so the clip fits the video if given."""
    cap = max_interval
    if num_frames is not None and video_frames is not None:
        cap = max_interval_for(num_frames, video_frames, max_interval)
        if cap < 1:
            raise ValueError(f"a clip of {num_frames} frames does not fit in {video_frames} frames")
    return int(rng.integers(1, cap + 1))


def to_float_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, H, W) in [0, 255] -> float32 (T, 3, H, W) in [-1, 1]."""
    return frames.float().div_(127.5).sub_(1.0)


def to_uint8_video(video: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
