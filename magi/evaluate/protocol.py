"""The FVD protocols of appendix A.2.2: their published settings, how a run deviates from them, and
the real clips they score.

| protocol | real clips | interval | frames | generated |
|---|---|---|---|---|
| ucf101 | 2,048 random videos of the train split, one clip each | 3 | 16 | 2,048 (Table 4: 10,000), labels like the real set's |
| k600 | 50,000 random videos, one clip each | 1 | 16 | one continuation of each real clip from its first 5 frames |

`magi eval fvd` (`magi.evaluate.cli`) resolves a run's settings, draws the real clips here
(`EvalClips`, deterministic from the seed) and writes the deviations next to the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from magi.data.clips import clip_span
from magi.data.decode import VideoError, _warn_bad
from magi.data.video import VideoFolder
from magi.pretrained import LoadedCheckpoint, SamplingOptions, build_data
from magi.video_io import to_float_video


@dataclass(frozen=True)
class ProtocolDefaults:
    """The published settings of a named protocol (None = take it from the model / arguments)."""

    data: Optional[str]
    num_videos: Optional[int]
    num_generated: Optional[int]  # None = as many as real clips
    interval: Optional[int]
    eval_frames: Optional[int]  # frames scored; clips are this long, or 1 + 4k with a causal VAE
    context_frames: int
    resolution: Optional[int]
    split: Optional[str]
    #: how the paper sampled for this protocol (`SamplingOptions` fields), always with the EMA weights
    sampling: Optional[dict] = None


#: the paper's inference (docs/design.md §1): 64 masked-prediction steps x 100 DDPM steps per token, EMA weights;
#: UCF-101's Table 4 samples class-conditionally with CFG 7, K600 predicts frames without guidance
PAPER_SAMPLING = {"mask_steps": 64, "diffusion_steps": 100, "sampler": "ddpm"}


PROTOCOLS: dict[str, ProtocolDefaults] = {
    "ucf101": ProtocolDefaults("ucf101", 2048, 2048, 3, 16, 0, 128, "train", {**PAPER_SAMPLING, "cfg": 7.0}),
    "k600": ProtocolDefaults("k600", 50_000, None, 1, 16, 5, None, None, {**PAPER_SAMPLING, "cfg": 1.0}),
    "custom": ProtocolDefaults(None, None, None, None, None, 0, None, None),
}


def deviations(protocol: dict, ckpt: LoadedCheckpoint, options: Optional[SamplingOptions] = None) -> list[str]:
    """How this run differs from the named protocol's published settings: the real clips (counts,
    interval, frames, split, resolution) and, given the sampling `options`, how the samples were drawn
    (cfg, mask and diffusion steps, sampler) and whether the EMA weights were used."""
    d = PROTOCOLS[protocol["name"]]
    if protocol["name"] == "custom":
        return ["custom protocol: not comparable with published numbers"]
    out = []
    for key, want in (("num_videos", d.num_videos), ("interval", d.interval),
                      ("eval_frames", d.eval_frames), ("context_frames", d.context_frames),
                      ("resolution", d.resolution), ("split", d.split)):
        if want is not None and protocol.get(key) != want:
            out.append(f"{key} = {protocol.get(key)!r}, the protocol uses {want!r}")
    want = d.num_generated or protocol["num_videos"]
    if protocol["num_generated"] != want:
        out.append(f"num_generated = {protocol['num_generated']}, the protocol generates {want}"
                   + (" (the paper's Table 4, FVD_128,10k, generates 10,000)" if protocol["name"] == "ucf101" else ""))
    if ckpt.frame_size[0] != protocol["resolution"]:
        out.append(f"the model generates {ckpt.frame_size[0]} px videos, the real clips are "
                   f"{protocol['resolution']} px")
    if options is not None and d.sampling is not None:
        for key, want in d.sampling.items():
            if getattr(options, key) != want:
                out.append(f"{key} = {getattr(options, key)!r}, the paper samples with {want!r}")
    if not ckpt.ema:
        out.append("raw (non-EMA) weights; every number the paper reports uses the EMA weights")
    return out


def build_clips(protocol: dict, ckpt: LoadedCheckpoint):
    """The protocol's real clips (`EvalClips`) from the dataset it names."""
    from magi.data import build_dataset

    options = dict(protocol["data_options"])
    kind = protocol["data"]
    res = protocol["resolution"]
    fixed = {"num_frames": protocol["frames"], "size": res}
    if kind is None:  # custom without --data: the checkpoint's training data
        source = build_data(ckpt, None, {**fixed, "interval": protocol["interval"], **options})
    else:
        if protocol["data_root"]:
            options.setdefault("root", protocol["data_root"])
        if protocol["split"] is not None and kind == "ucf101":
            options.setdefault("split", protocol["split"])
        if kind in ("ucf101", "k600", "folder"):
            options.setdefault("interval", protocol["interval"])
            if "root" not in options:
                raise ValueError(f"--protocol {protocol['name']}: pass --data-root (the {kind} videos)")
        for k, v in fixed.items():
            options.setdefault(k, v)
        source = build_dataset(kind, **options)
    return EvalClips(source, protocol["num_videos"], protocol["frames"], protocol["interval"],
                     seed=protocol["seed"])


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
    plus `start`. `magi.video_io.to_uint8_video(item["video"])` gives back the exact uint8 frames.
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


__all__ = ["ProtocolDefaults", "PROTOCOLS", "deviations", "build_clips", "EvalClips"]
