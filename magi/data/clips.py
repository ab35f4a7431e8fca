"""Which clip an item is (appendix A.2.1): clip spans, the dynamic-interval rules, stratified clip
caches, interval histograms, and the clip-source Protocol the datasets implement.

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

from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class ClipSource(Protocol):
    """What a dataset offers to the rules here, the latent cache and the evaluation clips: videos of
    known length (None = unbounded, generated), their frames at any interval and start, labels, paths,
    and the clip each item is in the current epoch. `VideoFolder` and `MovingDigits` implement it."""

    num_frames: int
    interval: int | str
    max_interval: int
    seed: int

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def video_frames(self, index: int) -> int | None: ...

    def frames(self, index: int, num_frames: int | None = None, interval: int = 1,
               start: int = 0) -> torch.Tensor: ...

    def label_of(self, index: int) -> int: ...

    def path_of(self, index: int) -> str: ...

    def choose(self, index: int) -> tuple[int, int]: ...

    def interval_for(self, index: int) -> int: ...

    def full_video(self, index: int) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------------
# Clip caches and histograms (what a run trains)


def stratified_clips(lengths: list[int], num_frames: int, clips_per_video: int, max_interval: int = MAX_INTERVAL,
                     seed: int = 0, random_start: bool = True) -> list[list[tuple[int, int]]]:
    """(interval, start) of each cached clip of each video (frame counts `lengths`), stratified over
    1..max_interval: videos, the shortest first, take the K intervals they hold that have the fewest
    clips so far (ties drawn from (seed, video)); a video holding fewer than K intervals repeats them."""
    caps = [max_interval_for(num_frames, n, max_interval) for n in lengths]
    counts = np.zeros(max_interval + 1, dtype=np.int64)
    plan: list[list[tuple[int, int]]] = [[] for _ in lengths]
    for video in sorted(range(len(lengths)), key=lambda i: (caps[i], i)):
        rng = np.random.default_rng([seed, video, 6])
        held = np.arange(1, caps[video] + 1)
        if not len(held):
            continue
        chosen: list[int] = []
        this_round: set[int] = set()  # a video takes each interval it holds once before repeating any
        while len(chosen) < clips_per_video:
            if len(this_round) == len(held):
                this_round = set()
            free = np.asarray([k for k in held if k not in this_round])
            fewest = free[counts[free] == counts[free].min()]
            k = int(rng.choice(fewest))
            chosen.append(k)
            this_round.add(k)
            counts[k] += 1
        for k in sorted(chosen):
            room = lengths[video] - clip_span(num_frames, k)
            plan[video].append((k, int(rng.integers(0, room + 1)) if random_start else room // 2))
    return plan


def interval_report(lengths: list[int], num_frames: int, max_interval: int = MAX_INTERVAL, seed: int = 0) -> dict:
    """Videos holding each interval, and the intervals epoch 0 trains under the capped and uniform rules."""
    usable = [n for n in lengths if n >= num_frames]
    capped = [choose_clip(seed, 0, i, num_frames, n, "dynamic", max_interval)[0] for i, n in enumerate(usable)]
    uniform = UniformIntervals(usable, num_frames, max_interval)
    drawn = [uniform.interval(seed, 0, i) for i in range(len(usable))] if uniform.intervals else []
    return {"num_frames": num_frames, "max_interval": max_interval,
            "holders": interval_holders(lengths, num_frames, max_interval),
            "first_epoch": {"capped": interval_histogram(capped, max_interval),
                            "uniform": interval_histogram(drawn, max_interval)}}


def interval_of(dataset: Any, index: int) -> int | None:
    """The frame interval item `index` trains in the dataset's current epoch, without decoding; None
    when the dataset cannot say (`interval_for`, the datasets here, or a fixed `interval`)."""
    if hasattr(dataset, "interval_for"):
        return int(dataset.interval_for(index))
    interval = getattr(dataset, "interval", None)
    return int(interval) if isinstance(interval, int) and not isinstance(interval, bool) else None


def epoch_interval_histogram(dataset: Any, epoch: int, items: list[int]) -> dict[int, int] | None:
    """{interval: clips} that `items` of `epoch` train (the dataset's epoch is restored); None if unknown."""
    before = getattr(dataset, "epoch", None)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    try:
        counts: dict[int, int] = {}
        for i in items:
            k = interval_of(dataset, i)
            if k is None:
                return None
            counts[k] = counts.get(k, 0) + 1
        return dict(sorted(counts.items()))
    finally:
        if before is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(before)


def trained_interval_range(dataset: Any) -> tuple[int, int] | None:
    """(lowest, highest) frame interval `dataset` trains: its `interval_range()`, else from its
    `interval` (an int, or "dynamic" = 1..max_interval); None when it cannot say."""
    if hasattr(dataset, "interval_range"):
        found = dataset.interval_range()
        return None if found is None else (int(found[0]), int(found[1]))
    interval = getattr(dataset, "interval", None)
    if interval == "dynamic" and getattr(dataset, "max_interval", None):
        return 1, int(dataset.max_interval)
    if isinstance(interval, int) and not isinstance(interval, bool):
        return interval, interval
    return None
