"""Built-in datasets that are generated on this machine: moving digits and captioned moving digits
(Atari recordings, the `atari` kind, live with the world model: `magi.world.atari`).

`MovingDigits` is Moving-MNIST made from scikit-learn's bundled 8x8 handwritten digits: each video
has `num_digits` digits flying in straight lines and bouncing off the canvas borders. The trajectory
is in closed form (a triangle wave per axis), so any frame of any video is computed directly: clips
of any length and any frame interval come from the same underlying video, and the first frames of a
long clip equal the short clip. Everything is a pure function of `(seed, index)` (plus the epoch for
dynamic intervals), so two runs, two workers or two machines see the same data.

`CaptionedDigits` is the text-to-video set: one or two digits, each moving along one axis and
bouncing once, with a caption in a fixed grammar ("the digit 3 is moving up then down"); some
(digit, motion) pairs never appear in training (`HELD_OUT_PAIRS`), a compositional test.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Union

import numpy as np
import torch

from magi.data.clips import MAX_INTERVAL, ClipSource, choose_clip, clip_span
from magi.video_io import to_float_video

Interval = Union[int, str]


def _digit_bank(digit_size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upscaled to `digit_size` px: uint8 (K, s, s) images and int64 (K,) labels.

    `split` keeps the first 1,500 images ("train"), the remaining 297 ("test") or all 1,797 ("all"),
    so held-out videos can use digit images never seen in training.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # (K, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    cut = 1500
    if split == "train":
        images, labels = images[:cut], labels[:cut]
    elif split == "test":
        images, labels = images[cut:], labels[cut:]
    elif split != "all":
        raise ValueError(f"MovingDigits.split: expected 'train', 'test' or 'all', got {split!r}")
    if digit_size != 8:
        images = torch.nn.functional.interpolate(
            images[:, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False
        )[:, 0]  # (K, s, s)
    bank = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return bank, labels


def _bounce(x: np.ndarray, span: float) -> np.ndarray:
    """Positions of points moving freely along a line, reflected into [0, span] (a triangle wave)."""
    if span <= 0:
        return np.zeros_like(x)
    m = np.mod(x, 2 * span)
    return span - np.abs(m - span)


class MovingDigits(torch.utils.data.Dataset, ClipSource):
    """Deterministic moving and bouncing handwritten digits, rendered as 3-channel grayscale video.

    Items are dicts: `video` float (T, 3, size, size) in [-1, 1] (black background at -1), `label` the
    class of the first digit, `interval` the frame interval used, `path` a synthetic id such as
    "moving-digits/000012".

    Args:
        num_videos: number of distinct videos (items).
        num_frames: frames per clip (any length; long clips for long-video evaluation are fine).
        size: canvas side in pixels.
        num_digits: digits per video.
        speed: pixels per underlying frame; a number or a (low, high) range drawn per digit.
        digit_size: digit side in pixels (default: half the canvas).
        seed: selects the videos; the same seed gives the same videos.
        interval: frame interval (an int >= 1) or "dynamic": each item draws an interval uniformly
            from 1..max_interval (re-drawn per epoch, see `set_epoch`). With interval k, frame j of the
            clip is frame j*k of the underlying video, so motion per clip frame scales with k.
        max_interval: upper bound of dynamic intervals (the paper's 25).
        split: which digit images to draw from: "train" (first 1,500), "test" (last 297) or "all".
        cache: keep rendered clips in memory (uint8, one channel), keyed by (index, interval).
    """

    def __init__(
        self,
        num_videos: int = 10_000,
        num_frames: int = 16,
        size: int = 32,
        num_digits: int = 2,
        speed: Union[float, tuple[float, float]] = (1.0, 2.0),
        digit_size: int | None = None,
        seed: int = 0,
        interval: Interval = 1,
        max_interval: int = MAX_INTERVAL,
        split: str = "all",
        cache: bool = True,
    ) -> None:
        for name, value in (("num_videos", num_videos), ("num_frames", num_frames), ("size", size),
                            ("num_digits", num_digits), ("max_interval", max_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MovingDigits.{name}: expected a positive integer, got {value!r}")
        if interval != "dynamic" and (isinstance(interval, bool) or not isinstance(interval, int)
                                      or interval < 1):
            raise ValueError(f"MovingDigits.interval: expected an integer >= 1 or 'dynamic', got {interval!r}")
        digit_size = size // 2 if digit_size is None else digit_size
        if not 1 <= digit_size <= size:
            raise ValueError(f"MovingDigits.digit_size: expected 1..{size}, got {digit_size}")
        low, high = (speed, speed) if isinstance(speed, (int, float)) else tuple(speed)
        if not 0 <= low <= high:
            raise ValueError(f"MovingDigits.speed: expected 0 <= low <= high, got {speed!r}")

        self.num_videos, self.num_frames, self.size = num_videos, num_frames, size
        self.num_digits, self.digit_size, self.seed = num_digits, digit_size, seed
        self.interval, self.max_interval, self.split = interval, max_interval, split
        self.epoch = 0
        self.skipped = 0  # nothing is ever skipped; kept so every dataset reports the same counters
        self.too_short = 0
        self._bank, bank_labels = _digit_bank(digit_size, split)
        self._cache: dict[tuple[int, int], np.ndarray] | None = {} if cache else None

        # Per-video parameters, each video from its own seed so video i does not depend on num_videos.
        self._ids = np.zeros((num_videos, num_digits), np.int64)  # which digit image
        self._p0 = np.zeros((num_videos, num_digits, 2), np.float64)  # start position (y, x)
        self._v = np.zeros((num_videos, num_digits, 2), np.float64)  # velocity (y, x) px/frame
        self._count = np.full(num_videos, num_digits, np.int64)  # digits drawn in each video
        self._draw_videos(bank_labels, float(size - digit_size), low, high)
        self.labels = bank_labels[self._ids[:, 0]]  # (num_videos,) class of the first digit
        self.num_classes = 10

    def _draw_videos(self, bank_labels: np.ndarray, span: float, low: float, high: float) -> None:
        """Fill each video's digit images, start positions and velocities (free flight, any angle).

        Subclasses draw other motions (`CaptionedDigits`); rendering reads only these arrays."""
        n = self.num_digits
        for i in range(self.num_videos):
            rng = np.random.default_rng([self.seed, i, 0, 2])
            self._ids[i] = rng.integers(0, len(self._bank), n)
            self._p0[i] = rng.uniform(0.0, span, (n, 2))
            angle = rng.uniform(0.0, 2 * math.pi, n)
            s = rng.uniform(low, high, n)
            self._v[i] = np.stack([s * np.sin(angle), s * np.cos(angle)], axis=-1)

    def __len__(self) -> int:
        return self.num_videos

    def set_epoch(self, epoch: int) -> None:
        """Re-draw dynamic intervals for a new epoch (deterministically from seed, epoch and index)."""
        self.epoch = int(epoch)

    def choose(self, index: int) -> tuple[int, int]:
        """(interval, start) of item `index` in the current epoch; start is always 0 (see `choose_clip`)."""
        return choose_clip(self.seed, self.epoch, index, self.num_frames, None, self.interval, self.max_interval)

    def pick(self, index: int) -> tuple[int, int, int]:
        """(video, interval, start) of item `index`: every item is its own video."""
        return (index, *self.choose(index))

    def interval_for(self, index: int) -> int:
        """The frame interval item `index` uses in the current epoch."""
        return self.choose(index)[0]

    @property
    def full_length(self) -> int:
        """Frames that hold every clip this dataset can draw (what a latent cache stores per video)."""
        longest = self.max_interval if self.interval == "dynamic" else int(self.interval)
        return clip_span(self.num_frames, longest)

    def full_video(self, index: int) -> torch.Tensor:
        """uint8 (full_length, 3, S, S): the first frames of video `index`, enough for any of its clips."""
        return self.frames(index, num_frames=self.full_length, interval=1)

    # ---- the ClipSource interface (magi.data.clips), shared with VideoFolder
    def video_frames(self, index: int) -> None:
        """Generated videos have no end: any start and length are valid."""
        return None

    def label_of(self, index: int) -> int:
        return int(self.labels[index])

    def path_of(self, index: int) -> str:
        return f"moving-digits/{index:06d}"

    def frames(self, index: int, num_frames: int | None = None, interval: int = 1,
               start: int = 0) -> torch.Tensor:
        """uint8 (T, 3, size, size): frames start, start+interval, ... of video `index`."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"MovingDigits: index {index} out of range 0..{self.num_videos - 1}")
        num_frames = self.num_frames if num_frames is None else num_frames
        key = (index, interval) if (start == 0 and num_frames == self.num_frames) else None
        gray = self._cache.get(key) if (self._cache is not None and key is not None) else None
        if gray is None:
            gray = self._render(index, start + interval * np.arange(num_frames))
            if self._cache is not None and key is not None:
                self._cache[key] = gray
        frames = torch.from_numpy(gray)[:, None]  # (T, 1, S, S)
        return frames.expand(-1, 3, -1, -1).contiguous()  # (T, 3, S, S)

    def _render(self, index: int, times: np.ndarray) -> np.ndarray:
        """uint8 (T, S, S) frames of video `index` at the given underlying times."""
        s, span = self.digit_size, float(self.size - self.digit_size)
        pos = self._p0[index][None] + times[:, None, None] * self._v[index][None]  # (T, digits, 2)
        pos = np.rint(_bounce(pos, span)).astype(np.int64)
        canvas = np.zeros((len(times), self.size, self.size), np.uint8)  # (T, S, S)
        for d in range(self._count[index]):
            digit = self._bank[self._ids[index, d]]
            for t in range(len(times)):
                y, x = pos[t, d]
                patch = canvas[t, y:y + s, x:x + s]
                np.maximum(patch, digit, out=patch)
        return canvas

    def __getitem__(self, index: int) -> dict:
        interval, start = self.choose(index)
        return {
            "video": to_float_video(self.frames(index, interval=interval, start=start)),
            "label": self.label_of(index),
            "interval": interval,
            "path": self.path_of(index),
        }

    def __repr__(self) -> str:
        return (f"MovingDigits(num_videos={self.num_videos}, num_frames={self.num_frames}, size={self.size}, "
                f"num_digits={self.num_digits}, interval={self.interval!r}, seed={self.seed})")


# --------------------------------------------------------------------------------------------------
# Captioned moving digits: a fixed caption grammar for text-to-video, with held-out compositions

MOTIONS = ("up then down", "down then up", "left then right", "right then left")
# (axis, first direction) of each motion in MOTIONS: axis 0 is y (rows, "down" is +), axis 1 is x.
_MOTION_AXIS = ((0, -1), (0, 1), (1, -1), (1, 1))

# (digit, motion index) pairs no training caption contains: the compositional test. Each digit keeps
# three of its four motions in training and each motion is seen with most digits, so a model that
# composes "digit" and "motion" can draw these; one that memorises captions cannot.
HELD_OUT_PAIRS = ((0, 2), (1, 1), (2, 3), (3, 0), (4, 2), (5, 1), (6, 3), (7, 0), (8, 2), (9, 1))
_HELD_OUT = frozenset(HELD_OUT_PAIRS)

CAPTION_SPLITS = ("train", "seen", "heldout", "scorer")
Pairs = tuple[tuple[int, int], ...]

_PHRASE = re.compile(r"the digit (\d) is moving (" + "|".join(MOTIONS) + ")")
_CAPTION = re.compile(f"{_PHRASE.pattern}(?: and {_PHRASE.pattern})?")


def _check_pairs(pairs, who: str) -> Pairs:
    """`pairs` as a tuple of (digit, motion index) int tuples, or ValueError: one or two pairs, digits
    0..9 and distinct, motions 0..3."""
    out = tuple((int(d), int(m)) for d, m in pairs)
    if not 1 <= len(out) <= 2:
        raise ValueError(f"{who}: expected one or two (digit, motion) pairs, got {pairs!r}")
    for d, m in out:
        if not (0 <= d <= 9 and 0 <= m < len(MOTIONS)):
            raise ValueError(f"{who}: expected digits 0..9 and motion indices 0..{len(MOTIONS) - 1}, got {pairs!r}")
    if len(out) == 2 and out[0][0] == out[1][0]:
        raise ValueError(f"{who}: the two digits must differ, got {pairs!r}")
    return out


def caption_for(pairs) -> str:
    """The caption of one or two (digit, motion index) pairs, e.g. [(3, 0)] -> "the digit 3 is moving
    up then down"; two pairs are joined with " and ", in the order given."""
    return " and ".join(f"the digit {d} is moving {MOTIONS[m]}" for d, m in _check_pairs(pairs, "caption_for"))


def parse_caption(text: str) -> Pairs:
    """The (digit, motion index) pairs of a caption: the inverse of `caption_for`. ValueError naming the
    text for anything outside the grammar (exact wording, one space, lower case, distinct digits)."""
    match = _CAPTION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"parse_caption: {text!r} is not a captioned-digits caption; expected "
                         f"'the digit D is moving M' or two such joined by ' and ' (D in 0..9, M one of "
                         f"{', '.join(repr(m) for m in MOTIONS)})")
    groups = [g for g in match.groups() if g is not None]  # (digit, motion, [digit, motion])
    pairs = tuple((int(groups[k]), MOTIONS.index(groups[k + 1])) for k in range(0, len(groups), 2))
    if len(pairs) == 2 and pairs[0][0] == pairs[1][0]:
        raise ValueError(f"parse_caption: {text!r} names the digit {pairs[0][0]} twice; the two digits must differ")
    return pairs


