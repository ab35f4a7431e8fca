"""Video decoding with PyAV, clip sampling (fixed or dynamic interval) and folder datasets.

A clip is `num_frames` frames taken every `interval` frames from `start`: frames start,
start + interval, ..., start + (num_frames - 1) * interval. It spans `(num_frames - 1) * interval + 1`
frames of the video, so a video must have at least that many frames to hold the clip.

Dynamic intervals (`interval="dynamic"`) follow one of two rules, `interval_sampling`:

- "uniform" (the paper: "the frame interval is uniformly sampled from 1 to 25"): the interval comes
  first, then the video. In epoch e the items are dealt the intervals 1..K in turn along a permutation
  drawn from (seed, e), so every interval is trained equally often (counts differ by at most one over
  any number of whole epochs). An item keeps its own video when that video holds a clip at its
  interval; otherwise the clip comes from a video drawn uniformly among those that hold it (seeded by
  (seed, e, index)), so the item's label and path are that video's. K is max_interval, or the largest
  interval any video holds when the longest video is too short for max_interval (a warning says so).
- "capped" (the default of `VideoFolder`, kept for existing runs): each item draws uniformly on
  1..min(max_interval, the largest interval its own video holds); short videos never train long
  intervals, so long intervals are rare.

Both are pure functions of (seed, epoch, index) and the videos' lengths, so resuming is exact and
ranks agree.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

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


def choose_clip(seed: int, epoch: int, index: int, num_frames: int, video_frames: int | None,
                interval: int | str, max_interval: int = MAX_INTERVAL,
                random_start: bool = True) -> tuple[int, int]:
    """(interval, start) of item `index` in `epoch`: the one rule every dataset here samples clips by.

    A pure function of its arguments (seeded by (seed, epoch, index)), so training on the fly, the
    latent cache and every DataLoader worker agree. `interval` is an int or "dynamic" (uniform on
    1..max_interval, capped so the clip fits); the start is uniform over the valid starts (the middle
    one if not `random_start`), and 0 for unbounded (generated) videos, `video_frames=None`.
    """
    rng = np.random.default_rng([seed, epoch, index, 1])
    if interval == "dynamic":
        k = draw_interval(rng, max_interval, num_frames, video_frames) if video_frames is not None \
            else draw_interval(rng, max_interval)
    else:
        k = int(interval)
    if video_frames is None:
        return k, 0
    room = video_frames - clip_span(num_frames, k)
    if room < 0:
        raise ValueError(f"a clip of {num_frames} frames at interval {k} does not fit in {video_frames} frames")
    return k, int(rng.integers(0, room + 1)) if random_start else room // 2


INTERVAL_SAMPLING = ("capped", "uniform")


class UniformIntervals:
    """The "uniform" dynamic-interval rule (see the module doc) over videos of known lengths.

    Args:
        lengths: frames of each video, in dataset order (None = unbounded, holds every interval).
        num_frames: frames per clip.
        max_interval: the largest interval drawn.
        holds: optional explicit set of intervals each video holds (a latent cache of pre-sampled
            clips: the intervals it cached for that video); default: 1..its largest interval.
    """

    def __init__(self, lengths, num_frames: int, max_interval: int = MAX_INTERVAL, holds=None) -> None:
        self.lengths = list(lengths)
        self.num_frames, self.max_interval = num_frames, max_interval
        self._caps = self._holds = None
        if holds is None:  # video i holds 1..caps[i] (holding is nested in the interval)
            self._caps = np.asarray([max_interval if v is None else max_interval_for(num_frames, v, max_interval)
                                     for v in self.lengths], dtype=np.int64)
            holders = {k: np.nonzero(self._caps >= k)[0] for k in range(1, max_interval + 1)}
        else:  # explicit sets (a cache of pre-sampled clips)
            self._holds = [frozenset(int(k) for k in h if 1 <= k <= max_interval) for h in holds]
            members: dict[int, list[int]] = {k: [] for k in range(1, max_interval + 1)}
            for i, h in enumerate(self._holds):
                for k in h:
                    members[k].append(i)
            holders = {k: np.asarray(v, dtype=np.int64) for k, v in members.items()}
        #: holders[k]: the videos that hold interval k, in dataset order
        self.holders: dict[int, np.ndarray] = holders
        #: the intervals dealt in turn: those in 1..max_interval some video holds
        self.intervals: list[int] = [k for k in range(1, max_interval + 1) if len(holders[k])]
        self.top = max(self.intervals, default=0)
        self._perm_key, self._perm = None, None

    def holds(self, video: int, interval: int) -> bool:
        if self._caps is not None:
            return 1 <= interval <= int(self._caps[video])
        return interval in self._holds[video]

    def missing(self) -> list[int]:
        """Intervals in 1..max_interval that no video holds (never dealt)."""
        return [k for k in range(1, self.max_interval + 1) if not len(self.holders[k])]

    def interval(self, seed: int, epoch: int, position: int) -> int:
        """The interval of item `position` in `epoch`: slot perm_e[position] + e * n of the run, dealt
        the intervals in turn, so over whole epochs every interval is dealt equally often."""
        n = len(self.lengths)
        if self._perm_key != (seed, epoch):
            self._perm = np.random.default_rng([seed, epoch, 5]).permutation(n)
            self._perm_key = (seed, epoch)
        slot = int(self._perm[position]) + epoch * n
        return self.intervals[slot % len(self.intervals)]

    def choose(self, seed: int, epoch: int, position: int, key: int | None = None,
               random_start: bool = True) -> tuple[int, int, int]:
        """(video, interval, start) of item `position`; `key` (default: position) seeds the draws of
        the substitute video and the start (a latent cache passes its source's video index)."""
        if not self.intervals:
            raise ValueError(f"no video holds a clip of {self.num_frames} frames")
        k = self.interval(seed, epoch, position)
        rng = np.random.default_rng([seed, epoch, position if key is None else key, 1])
        video = position
        if not self.holds(position, k):
            candidates = self.holders[k]
            video = int(candidates[rng.integers(0, len(candidates))])
        length = self.lengths[video]
        if length is None:
            return video, k, 0
        room = length - clip_span(self.num_frames, k)
        return video, k, int(rng.integers(0, room + 1)) if random_start else room // 2


def _ranges(values) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1..3, 7, 9..10"."""
    values, parts = sorted(values), []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}..{values[j]}")
        i = j + 1
    return ", ".join(parts)


