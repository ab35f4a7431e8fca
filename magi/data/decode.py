"""Video decoding with PyAV: open a file, probe its header, read a clip, read every frame.

A clip is `num_frames` frames taken every `interval` frames from `start` (which clip an item is:
`magi.data.clips`); `read_clip` decodes exactly those frames, seeking to the keyframe before the start.
Frames come out as uint8 (T, 3, H, W); `magi.video_io.to_float_video` turns them into the float video
in [-1, 1] the model sees.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
# files people keep beside their videos, which are not read as video (named so messages say what they are)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".wma")
GIF_HOWTO = "GIFs are not read: convert one with `ffmpeg -i clip.gif clip.mp4`"


def not_a_video(path) -> str:
    """Why a file with a non-video extension is not read: an image, a GIF, audio, or something else."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return f"a GIF, not read as a video ({GIF_HOWTO})"
    if suffix in IMAGE_EXTENSIONS:
        return "an image, not a video"
    if suffix in AUDIO_EXTENSIONS:
        return "an audio file, no video"
    return f"not a video file (extension {suffix or 'none'!r})"


def other_files(root) -> str:
    """What a folder with no video file holds instead, e.g. "12 images, 3 GIFs (GIFs are not read: ...)
    and 2 audio files"; "" when it holds none of those."""
    counts = {"images": 0, "GIFs": 0, "audio files": 0, "other files": 0}
    for path in Path(root).rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        kind = ("GIFs" if suffix == ".gif" else "images" if suffix in IMAGE_EXTENSIONS
                else "audio files" if suffix in AUDIO_EXTENSIONS else "other files")
        counts[kind] += 1
    parts = [f"{n} {kind if n > 1 else kind.rstrip('s')}" for kind, n in counts.items() if n]
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text + (f" ({GIF_HOWTO})" if counts["GIFs"] else "")