def is_held_out(caption_or_pairs) -> bool:
    """Whether a caption (text, or its (digit, motion) pairs) contains a pair of `HELD_OUT_PAIRS`."""
    pairs = (parse_caption(caption_or_pairs) if isinstance(caption_or_pairs, str)
             else _check_pairs(caption_or_pairs, "is_held_out"))
    return any(p in _HELD_OUT for p in pairs)


@functools.lru_cache(maxsize=None)
def caption_pairs(num_digits: int | None = None, held_out: bool | None = None) -> tuple[Pairs, ...]:
    """Every caption of the grammar as pairs, in a fixed order: 40 one-digit then 1,440 two-digit
    (ordered, distinct digits: 40 x 36), 1,480 in all; `num_digits` (1 or 2) and `held_out` (True: only
    those with a held-out pair, 10 + 630; False: the rest, 30 + 810) filter them.

    Two digits are always different: a per-digit-class reader (the caption scorer) could not tell two
    motions of one class apart, and "the digit 3 ... and the digit 3 ..." is odd language. Both orders
    of a two-digit caption are in the grammar (the text encoder must learn that order is not motion)."""
    if num_digits not in (None, 1, 2):
        raise ValueError(f"caption_pairs.num_digits: expected 1, 2 or None, got {num_digits!r}")
    singles = [((d, m),) for d in range(10) for m in range(len(MOTIONS))]
    doubles = [a + b for a in singles for b in singles if a[0][0] != b[0][0]]
    chosen = {None: singles + doubles, 1: singles, 2: doubles}[num_digits]
    return tuple(p for p in chosen if held_out is None or is_held_out(p) == held_out)