def interval_holders(lengths, num_frames: int, max_interval: int = MAX_INTERVAL) -> dict[int, int]:
    """{interval: how many of the videos (frame counts) hold a clip of `num_frames` at it} for 1..max_interval."""
    caps = np.asarray([max_interval_for(num_frames, int(v), max_interval) for v in lengths], dtype=np.int64)
    return {k: int((caps >= k).sum()) for k in range(1, max_interval + 1)}


def interval_histogram(intervals, max_interval: int = MAX_INTERVAL) -> dict[int, int]:
    """{k: count} for k in 1..max(max_interval, largest seen)."""
    counts = np.bincount(np.asarray(list(intervals), dtype=np.int64), minlength=max_interval + 1)
    return {k: int(counts[k]) for k in range(1, len(counts))}


def to_float_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, H, W) in [0, 255] -> float32 (T, 3, H, W) in [-1, 1]."""
    return frames.float().div_(127.5).sub_(1.0)


def to_uint8_video(video: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# --------------------------------------------------------------------------------------------------
# Decoding

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


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


# --------------------------------------------------------------------------------------------------
# Folder datasets


class BadVideoWarning(UserWarning):
    """Emitted once per unreadable video that a dataset skips."""


def _warn_bad(error: Exception) -> None:
    warnings.warn(f"skipping bad video: {error}", BadVideoWarning, stacklevel=3)


def scan_folder(root, extensions=VIDEO_EXTENSIONS) -> list[tuple[str, str]]:
    """(relative path, class name) of every file under `root`, the class being its top-level folder.

    Files directly in `root` get the class "" (one unnamed class). Non-video files (by extension) are
    left out here; `magi data check` lists them with `extensions=None`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    out = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if extensions is not None and path.suffix.lower() not in extensions:
            continue
        rel = path.relative_to(root)
        out.append((rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else ""))
    return out