class VideoError(RuntimeError):
    """A video that cannot be read; the message starts with the file's path.

    `available` is the number of frames actually decoded when the file ended early, else None.
    """

    def __init__(self, path, reason: str, available: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.available = str(path), reason, available


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file's header says: frame count (exact or estimated), rate, frame size."""

    num_frames: int
    fps: float
    height: int
    width: int


def _size_hw(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _resize_plan(height: int, width: int, size) -> tuple[int, int, int, int, int, int] | None:
    """(resize_h, resize_w, top, left, H, W): scale so both sides cover `size`, then centre crop."""
    hw = _size_hw(size)
    if hw is None:
        return None
    H, W = hw
    scale = max(H / height, W / width)
    rh, rw = max(H, round(height * scale)), max(W, round(width * scale))
    return rh, rw, (rh - H) // 2, (rw - W) // 2, H, W


def frame_to_array(frame, plan) -> np.ndarray:
    """A decoded PyAV frame -> uint8 (3, H, W), resized (area when shrinking) and centre-cropped by `plan`."""
    if plan is None:
        rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    else:
        rh, rw, top, left, H, W = plan
        if (rh, rw) == (frame.height, frame.width):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            mode = "AREA" if rh < frame.height else "BICUBIC"
            rgb = frame.to_ndarray(format="rgb24", width=rw, height=rh, interpolation=mode)
        rgb = rgb[top:top + H, left:left + W]  # (H, W, 3)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))  # (3, H, W)


def open_video(path):
    """Open a video with PyAV, raising VideoError (naming the file) when it is empty, unreadable or has no video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types for unreadable files
        raise VideoError(path, f"cannot open as a video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    return container


def probe(path) -> VideoInfo:
    """Frame count, rate and size from the header (counting packets when the header has no count)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        n = int(stream.frames or 0)
        if n <= 0:  # e.g. some webm/mkv: count packets, which needs no decoding
            n = sum(1 for p in container.demux(stream) if p.size > 0)
        h, w = stream.codec_context.height, stream.codec_context.width
        if n <= 0 or h <= 0 or w <= 0:
            raise VideoError(path, f"no frames (frames={n}, size={w}x{h})")
        return VideoInfo(num_frames=n, fps=fps, height=h, width=w)
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001
        raise VideoError(path, f"cannot read the header ({type(e).__name__}: {e})") from e
    finally:
        container.close()


def read_clip(path, start: int, num_frames: int, interval: int = 1, size=None) -> torch.Tensor:
    """Frames start, start + interval, ... (num_frames of them) of a video as uint8 (T, 3, H, W).

    Seeks to the keyframe before `start` and stops decoding after the last frame the clip needs.
    Frame i is the i-th frame in presentation order, i.e. the same frame that decoding the whole file
    and indexing [start::interval] gives. Frames are located by timestamp (constant frame rate); when
    timestamps are missing or irregular the file is decoded from the beginning and frames are counted.
    `size` (int or (H, W)): resize so the frame covers it (area filter when shrinking), centre crop.
    Raises VideoError (naming the file) for unreadable files and clips past the end of the video.
    """
    if num_frames < 1 or interval < 1 or start < 0:
        raise ValueError(f"read_clip({path}): need num_frames >= 1, interval >= 1, start >= 0; got "
                         f"{num_frames}, {interval}, {start}")
    wanted = [start + i * interval for i in range(num_frames)]
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        result = _decode_by_timestamp(container, stream, wanted, size)
        if result is None:  # irregular timestamps: count frames from the start of the file
            container.close()
            container = open_video(path)
            stream = container.streams.video[0]
            result = _decode_by_counting(container, stream, wanted, size)
        frames, last = result
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt streams raise from inside the decoder
        raise VideoError(path, f"decoding failed ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if len(frames) < num_frames:
        if last < 0:
            raise VideoError(path, f"no decodable frame at or after frame {wanted[0]} (truncated or corrupt?)")
        raise VideoError(path, f"clip needs frame {wanted[-1]} but the video ended after {last + 1} frames",
                         available=last + 1)
    return torch.from_numpy(np.stack(frames))  # (T, 3, H, W)


def _decode_by_timestamp(container, stream, wanted: list[int], size):
    """(frames, last decoded index), locating the wanted frames by pts; None when pts cannot be trusted."""
    fps = stream.average_rate or stream.guessed_rate
    tb = stream.time_base
    if not fps or not tb:
        return None
    t0 = stream.start_time or 0
    step = 1 / (fps * tb)  # pts per frame (exact Fraction)
    if wanted[0] > 0:
        container.seek(int(t0 + wanted[0] * step), stream=stream, backward=True, any_frame=False)
    targets = set(wanted)
    out: dict[int, np.ndarray] = {}
    plan = None
    first = True
    previous = -1
    for frame in container.decode(stream):
        if frame.pts is None:
            return None
        index = round((frame.pts - t0) / step)
        if first:
            first = False
            if index > wanted[0]:  # the seek landed past the start: not trustworthy
                return None
        if index <= previous:  # timestamps going backwards: counting is the only exact answer
            return None
        previous = index
        if index in targets:
            if plan is None:
                plan = _resize_plan(frame.height, frame.width, size)
            out[index] = frame_to_array(frame, plan)
        if index >= wanted[-1]:
            break
    reached = [i for i in wanted if i <= previous]  # all of them unless the video ended early
    if any(i not in out for i in reached):
        return None  # a wanted index was skipped over: irregular timestamps
    return [out[i] for i in reached], previous


def _decode_by_counting(container, stream, wanted: list[int], size) -> tuple[list[np.ndarray], int]:
    """(frames, last decoded index), counting frames in presentation order from the current position."""
    targets = set(wanted)
    out = []
    plan = None
    index = -1
    for index, frame in enumerate(container.decode(stream)):
        if index in targets:
            if plan is None:
                plan = _resize_plan(frame.height, frame.width, size)
            out.append(frame_to_array(frame, plan))
        if index >= wanted[-1]:
            break
    return out, index


def read_all_frames(path, size=None) -> torch.Tensor:
    """Every frame of a video as uint8 (T, 3, H, W), decoded in order (the reference for `read_clip`)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        plan, frames = None, []
        for frame in container.decode(stream):
            if plan is None:
                plan = _resize_plan(frame.height, frame.width, size)
            frames.append(frame_to_array(frame, plan))
    except Exception as e:  # noqa: BLE001
        raise VideoError(path, f"decoding failed ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if not frames:
        raise VideoError(path, "no decodable frames")
    return torch.from_numpy(np.stack(frames))  # (T, 3, H, W)



class BadVideoWarning(UserWarning):
    """Emitted once per unreadable video that a dataset skips."""


def _warn_bad(error: Exception) -> None:
    warnings.warn(f"skipping bad video: {error}", BadVideoWarning, stacklevel=3)