def all_captions(num_digits: int | None = None, held_out: bool | None = None) -> list[str]:
    """Every caption of the grammar as text (see `caption_pairs` for the order, counts and filters)."""
    return [caption_for(p) for p in caption_pairs(num_digits, held_out)]


class CaptionedDigits(MovingDigits):
    """Moving digits with a caption saying which digit moves how: text-to-video data in a fixed grammar.

    Each video holds one or two handwritten digits; each moves along one axis only (the other
    coordinate fixed, drawn per video) at a constant `speed`, first in the named direction, bounces
    off the canvas edge once and comes back: "the digit 3 is moving up then down". The bounce falls
    between 25% and 75% of the clip (drawn per digit), so every clip shows both directions. Like
    `MovingDigits` (whose rendering and clip interface this reuses), everything is a pure function of
    (seed, index).

    Items are dicts: `video` float (T, 3, size, size) in [-1, 1] (gray in 3 channels), `caption` (str),
    `label` (the first digit), `interval`, `path` ("captioned-digits/000012") and `pairs` (list of
    (digit, motion index into `MOTIONS`)). `pairs` has one or two entries, so batch items with
    `magi.recipe.collate` (which stacks what it knows), not torch's default collate.

    Args:
        num_videos: number of distinct videos (items).
        num_frames: frames per clip (>= 4).
        size: canvas side in pixels.
        num_digits: 1 or 2 digits in every video (default 1 unless `two_digit_share` is given).
        two_digit_share: instead of `num_digits`, the probability that a video has two digits.
        speed: pixels per underlying frame; default (None) the fastest that keeps one bounce inside
            the clip, span / (0.75 (num_frames - 1) interval), span = size - digit_size.
        digit_size: digit side in pixels (default: half the canvas).
        split: "train" (captions without a held-out pair, training digit images: the first 1,500 of
            scikit-learn's digits), "seen" (the same captions, test digit images), "heldout" (only
            captions with a held-out pair, test digit images) or "scorer" (every caption, training
            digit images: what the caption scorer of `magi.evaluate.text` learns from, never a generator).
            Captions are drawn uniformly from the split's captions of the video's digit count.
        seed: selects the videos.
        interval: frame interval (a fixed int >= 1): frame j of the clip is time j * interval.
        cache: keep rendered clips in memory.
    """

    def __init__(
        self,
        num_videos: int = 10_000,
        num_frames: int = 8,
        size: int = 32,
        num_digits: int | None = None,
        two_digit_share: float | None = None,
        speed: float | None = None,
        digit_size: int | None = None,
        split: str = "train",
        seed: int = 0,
        interval: int = 1,
        cache: bool = True,
    ) -> None:
        if split not in CAPTION_SPLITS:
            raise ValueError(f"CaptionedDigits.split: expected one of {CAPTION_SPLITS}, got {split!r}")
        if num_digits is not None and two_digit_share is not None:
            raise ValueError("CaptionedDigits: give num_digits or two_digit_share, not both")
        if num_digits not in (None, 1, 2):
            raise ValueError(f"CaptionedDigits.num_digits: expected 1 or 2, got {num_digits!r}")
        share = float(two_digit_share if two_digit_share is not None else (num_digits or 1) - 1)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"CaptionedDigits.two_digit_share: expected a probability in [0, 1], got {two_digit_share!r}")
        for name, value in (("num_frames", num_frames), ("size", size), ("interval", interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CaptionedDigits.{name}: expected a positive integer, got {value!r}")
        if num_frames < 4:
            raise ValueError(f"CaptionedDigits.num_frames: need >= 4 frames to show a bounce, got {num_frames}")
        digit_size = size // 2 if digit_size is None else digit_size
        if not 1 <= digit_size < size:
            raise ValueError(f"CaptionedDigits.digit_size: expected 1..{size - 1} (the digit must move), got {digit_size}")
        # One bounce inside the clip: the digit reaches the edge at time tb <= 0.75 * duration, then
        # travels back for at most 0.75 * duration, so speed * 0.75 * duration must fit in the span.
        span, duration = float(size - digit_size), float((num_frames - 1) * interval)
        fastest = span / (0.75 * duration)
        speed = fastest if speed is None else float(speed)
        if not 0 < speed <= fastest + 1e-9:
            raise ValueError(f"CaptionedDigits.speed: expected 0 < speed <= {fastest:.3f} px/frame (one bounce "
                             f"inside {num_frames} frames at interval {interval} on a {span:g}-px span), got {speed}")
        self.caption_split, self.two_digit_share, self.speed = split, share, speed
        super().__init__(num_videos=num_videos, num_frames=num_frames, size=size, num_digits=2,
                         speed=speed, digit_size=digit_size, seed=seed, interval=interval,
                         split="test" if split in ("seen", "heldout") else "train", cache=cache)
        self.split = split

    def _draw_videos(self, bank_labels: np.ndarray, span: float, low: float, high: float) -> None:
        """Per video: a caption from the split's captions, then per digit an image of that class, the
        fixed coordinate, and the bounce time, which set the start position and velocity."""
        held_out = {"train": False, "seen": False, "heldout": True, "scorer": None}[self.caption_split]
        choices = {n: caption_pairs(n, held_out) for n in (1, 2)}
        images_of = [np.flatnonzero(bank_labels == d) for d in range(10)]
        duration = (self.num_frames - 1) * int(self.interval)
        self.pairs: list[Pairs] = []
        for i in range(self.num_videos):
            rng = np.random.default_rng([self.seed, i, 0, 3])
            n = 2 if rng.random() < self.two_digit_share else 1
            pairs = choices[n][rng.integers(len(choices[n]))]
            self.pairs.append(pairs)
            self._count[i] = n
            for k, (digit, motion) in enumerate(pairs):
                axis, sign = _MOTION_AXIS[motion]
                self._ids[i, k] = rng.choice(images_of[digit])
                bounce = rng.uniform(0.25, 0.75) * duration  # time of reaching the edge
                self._p0[i, k, 1 - axis] = rng.uniform(0.0, span)
                # Moving toward 0 (sign -1) it starts speed*bounce from 0; toward span, as far from span.
                self._p0[i, k, axis] = self.speed * bounce if sign < 0 else span - self.speed * bounce
                self._v[i, k, axis] = sign * self.speed
        self.captions = [caption_for(p) for p in self.pairs]

    def path_of(self, index: int) -> str:
        return f"captioned-digits/{index:06d}"

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["caption"] = self.captions[index]
        item["pairs"] = [tuple(p) for p in self.pairs[index]]
        return item

    def __repr__(self) -> str:
        return (f"CaptionedDigits(num_videos={self.num_videos}, num_frames={self.num_frames}, size={self.size}, "
                f"two_digit_share={self.two_digit_share}, split={self.split!r}, interval={self.interval}, "
                f"seed={self.seed})")