def read_list_file(list_file) -> list[tuple[str, str | None, int | None]]:
    """(relative path, class name or None, integer label or None) for each video of a list file.

    - `.csv` with a header: a `path` column (and optionally `label`), or the official Kinetics columns
      `label, youtube_id, time_start, time_end`, mapped to `<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`
      (the layout of the common Kinetics downloaders).
    - otherwise whitespace-separated lines `relative/path [label]`, as UCF-101's `trainlist0k.txt` /
      `testlist0k.txt` and mmaction-style lists. A non-numeric label is a class name.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"split/list file not found: {list_file}")
    entries: list[tuple[str, str | None, int | None]] = []
    if list_file.suffix.lower() == ".csv":
        with list_file.open(newline="") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            kinetics = {"label", "youtube_id", "time_start", "time_end"} <= cols
            if "path" not in cols and not kinetics:
                raise ValueError(f"{list_file}: a CSV list needs a 'path' column or the Kinetics columns "
                                 f"label,youtube_id,time_start,time_end; found {sorted(cols)}")
            for row in reader:
                if kinetics and "path" not in cols:
                    rel = (f"{row['label']}/{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                           f"{int(float(row['time_end'])):06d}.mp4")
                else:
                    rel = row["path"]
                entries.append((rel, *_parse_label(row.get("label"))))
        return entries
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"{list_file}:{number}: expected 'path [label]', got {line!r}")
        entries.append((parts[0], *_parse_label(parts[1] if len(parts) == 2 else None)))
    return entries


def _parse_label(text: str | None) -> tuple[str | None, int | None]:
    if text is None or text == "":
        return None, None
    try:
        return None, int(text)
    except ValueError:
        return text, None


def _find_class_index(*folders) -> list[str] | None:
    """Class names from UCF-101's `classInd.txt` ("1 ApplyEyeMakeup" lines) if one is in these folders."""
    for folder in folders:
        if folder is None:
            continue
        path = Path(folder) / "classInd.txt"
        if path.is_file():
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
            return [name for _, name in sorted((int(i), name) for i, name in rows)]
    return None


@dataclass
class VideoRecord:
    path: str  # relative to the dataset root
    label: int
    num_frames: int


