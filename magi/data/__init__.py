"""Data: video decoding (`decode`), which clip an item is (`clips`, appendix A.2.1), folder datasets
(`video`), built-in generated data (`builtin`) and the latent cache (`latents`). The `atari` kind
(recordings of the emulator) is the world model's: `magi.world.atari`.

`build_dataset(kind, **options)` is what a training config's `data:` section calls, e.g.
`data: {kind: moving-digits, num_frames: 6, size: 32, interval: dynamic}`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from magi.data.builtin import (HELD_OUT_PAIRS, MOTIONS, CaptionedDigits, MovingDigits, all_captions,
                               caption_for, caption_pairs, is_held_out, parse_caption)
from magi.data.clips import MAX_INTERVAL, ClipSource, choose_clip, clip_span, draw_interval, max_interval_for
from magi.data.decode import VIDEO_EXTENSIONS, BadVideoWarning, VideoError, VideoInfo, probe, read_all_frames, read_clip
from magi.data.latents import LatentDataset, cache_latents
from magi.data.video import VideoFolder
from magi.video_io import to_float_video, to_uint8_video


def ucf101(root, num_frames: int, size=None, split: str = "train", fold: int = 1, split_dir=None,
           **options: Any) -> VideoFolder:
    """UCF-101: `root` holds the 101 class folders; the official split files (`trainlist0{fold}.txt`,
    `testlist0{fold}.txt`, `classInd.txt`) are in `split_dir` (default: a `ucfTrainTestlist` folder in
    or next to root). `split="all"` uses every video."""
    from pathlib import Path

    if split not in ("train", "test", "all"):
        raise ValueError(f"ucf101.split: expected 'train', 'test' or 'all', got {split!r}")
    if fold not in (1, 2, 3):
        raise ValueError(f"ucf101.fold: expected 1, 2 or 3, got {fold!r}")
    split_file = None
    if split != "all":
        candidates = [Path(split_dir)] if split_dir is not None else \
            [Path(root) / "ucfTrainTestlist", Path(root).parent / "ucfTrainTestlist"]
        name = f"{split}list0{fold}.txt"
        found = [d / name for d in candidates if (d / name).is_file()]
        if not found:
            raise FileNotFoundError(f"ucf101: {name} not found in {', '.join(map(str, candidates))}; pass "
                                    f"split_dir= (the unpacked UCF101TrainTestSplits-RecognitionTask.zip)")
        split_file = found[0]
    return VideoFolder(root, num_frames, size, split_file=split_file, **options)


def k600(root, num_frames: int, size=None, list_file=None, interval: int | str = 1, **options: Any) -> VideoFolder:
    """Kinetics-600: `list_file` is the official CSV (label,youtube_id,time_start,time_end,...), a
    `path,label` CSV or a `path label` text list, with paths relative to `root`. The interval defaults
    to 1, the paper's K600 setup (a folder's default is 3, UCF-101's protocol)."""
    if list_file is None:
        raise ValueError("k600: list_file is required (the CSV or text list of videos)")
    return VideoFolder(root, num_frames, size, interval=interval, split_file=list_file, **options)


def _builders() -> dict[str, Callable[..., Any]]:
    from magi.world.atari import atari

    return {
        "folder": VideoFolder,
        "ucf101": ucf101,
        "k600": k600,
        "moving-digits": MovingDigits,
        "captioned-digits": CaptionedDigits,
        "atari": atari,
        "latents": LatentDataset,
    }


def build_dataset(kind: str, **options: Any):
    """Build a dataset by kind; unknown kinds or options raise ValueError naming them.

    Kinds: "folder" (`VideoFolder`), "ucf101" (`ucf101`), "k600" (`k600`), "moving-digits"
    (`MovingDigits`), "captioned-digits" (`CaptionedDigits`: captions in a fixed grammar), "atari"
    (`magi.world.atari.atari`: record once with `record_atari`, read with `VideoFolder`), "latents" (`LatentDataset`
    over a cache written by `magi cache-latents`).
    """
    builders = _builders()
    if kind not in builders:
        raise ValueError(f"build_dataset: unknown kind {kind!r}; known kinds: {', '.join(builders)}")
    builder = builders[kind]
    known = _accepted_options(builder)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"build_dataset({kind!r}): unknown option(s) {', '.join(unknown)}; "
                         f"known options: {', '.join(sorted(known))}")
    return builder(**options)


def _accepted_options(builder: Callable[..., Any]) -> set[str]:
    """Keyword names a builder takes; builders that forward **options to VideoFolder accept its too."""
    params = inspect.signature(builder).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names |= _accepted_options(VideoFolder) - {"split_file"}
    return names


__all__ = ["build_dataset", "ucf101", "k600", "MovingDigits",
           "CaptionedDigits", "MOTIONS", "HELD_OUT_PAIRS", "caption_for", "parse_caption", "is_held_out",
           "caption_pairs", "all_captions",
           "LatentDataset", "cache_latents", "choose_clip", "ClipSource", "VideoFolder", "read_clip",
           "read_all_frames", "probe", "VideoError", "VideoInfo", "BadVideoWarning",
           "VIDEO_EXTENSIONS", "MAX_INTERVAL", "clip_span", "draw_interval", "max_interval_for",
           "to_float_video", "to_uint8_video"]
