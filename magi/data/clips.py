"""Which clip an item is (appendix A.2.1): clip spans, the dynamic-interval rules, stratified clip
caches, interval histograms, and the clip-source Protocol the datasets implement.

A clip is `num_frames` frames taken every `interval` frames from `start`: frames start,
start + interval, ..., start + (num_frames - 1) * interval. It spans `(num_frames - 1) * interval + 1`
frames of the video, so a video must have at least that many frames to hold the clip.

Dynamic intervals (`interval="dynamic"`) follow one of three rules, `interval_sampling`:

- "video_first" (the paper's order, A.2.1: a video drawn uniformly, then its interval uniformly from
  1..25): every video is one item, so each is drawn exactly once per epoch and the classes keep their
  share of the videos; the item's interval is uniform on 1..max_interval. Decision (the paper is
  silent): a video too short for the drawn interval gives its clip at the longest interval it holds
  (the draw is clamped). Measured on UCF-101-like lengths (`benchmarks/intervals.py`: 9,537 videos,
  101 classes, 17 frames, 3 epochs): clamping trains intervals 13..25 in 20.0% of clips (max/min
  interval count 20x) against 12.9% (30x) when the interval is redrawn among those the video holds
  ("capped"); both draw every video exactly once per epoch and every class in proportion to its
  videos, where interval_first leaves 22% of the videos undrawn in 3 epochs and weights the classes
  0.39..2.09x their share of the videos. Holding the last frame to reach the drawn interval would make all 25 intervals equal but pad
  52.7% of the clips (24.4% of all frames, 39.0% at intervals 13..25, would be copies no video shows).
- "interval_first" (called "uniform" before; kept under its honest name): the interval comes first,
  then a video that holds it. In epoch e the items are dealt the intervals 1..K in turn along a
  permutation drawn from (seed, e), so every interval is trained equally often. An item keeps its own
  video when that video holds its interval; otherwise the clip comes from a video drawn uniformly
  among those that hold it (seeded by (seed, e, index)), so long videos are drawn far more often than
  short ones, some videos never, and class frequencies follow video length. K is max_interval, or the
  largest interval any video holds (a warning says so).
- "capped" (the default of `VideoFolder`, kept for existing runs): each item draws uniformly on
  1..min(max_interval, the largest interval its own video holds); short videos never train long
  intervals, so interval 1 is drawn ~30x as often as 25 on the same lengths.

All are pure functions of (seed, epoch, index) and the videos' lengths, so resuming is exact and
ranks agree. `rule_shares` reports, for each rule, the three shares side by side: per interval, per
video (draws per epoch) and per class.
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


INTERVAL_SAMPLING = ("video_first", "interval_first", "capped")
LEGACY_SAMPLING = {"uniform": "interval_first"}  # names earlier run configs and caches recorded


def sampling_rule(name: str, where: str = "interval_sampling") -> str:
    """The rule called `name` (a legacy name maps to its honest one); ValueError naming `where` otherwise."""
    name = LEGACY_SAMPLING.get(name, name)
    if name not in INTERVAL_SAMPLING:
        raise ValueError(f"{where}: expected one of {list(INTERVAL_SAMPLING)}, got {name!r}")
    return name


def draw_interval(rng: np.random.Generator, max_interval: int = MAX_INTERVAL,
                  num_frames: int | None = None, video_frames: int | None = None, rule: str = "capped") -> int:
    """A dynamic interval of one video (`rule` "capped": uniform on 1..the longest interval the video
    holds; "video_first": uniform on 1..max_interval, clamped to the longest it holds). Without a
    video length, uniform on 1..max_interval."""
    cap = max_interval
    if num_frames is not None and video_frames is not None:
        cap = max_interval_for(num_frames, video_frames, max_interval)
        if cap < 1:
            raise ValueError(f"a clip of {num_frames} frames does not fit in {video_frames} frames")
    if rule == "video_first":
        return min(int(rng.integers(1, max_interval + 1)), cap)
    return int(rng.integers(1, cap + 1))


def choose_clip(seed: int, epoch: int, index: int, num_frames: int, video_frames: int | None,
                interval: int | str, max_interval: int = MAX_INTERVAL,
                random_start: bool = True, rule: str = "capped") -> tuple[int, int]:
    """(interval, start) of item `index` in `epoch` under a rule that keeps the item's own video
    ("capped", "video_first"; "interval_first" is `UniformIntervals`).

    A pure function of its arguments (seeded by (seed, epoch, index)), so training on the fly, the
    latent cache and every DataLoader worker agree. `interval` is an int or "dynamic" (`draw_interval`);
    the start is uniform over the valid starts (the middle one if not `random_start`), and 0 for
    unbounded (generated) videos, `video_frames=None`.
    """
    rng = np.random.default_rng([seed, epoch, index, 1])
    if interval == "dynamic":
        k = draw_interval(rng, max_interval, num_frames, video_frames, rule) if video_frames is not None \
            else draw_interval(rng, max_interval)
    else:
        k = int(interval)
    if video_frames is None:
        return k, 0
    room = video_frames - clip_span(num_frames, k)
    if room < 0:
        raise ValueError(f"a clip of {num_frames} frames at interval {k} does not fit in {video_frames} frames")
    return k, int(rng.integers(0, room + 1)) if random_start else room // 2


class UniformIntervals:
    """The "interval_first" dynamic-interval rule (see the module doc) over videos of known lengths.

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

    def pick(self, index: int) -> tuple[int, int, int]: ...

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