class VideoFolder(torch.utils.data.Dataset):
    """Clips from a folder of videos: UCF-101 layout (a folder per class) or a list file (Kinetics).

    Items are dicts: `video` float (T, 3, H, W) in [-1, 1], `label` int, `interval` int, `path` str.

    Args:
        root: the videos' root folder.
        num_frames: frames per clip.
        size: output frame size, int (square) or (H, W): resize to cover, centre crop. None keeps the size.
        interval: a fixed frame interval, or "dynamic": drawn per item and epoch by `interval_sampling`.
        interval_sampling: the dynamic-interval rule (module doc): "uniform" (the paper: every interval
            in 1..max_interval trained equally often; an item whose video is too short for its interval
            takes its clip from a video that holds it) or "capped" (uniform on 1..the largest interval
            the item's own video holds; the default, what earlier versions did).
        split_file: optional list of the videos to use (see `read_list_file`): UCF-101's
            `trainlist01.txt`, a Kinetics CSV, or "path label" lines. Without one, every video under root.
        classes: class names in label order; default: UCF's `classInd.txt` when next to the split file
            or in root, else the sorted class names found. Labels come from class names (the label
            column, else the top-level folder); a bare integer label is used only for files that are
            not in a class folder.
        seed: with the epoch (`set_epoch`) and the item index, determines each item's interval and start.
        random_start: draw the clip start uniformly (else take the clip from the video's middle).
        index_file: JSON file caching the probed frame counts (keyed by path, size and mtime), so a
            large dataset is probed once.
        probe_threads: threads probing headers while building the index.
        actions: also return `actions` (int64 (T,)), read from `<video>.actions.npy` beside each video
            (Atari recordings, `record_atari`): clip action j is the action taken at the clip's frame j,
            the one leading toward frame j+1 (-1 where none was recorded). At an interval k > 1 it is
            the first of the k actions taken between the two clip frames. A video without its actions
            file is skipped like an unreadable one.

    Videos that cannot be opened are skipped with one `BadVideoWarning` each and listed in `bad`
    (`skipped` counts them); videos shorter than one clip (at interval 1 when dynamic) are counted in
    `too_short`; files named by the split file but absent are counted in `missing`. A video that fails
    later while decoding (e.g. truncated) is skipped at that point in favour of the next one.
    """

    def __init__(
        self,
        root,
        num_frames: int,
        size=None,
        interval: int | str = 3,
        split_file=None,
        classes: list[str] | None = None,
        extensions=VIDEO_EXTENSIONS,
        max_interval: int = MAX_INTERVAL,
        seed: int = 0,
        random_start: bool = True,
        index_file=None,
        probe_threads: int = 4,
        progress: bool = True,
        actions: bool = False,
        interval_sampling: str = "capped",
    ) -> None:
        if interval_sampling not in INTERVAL_SAMPLING:
            raise ValueError(f"VideoFolder.interval_sampling: expected one of {list(INTERVAL_SAMPLING)}, "
                             f"got {interval_sampling!r}")
        if interval != "dynamic" and (isinstance(interval, bool) or not isinstance(interval, int)
                                      or interval < 1):
            raise ValueError(f"VideoFolder.interval: expected an integer >= 1 or 'dynamic', got {interval!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"VideoFolder.num_frames: expected a positive integer, got {num_frames!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VideoFolder: root folder not found: {self.root}")
        self.num_frames, self.size, self.interval = num_frames, size, interval
        self.max_interval, self.seed, self.random_start = max_interval, seed, random_start
        self.actions, self.interval_sampling = actions, interval_sampling
        self.epoch = 0
        self._uniform: UniformIntervals | None = None

        # 1. which files, with which class
        if split_file is not None:
            listed = read_list_file(split_file)
        else:
            listed = [(rel, name, None) for rel, name in scan_folder(self.root, extensions)]
        names = [name if name is not None else (Path(rel).parts[0] if len(Path(rel).parts) > 1 else None)
                 for rel, name, _ in listed]
        if classes is None:
            classes = _find_class_index(Path(split_file).parent if split_file else None, self.root)
        if classes is None:
            classes = sorted({n for n in names if n})
        self.classes = list(classes)
        class_index = {n: i for i, n in enumerate(self.classes)}
        self.missing = 0
        candidates: list[tuple[str, int]] = []
        missing_examples = []
        for (rel, _, number), name in zip(listed, names):
            if not (self.root / rel).is_file():
                self.missing += 1
                missing_examples.append(rel)
                continue
            if name:
                if name not in class_index:
                    raise ValueError(f"VideoFolder: {rel} has class {name!r}, which is not in the class list")
                label = class_index[name]
            else:
                label = number if number is not None else 0
            candidates.append((rel, label))
        if self.missing:
            warnings.warn(f"VideoFolder({self.root}): {self.missing} listed videos are missing, e.g. "
                          f"{', '.join(missing_examples[:3])}", BadVideoWarning, stacklevel=2)

        # 2. probe headers (frame counts), skipping what cannot be opened
        counts, self.bad = self._probe_all(candidates, index_file, probe_threads, progress)
        if actions:
            for rel in [r for r in counts if not (self.root / r).with_suffix(".actions.npy").is_file()]:
                del counts[rel]
                self.bad.append({"path": str(self.root / rel),
                                 "error": f"no actions file {Path(rel).with_suffix('.actions.npy').name}"})
        for entry in self.bad:
            _warn_bad(VideoError(entry["path"], entry["error"]))
        self.skipped = len(self.bad)
        need = num_frames if interval == "dynamic" else clip_span(num_frames, interval)
        self.records: list[VideoRecord] = []
        self.too_short = 0
        for rel, label in candidates:
            if rel not in counts:
                continue
            if counts[rel] < need:
                self.too_short += 1
                continue
            self.records.append(VideoRecord(rel, label, counts[rel]))
        self._failed: set[str] = set()
        self.found = len(candidates)  # video files found (before probing)
        self.need = need  # frames a video must have to hold one clip
        if not self.records:
            warnings.warn(f"VideoFolder({self.root}): no usable videos ({len(candidates)} found, "
                          f"{self.skipped} bad, {self.too_short} shorter than {need} frames)", stacklevel=2)
        elif self.uniform is not None and self.uniform.missing():
            missing = self.uniform.missing()
            warnings.warn(f"VideoFolder({self.root}): no video holds a clip of {num_frames} frames at "
                          f"interval{'s' if len(missing) > 1 else ''} {_ranges(missing)} (the longest has "
                          f"{max(r.num_frames for r in self.records)} frames); uniform sampling deals "
                          f"{_ranges(self.uniform.intervals)} instead of 1..{max_interval}", stacklevel=2)

    def describe_usable(self) -> str:
        """Why the dataset holds the clips it does, e.g. "0 of 32 videos hold a clip of 59 frames (30
        frames at interval 2): 30 shorter, 2 unreadable"; names the folder when it has no video files."""
        if self.found == 0 and not self.missing:
            return (f"no video files under {self.root} (looked for {', '.join(VIDEO_EXTENSIONS)}; expected "
                    f"ROOT/<class>/<video> or videos directly in ROOT)")
        total = self.found + self.missing
        what = (f"{self.num_frames} frames at any interval" if self.interval == "dynamic"
                else f"{self.num_frames} frames at interval {self.interval}")
        reasons = [f"{self.too_short} shorter", f"{len(self.bad)} unreadable"]
        if self.missing:
            reasons.append(f"{self.missing} listed but missing")
        return (f"{len(self.records)} of {total} videos in {self.root} hold a clip of {self.need} frames "
                f"({what}): {', '.join(reasons)}")

    # ---- index building
    def _probe_all(self, candidates, index_file, threads, progress):
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        cache = {}
        if index_file is not None and Path(index_file).is_file():
            cache = json.loads(Path(index_file).read_text()).get("videos", {})
        counts: dict[str, int] = {}
        bad: list[dict] = []
        stamps: dict[str, list] = {}
        todo = []
        for rel, _ in candidates:
            st = (self.root / rel).stat()
            stamps[rel] = [st.st_size, st.st_mtime_ns]
            hit = cache.get(rel)
            if hit is not None and hit[:2] == stamps[rel]:
                if isinstance(hit[2], int):
                    counts[rel] = hit[2]
                else:
                    bad.append({"path": str(self.root / rel), "error": hit[2]})
            else:
                todo.append(rel)

        def one(rel):
            try:
                return rel, probe(self.root / rel).num_frames
            except VideoError as e:
                return rel, e.reason

        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = pool.map(one, todo)
            for rel, result in tqdm(results, total=len(todo), desc=f"indexing {self.root.name}",
                                    disable=not progress or len(todo) < 100, unit="video"):
                if isinstance(result, int):
                    counts[rel] = result
                else:
                    bad.append({"path": str(self.root / rel), "error": result})
                cache[rel] = stamps[rel] + [result]
        if index_file is not None and todo:
            Path(index_file).parent.mkdir(parents=True, exist_ok=True)
            Path(index_file).write_text(json.dumps({"version": 1, "videos": cache}))
        return counts, bad

    # ---- the clip-source interface shared with MovingDigits (used by EvalClips and the latent cache)
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw intervals and starts for a new epoch (deterministically from seed, epoch and index)."""
        self.epoch = int(epoch)

    @property
    def uniform(self) -> UniformIntervals | None:
        """The uniform rule over the current records (None unless dynamic with interval_sampling uniform)."""
        if self.interval != "dynamic" or self.interval_sampling != "uniform":
            return None
        if self._uniform is None:
            self._uniform = UniformIntervals([r.num_frames for r in self.records], self.num_frames,
                                             self.max_interval)
        return self._uniform

    def interval_range(self) -> tuple[int, int] | None:
        """(lowest, highest) interval this dataset's items can have (what a model trained on it knows)."""
        if not self.records:
            return None
        if self.interval != "dynamic":
            return int(self.interval), int(self.interval)
        if self.uniform is not None:
            return min(self.uniform.intervals), self.uniform.top
        return 1, max(max_interval_for(self.num_frames, r.num_frames, self.max_interval) for r in self.records)

    def video_frames(self, index: int) -> int:
        return self.records[index].num_frames

    def label_of(self, index: int) -> int:
        return self.records[index].label

    def path_of(self, index: int) -> str:
        return str(self.root / self.records[index].path)

    def frames(self, index: int, num_frames: int | None = None, interval: int = 1, start: int = 0) -> torch.Tensor:
        """uint8 (T, 3, H, W) frames start, start + interval, ... of video `index` at this dataset's size."""
        num_frames = self.num_frames if num_frames is None else num_frames
        return read_clip(self.path_of(index), start, num_frames, interval, self.size)

    # ---- items
    def pick(self, index: int) -> tuple[int, int, int]:
        """(video, interval, start) of item `index` in the current epoch. The video is `index` itself
        except under uniform sampling when that video is too short for the item's interval."""
        if self.uniform is not None:
            return self.uniform.choose(self.seed, self.epoch, index, random_start=self.random_start)
        interval, start = choose_clip(self.seed, self.epoch, index, self.num_frames,
                                      self.records[index].num_frames, self.interval, self.max_interval,
                                      self.random_start)
        return index, interval, start

    def choose(self, index: int) -> tuple[int, int]:
        """(interval, start) of item `index` in the current epoch, in video `pick(index)[0]` (the
        item's own video, except under uniform sampling; see `pick`)."""
        return self.pick(index)[1:]

    def interval_for(self, index: int) -> int:
        """The frame interval item `index` trains in the current epoch (nothing is decoded)."""
        return self.pick(index)[1]

    def full_video(self, index: int) -> torch.Tensor:
        """Every frame of video `index` as uint8 (N, 3, H, W) at this dataset's size (for latent caches)."""
        return read_all_frames(self.path_of(index), self.size)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.records):
            raise IndexError(f"VideoFolder: index {index} out of range 0..{len(self.records) - 1}")
        for attempt in range(len(self.records)):
            j = (index + attempt) % len(self.records)
            video = self.pick(j)[0]
            record = self.records[video]
            if record.path in self._failed:
                continue
            try:
                return self._load(j)
            except VideoError as e:
                if e.available is not None and e.available >= self.num_frames and \
                        e.available < record.num_frames:
                    record.num_frames = e.available  # the header over-counted: retry within what exists
                    self._uniform = None  # the uniform rule's table follows the lengths
                    try:
                        return self._load(j)
                    except VideoError as e2:
                        e = e2
                self._failed.add(record.path)
                self.skipped += 1
                self.bad.append({"path": self.path_of(video), "error": e.reason})
                _warn_bad(e)
        raise RuntimeError(f"VideoFolder({self.root}): none of the {len(self.records)} videos could be decoded")

    def _load(self, index: int) -> dict:
        video, interval, start = self.pick(index)
        clip = self.frames(video, interval=interval, start=start)
        item = {"video": to_float_video(clip), "label": self.records[video].label, "interval": interval,
                "path": self.path_of(video)}
        if self.actions:
            item["actions"] = self.actions_of(video, start, interval)
        return item

    def actions_of(self, index: int, start: int, interval: int = 1, num_frames: int | None = None
                   ) -> torch.Tensor:
        """int64 (T,): the recorded action taken at each clip frame (see `actions` in the class doc)."""
        num_frames = self.num_frames if num_frames is None else num_frames
        path = Path(self.path_of(index)).with_suffix(".actions.npy")
        try:
            recorded = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise VideoError(self.path_of(index), f"actions file {path.name} unreadable ({e})") from e
        picked = np.full(num_frames, -1, np.int64)
        at = start + interval * np.arange(num_frames)
        inside = at < len(recorded)
        picked[inside] = recorded[at[inside]]
        return torch.from_numpy(picked)

    def __repr__(self) -> str:
        return (f"VideoFolder({str(self.root)!r}, videos={len(self)}, classes={len(self.classes)}, "
                f"num_frames={self.num_frames}, size={self.size}, interval={self.interval!r}"
                f"{f', interval_sampling={self.interval_sampling!r}' if self.interval == 'dynamic' else ''}, "
                f"bad={self.skipped}, too_short={self.too_short}, missing={self.missing})")


# --------------------------------------------------------------------------------------------------
# Evaluation clips


class EvalClips(torch.utils.data.Dataset):
    """The FVD protocol's real clips: `num_videos` random videos, one clip each, at a fixed interval.

    Deterministic from `seed`: the same seed picks the same videos and starts on every run and machine
    (UCF-101: 2,048 videos at interval 3; K600: 50,000 at interval 1). Videos are drawn without
    replacement among those long enough for the clip; each start is uniform over the video's valid
    starts (0 for generated data, whose videos have no end). A video that fails to decode is replaced by
    a fixed spare (slot p uses the p-th video after the first `num_videos` of the permutation), so the
    set stays deterministic.

    Args:
        source: a dataset with the clip-source interface (`VideoFolder`, `MovingDigits`: `__len__`,
            `video_frames(i)` (None = unbounded), `frames(i, num_frames, interval, start)` -> uint8,
            `label_of(i)`, `path_of(i)`) or a root folder (read as a `VideoFolder` at `size`; `dataset_options` go to it).
        num_videos, num_frames, interval, seed: the protocol.

    Items are dicts like the training datasets' (`video` float in [-1, 1], `label`, `interval`, `path`)
    plus `start`. `magi.data.to_uint8_video(item["video"])` gives back the exact uint8 frames.
    `manifest()` lists the chosen clips (save it next to an FVD result).
    """

    def __init__(self, source, num_videos: int, num_frames: int, interval: int, seed: int = 0,
                 size=None, **dataset_options) -> None:
        if isinstance(source, (str, Path)):
            source = VideoFolder(source, num_frames, size, interval=interval, seed=seed, **dataset_options)
        elif dataset_options or size is not None:
            raise ValueError("EvalClips: size and dataset options apply only when source is a folder")
        self.source, self.num_videos, self.num_frames = source, num_videos, num_frames
        self.interval, self.seed = interval, seed
        span = clip_span(num_frames, interval)
        eligible = [i for i in range(len(source)) if self._length(i) is None or self._length(i) >= span]
        if num_videos > len(eligible):
            raise ValueError(f"EvalClips: asked for {num_videos} videos but only {len(eligible)} of "
                             f"{len(source)} hold a clip of {num_frames} frames at interval {interval}")
        rng = np.random.default_rng([seed, 3])
        self._perm = rng.permutation(np.asarray(eligible, dtype=np.int64)).tolist()

    def _length(self, index: int) -> int | None:
        return self.source.video_frames(index)

    def start_of(self, video: int) -> int:
        """The clip start in video `video`: uniform over its valid starts, from (seed, video)."""
        n = self._length(video)
        if n is None:
            return 0
        room = n - clip_span(self.num_frames, self.interval)
        return int(np.random.default_rng([self.seed, video, 4]).integers(0, room + 1))

    def candidates(self, slot: int) -> list[int]:
        """The videos slot `slot` may use, in order: its own, then its spares."""
        return self._perm[slot::self.num_videos]

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, slot: int) -> dict:
        if not 0 <= slot < self.num_videos:
            raise IndexError(f"EvalClips: index {slot} out of range 0..{self.num_videos - 1}")
        error = None
        for video in self.candidates(slot):
            start = self.start_of(video)
            try:
                clip = self.source.frames(video, num_frames=self.num_frames, interval=self.interval, start=start)
            except VideoError as e:
                error = e
                _warn_bad(e)
                continue
            return {"video": to_float_video(clip), "label": int(self._label(video)),
                    "interval": self.interval, "path": self._path(video), "start": start}
        raise RuntimeError(f"EvalClips: slot {slot}: no decodable video among its candidates ({error})")

    def _label(self, video: int) -> int:
        return self.source.label_of(video)

    def _path(self, video: int) -> str:
        return self.source.path_of(video)

    def manifest(self) -> list[dict]:
        """The chosen clips (first candidate of each slot): path, video index, start, interval, frames."""
        out = []
        for slot in range(self.num_videos):
            video = self.candidates(slot)[0]
            out.append({"slot": slot, "video": video, "path": self._path(video), "start": self.start_of(video),
                        "interval": self.interval, "num_frames": self.num_frames})
        return out
