"""Writing videos people look at: MP4 (PyAV, H.264), GIF (Pillow) and PNG frame grids.

Everything here takes uint8 frames, either `(T, H, W, 3)` or `(T, 3, H, W)` (the library layout).
This module also holds the library's one conversion between uint8 frames and float video in [-1, 1]:
`to_float_video` and `to_uint8_video` (alias `to_uint8`), which rounds, the quantization the FVD
protocol prescribes for generated frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_float_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (any shape) in [0, 255] -> float32 in [-1, 1]: what the VAEs and the model see."""
    return frames.float().div(127.5).sub_(1.0)  # never in place on the caller's tensor


def to_uint8_video(video: torch.Tensor) -> torch.Tensor:
    """Float video in [-1, 1] (any shape) -> uint8 in [0, 255], rounded to nearest, clamped; uint8 input
    is returned as is. The one conversion back to frames (FVD's quantization of generated clips too)."""
    if video.dtype == torch.uint8:
        return video
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


to_uint8 = to_uint8_video  # the name most callers use


def _frames_thwc(video) -> np.ndarray:
    """uint8 frames as a contiguous numpy (T, H, W, 3) array; accepts (T,H,W,3) or (T,3,H,W)."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {video.dtype}; convert with to_uint8 first")
    if video.ndim != 4:
        raise ValueError(f"expected frames (T, H, W, 3) or (T, 3, H, W), got shape {video.shape}")
    if video.shape[-1] == 3:
        pass
    elif video.shape[1] == 3:
        video = video.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    elif video.shape[-1] == 1 or video.shape[1] == 1:  # grayscale: replicate to RGB
        video = video if video.shape[-1] == 1 else video.transpose(0, 2, 3, 1)
        video = np.repeat(video, 3, axis=-1)
    else:
        raise ValueError(f"expected 3 (or 1) channels in frames, got shape {video.shape}")
    if video.shape[0] == 0:
        raise ValueError("cannot write a video with no frames")
    return np.ascontiguousarray(video)


def write_mp4(path: str | Path, video, fps: float = 8.0, crf: int = 18, codec: str | None = None,
              faststart: bool = False) -> Path:
    """Encode with PyAV: H.264 yuv420p by default (playable everywhere); the container follows the
    extension, so `codec="mpeg4"` with `.avi` works too. Odd sizes are padded by one edge pixel.
    `faststart` puts the MP4 index first (streamable)."""
    import av
    from fractions import Fraction

    frames = _frames_thwc(video)
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return path


def write_lossless(path: str | Path, video, fps: float = 8.0) -> Path:
    """Encode losslessly with PyAV: FFV1 in 8-bit RGB (`bgr0`), normally in a `.mkv` file. Decoding
    gives back exactly the frames written (the recordings a world model learns from)."""
    import av
    from fractions import Fraction

    frames = _frames_thwc(video)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return path


def write_gif(path: str | Path, video, fps: float = 8.0) -> Path:
    """Looping GIF through Pillow."""
    from PIL import Image

    frames = _frames_thwc(video)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=max(int(round(1000 / fps)), 20), optimize=False)
    return path


def write_video(path: str | Path, video, fps: float = 8.0) -> Path:
    """Write uint8 frames `(T, H, W, 3)` or `(T, 3, H, W)`; MP4 or GIF chosen by the extension."""
    suffix = Path(path).suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        return write_mp4(path, video, fps)
    if suffix == ".gif":
        return write_gif(path, video, fps)
    raise ValueError(f"{path}: unsupported video extension {suffix!r}; use .mp4 or .gif")


def grid(videos: Sequence | np.ndarray | torch.Tensor, max_frames: int | None = None,
         pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Rows = videos, columns = frames: a uint8 (H', W', 3) image.

    `videos` is a sequence (or a batch) of uint8 clips in either frame layout; clips of different
    lengths are allowed (short rows end early). With `max_frames`, columns are evenly subsampled.
    """
    clips = [_frames_thwc(v) for v in videos]
    if not clips:
        raise ValueError("grid: no videos given")
    H, W = clips[0].shape[1:3]
    if any(c.shape[1:3] != (H, W) for c in clips):
        raise ValueError(f"grid: all videos need the same frame size, got "
                         f"{sorted({c.shape[1:3] for c in clips})}")
    T = max(c.shape[0] for c in clips)
    cols = np.arange(T) if max_frames is None or T <= max_frames else \
        np.unique(np.linspace(0, T - 1, max_frames).round().astype(int))
    out = np.full((len(clips) * (H + pad) + pad, len(cols) * (W + pad) + pad, 3), pad_value,
                  dtype=np.uint8)
    for r, clip in enumerate(clips):
        for c, t in enumerate(cols):
            if t < clip.shape[0]:
                y, x = pad + r * (H + pad), pad + c * (W + pad)
                out[y:y + H, x:x + W] = clip[t]
    return out


def save_grid_png(path: str | Path, videos, max_frames: int | None = None, pad: int = 2,
                  scale: int = 1) -> Path:
    """Save `grid(videos)` as a PNG; `scale` enlarges small frames by pixel repetition."""
    from PIL import Image

    image = grid(videos, max_frames=max_frames, pad=pad)
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def side_by_side(*videos, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Clips of the same length and height joined horizontally, frame by frame: uint8 (T, H, W', 3)."""
    clips = [_frames_thwc(v) for v in videos]
    T, H = clips[0].shape[:2]
    if any(c.shape[:2] != (T, H) for c in clips):
        raise ValueError(f"side_by_side: clips need the same length and height, got "
                         f"{[c.shape[:3] for c in clips]}")
    gap = np.full((T, H, pad, 3), pad_value, dtype=np.uint8)
    parts = []
    for i, c in enumerate(clips):
        parts += [gap, c] if i else [c]
    return np.concatenate(parts, axis=2)


def read_video(path: str | Path) -> np.ndarray:
    """Every frame of a video file as uint8 (T, H, W, 3), via PyAV (for checks and small files)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames decoded")
    return np.stack(frames)


__all__ = ["to_float_video", "to_uint8_video", "to_uint8", "write_video", "write_mp4", "write_gif", "grid", "save_grid_png",
           "side_by_side", "read_video"]