def shares(videos, intervals, labels, num_videos: int, epochs: int = 1, max_interval: int = MAX_INTERVAL) -> dict:
    """The three shares of the clips a run trains, side by side. `videos[j]`, `intervals[j]`: the video
    and interval of clip j (over `epochs` epochs of `num_videos` videos); `labels[v]`: video v's class
    (None: no classes).

    - per interval: {k: clips};
    - per video: draws per epoch, min / median / max, and how many videos were never drawn;
    - per class: {class: clips}, and how far each class's share of the clips is from its share of the
      videos (ratio min / max; 1.0 = every class trained in proportion to its videos).
    """
    draws = np.bincount(np.asarray(videos, dtype=np.int64), minlength=num_videos) / max(epochs, 1)
    out = {"per_interval": interval_histogram(intervals, max_interval),
           "per_video": {"min": float(draws.min()) if num_videos else 0.0,
                         "median": float(np.median(draws)) if num_videos else 0.0,
                         "max": float(draws.max()) if num_videos else 0.0,
                         "never": int((draws == 0).sum())}}
    if labels is not None and num_videos:
        labels = np.asarray(labels, dtype=np.int64)
        clips = np.bincount(labels[np.asarray(videos, dtype=np.int64)], minlength=labels.max() + 1)
        have = np.bincount(labels, minlength=labels.max() + 1)
        held = have > 0
        ratio = (clips[held] / clips.sum()) / (have[held] / have.sum())
        out["per_class"] = {"clips": {int(c): int(clips[c]) for c in np.nonzero(held)[0]},
                            "share_vs_videos": {"min": float(ratio.min()), "max": float(ratio.max())}}
    return out


def describe_shares(what: str, found: dict) -> str:
    """`magi.data.clips.shares` as three lines: per interval, per video, per class."""
    v = found["per_video"]
    lines = [f"{what}: clips per interval " + " ".join(f"{k}:{n}" for k, n in found["per_interval"].items()),
             f"  per video: {v['min']:g} / {v['median']:g} / {v['max']:g} draws (min / median / max), "
             f"{v['never']} never drawn"]
    if "per_class" in found:
        c = found["per_class"]["share_vs_videos"]
        lines.append(f"  per class: share of clips / share of videos {c['min']:.2f} .. {c['max']:.2f}")
    return "\n".join(lines)


def rule_shares(lengths, num_frames: int, max_interval: int = MAX_INTERVAL, seed: int = 0, labels=None,
                epochs: int = 1) -> dict:
    """What each dynamic-interval rule trains over `epochs` epochs of videos with these frame counts
    (`labels`: their classes): `shares` per rule, and how many videos hold each interval."""
    keep = [i for i, n in enumerate(lengths) if n >= num_frames]
    usable = [int(lengths[i]) for i in keep]
    classes = None if labels is None else [int(labels[i]) for i in keep]
    first = UniformIntervals(usable, num_frames, max_interval)
    rules = {}
    for rule in INTERVAL_SAMPLING:
        videos, intervals = [], []
        for epoch in range(epochs):
            for i, n in enumerate(usable):
                if rule == "interval_first":
                    if not first.intervals:
                        break
                    v, k, _ = first.choose(seed, epoch, i)
                else:
                    v, (k, _) = i, choose_clip(seed, epoch, i, num_frames, n, "dynamic", max_interval, rule=rule)
                videos.append(v)
                intervals.append(k)
        rules[rule] = shares(videos, intervals, classes, len(usable), epochs, max_interval)
    return {"num_frames": num_frames, "max_interval": max_interval, "videos": len(usable), "epochs": epochs,
            "holders": interval_holders(lengths, num_frames, max_interval), "rules": rules}


def epoch_shares(dataset: Any, epoch: int, items: list[int]) -> dict | None:
    """`shares` of the clips `items` of `epoch` train in `dataset` (its epoch is restored); None when
    the dataset cannot say which video and interval an item is without decoding."""
    if not hasattr(dataset, "pick"):
        return None
    before = getattr(dataset, "epoch", None)
    dataset.set_epoch(epoch)
    try:
        picked = [dataset.pick(i)[:2] for i in items]
    finally:
        if before is not None:
            dataset.set_epoch(before)
    labels = [int(dataset.label_of(v)) for v in range(len(dataset))] if hasattr(dataset, "label_of") else None
    return shares([v for v, _ in picked], [k for _, k in picked], labels, len(dataset),
                  max_interval=getattr(dataset, "max_interval", MAX_INTERVAL))


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
