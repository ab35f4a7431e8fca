"""The latent cache: encode a dataset once with a VAE, train from the stored latents.

Layout of a cache folder:
    index.json                 what was cached: VAE identity and normalization, source dataset, videos
    shard_00000.safetensors    latents of up to `shard_size` videos, tensor "v<k>" for video k
    ...
    captions.safetensors       with a text encoder: tensor "embeddings" (K, L, E), one row per distinct
                               caption, in the order of index.json's `text_embeddings.captions`

Captions travel with the cache: when the source has captions (a captioned `VideoFolder`,
`CaptionedDigits`) each video's record holds its `caption` and `LatentDataset` items carry it, so a
text model trains from a cache. Given a text encoder, `cache_latents` also computes the embeddings of
every distinct caption once (docs/design.md §9) and stores them; the trainer preloads them into its
encoder's memo when they come from the run's encoder and max_length, so training never runs the
encoder on its captions. Every file is written under a temporary name and renamed, index.json last:
a folder with an index.json holds a whole cache.

Two modes, chosen by the VAE:
- "frames" (2D VAE, temporal stride 1): every frame of every video is cached, (N, C, h, w) per video,
  so clips with any interval, including dynamic ones, are still drawn at training time.
- "clips" (3D VAE): frames are not independent, so K clips per video are pre-sampled and cached with
  their intervals, (K, T', C, h, w) per video. How depends on the source's dynamic-interval rule:
  * `interval_sampling: interval_first` ("uniform" before): the clips are stratified over the intervals. Videos,
    the shortest first, each take the K intervals they hold that the cache holds fewest clips of so
    far (a video holding fewer than K takes each once, then repeats), so the cache covers 1..25 as
    evenly as the videos' lengths allow. In training, epoch e deals the intervals in turn exactly as
    the interval-first rule does on videos (`UniformIntervals`): an item takes its own video's clip at its
    interval, or a clip at that interval of a video drawn among those that cached one.
  * otherwise (a fixed interval, `video_first` or `capped`): clip k is what the source draws at epoch
    k (k < K) and epoch e reads clip e mod K: the first K epochs train what encoding on the fly would,
    later epochs repeat them (each video trains only its K cached crops and intervals).

Either way `LatentDataset` yields the items the video dataset would have yielded after encoding
(`latents` (T', C, h, w) in place of `video`), with the same sampling rule; with the exact `pixels`
VAE they are identical to encoding on the fly.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

import numpy as np

from magi.atomic import atomic_write, atomic_write_text
from magi.data.clips import (MAX_INTERVAL, UniformIntervals, _ranges, choose_clip, clip_span, interval_histogram,
                             max_interval_for, sampling_rule, stratified_clips)
from magi.data.decode import BadVideoWarning, VideoError
from magi.latent_stats import LatentStats
from magi.video_io import to_float_video

FORMAT_VERSION = 1
CAPTIONS_FILE = "captions.safetensors"
CAPTION_BATCH = 64  # distinct captions per text-encoder call when caching their embeddings
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _has_captions(source) -> bool:
    """Whether `source` gives its videos captions (`VideoFolder.captions` True, `CaptionedDigits.captions`
    a list)."""
    captions = getattr(source, "captions", None)
    return isinstance(captions, (list, tuple)) or captions is True


def _caption_of(source, index: int) -> str:
    """Video `index`'s caption (nothing is decoded)."""
    if isinstance(source.captions, (list, tuple)):
        return str(source.captions[index])
    return str(source.caption_of(index))


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors file at `path`, never half-written (`magi.atomic`)."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _embed_captions(text_encoder, captions: list[str], out_dir: Path, dtype: str, progress: bool) -> dict:
    """Encode each distinct caption once into `out_dir/captions.safetensors`; index.json's record of it."""
    from tqdm.auto import tqdm

    chunks = []
    for i in tqdm(range(0, len(captions), CAPTION_BATCH), desc="caption embeddings", unit="batch",
                  disable=not progress):
        chunks.append(text_encoder.encode(captions[i:i + CAPTION_BATCH]))  # (b, L, E)
    width = text_encoder.width
    embeddings = (torch.cat(chunks) if chunks else torch.zeros(0, text_encoder.max_length, width))  # (K, L, E)
    embeddings = embeddings.to(_DTYPES[dtype]).contiguous()
    _save_atomic({"embeddings": embeddings}, out_dir / CAPTIONS_FILE,
                 {"format": "magi-caption-embeddings", "version": str(FORMAT_VERSION)})
    print(f"caption embeddings: {len(captions)} distinct captions x ({text_encoder.max_length}, {width}) from "
          f"{text_encoder.name or type(text_encoder.model).__name__}, {dtype}: "
          f"{embeddings.numel() * embeddings.element_size() / 2**20:.1f} MiB in {out_dir / CAPTIONS_FILE}", flush=True)
    return {"file": CAPTIONS_FILE, "encoder": text_encoder.name, "max_length": text_encoder.max_length,
            "width": width, "dtype": dtype, "encoder_dtype": str(text_encoder.dtype).replace("torch.", ""),
            "captions": captions}


def _uniform_source(source) -> bool:
    return getattr(source, "interval", None) == "dynamic" and getattr(source, "interval_sampling", None) == "interval_first"


def _clip_plan(source, clips_per_video: int) -> tuple[str, list[list[tuple[int, int]]]]:
    """("uniform" or "epoch", per video the (interval, start) of each clip to cache)."""
    if _uniform_source(source):
        lengths = [source.video_frames(i) for i in range(len(source))]
        return "uniform", stratified_clips(lengths, source.num_frames, clips_per_video, source.max_interval,
                                           source.seed, getattr(source, "random_start", True))
    epoch = getattr(source, "epoch", 0)
    plan: list[list[tuple[int, int]]] = [[] for _ in range(len(source))]
    for k in range(clips_per_video):  # clip k: what the source draws at epoch k
        source.set_epoch(k)
        for i in range(len(source)):
            plan[i].append(tuple(source.choose(i)))
    source.set_epoch(epoch)
    return "epoch", plan


class _SourceVideos(torch.utils.data.Dataset):
    """What the cache encodes for video i, decoded in DataLoader workers: uint8 frames or its clips."""

    def __init__(self, source, mode: str, plan: list[list[tuple[int, int]]] | None = None) -> None:
        self.source, self.mode, self.plan = source, mode, plan

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        try:
            if self.mode == "frames":
                return {"index": index, "frames": self.source.full_video(index)}  # (N, 3, H, W)
            clips = [self.source.frames(index, interval=k, start=s) for k, s in self.plan[index]]  # (T, 3, H, W) each
            return {"index": index, "frames": torch.stack(clips), "intervals": [k for k, _ in self.plan[index]],
                    "starts": [s for _, s in self.plan[index]]}
        except VideoError as e:
            return {"index": index, "error": str(e)}


def cache_size(source, vae, mode: str, clips_per_video: int, dtype: str, frame_hw: tuple[int, int]) -> dict:
    """What a cache of `source` will hold: videos, clips or frames, latent shape and bytes."""
    count = len(source)
    if mode == "frames":
        frames = sum(getattr(source, "full_length", None) or source.video_frames(i) for i in range(count))
        shape = vae.latent_shape(1, *frame_hw)[1:]  # (C, h, w)
        values, unit = frames * int(np.prod(shape)), f"{frames} frames of {tuple(shape)}"
    else:
        shape = vae.latent_shape(source.num_frames, *frame_hw)  # (T', C, h, w)
        values, unit = count * clips_per_video * int(np.prod(shape)), f"{clips_per_video} clips of {tuple(shape)} per video"
    nbytes = values * torch.tensor([], dtype=_DTYPES[dtype]).element_size()
    return {"videos": count, "what": unit, "dtype": dtype, "bytes": int(nbytes)}


def _describe_source(source) -> dict:
    keys = ("num_frames", "size", "interval", "interval_sampling", "max_interval", "seed", "random_start", "num_videos",
            "num_digits", "digit_size", "split")
    out = {"class": type(source).__name__}
    for key in keys:
        if hasattr(source, key):
            value = getattr(source, key)
            out[key] = list(value) if isinstance(value, tuple) else value
    if hasattr(source, "root"):
        out["root"] = str(source.root)
    return out


@torch.no_grad()
def cache_latents(source, vae, out_dir, clips_per_video: int = 4, shard_size: int = 256,
                  dtype: str = "float32", num_workers: int = 0, device=None, progress: bool = True,
                  text_encoder=None) -> Path:
    """Encode `source` (a dataset with the clip-source interface) with `vae` into a cache at `out_dir`.

    2D VAEs cache every frame; 3D VAEs cache `clips_per_video` pre-sampled clips (see the module doc).
    Videos that fail to decode are skipped with a warning and listed in the index. The cache's size is
    printed before encoding. A source with captions records each video's caption; with `text_encoder`
    (a `magi.text.TextEncoder`) the embeddings of every distinct caption of the cached videos are
    computed once and stored in `captions.safetensors` (in `dtype`). Returns `out_dir`.
    """
    from tqdm.auto import tqdm

    if dtype not in _DTYPES:
        raise ValueError(f"cache_latents.dtype: expected one of {list(_DTYPES)}, got {dtype!r}")
    captioned = _has_captions(source)
    if text_encoder is not None and not captioned:
        raise ValueError(f"cache_latents.text_encoder: given, but the source {type(source).__name__} has no "
                         f"captions to embed")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "index.json").exists():
        raise FileExistsError(f"cache_latents: {out_dir} already holds a cache (index.json); use a new folder")
    mode = "frames" if vae.temporal_stride == 1 else "clips"
    if device is None:
        tensors = list(vae.parameters()) + list(vae.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
    selection, plan = _clip_plan(source, clips_per_video) if mode == "clips" else (None, None)
    videos_to_encode = _SourceVideos(source, mode, plan)
    for i in range(len(source)):  # the frame size of the first readable video sizes the cache
        first = videos_to_encode[i]
        if "error" not in first:
            size = cache_size(source, vae, mode, clips_per_video, dtype, tuple(first["frames"].shape[-2:]))
            print(f"latent cache: {size['videos']} videos x {size['what']}, {dtype}: "
                  f"{size['bytes'] / 2**30:.2f} GiB in {out_dir}", flush=True)
            break
    loader = torch.utils.data.DataLoader(videos_to_encode, batch_size=None, num_workers=num_workers)
    videos, skipped, shard, shard_index, latent_shape = [], [], {}, 0, None
    stats = LatentStats()  # per-channel mean/std of everything cached

    def flush():
        nonlocal shard, shard_index
        if shard:
            _save_atomic(shard, out_dir / f"shard_{shard_index:05d}.safetensors",
                         {"format": "magi-latent-cache", "version": str(FORMAT_VERSION)})
            shard, shard_index = {}, shard_index + 1

    for item in tqdm(loader, total=len(source), desc=f"caching latents ({mode})", unit="video",
                     disable=not progress):
        index = item["index"]
        if "error" in item:
            warnings.warn(f"skipping bad video: {item['error']}", BadVideoWarning, stacklevel=2)
            skipped.append({"index": index, "error": item["error"]})
            continue
        frames = item["frames"]
        video = to_float_video(frames.reshape(-1, *frames.shape[-3:])).to(device)  # (K*T or N, 3, H, W)
        if mode == "frames":
            latents = vae.encode(video[None])[0]  # (N, C, h, w)
        else:
            latents = vae.encode(video.view(*frames.shape[:2], *video.shape[1:]))  # (K, T', C, h, w)
        key = f"v{index}"
        stats.update(latents)
        shard[key] = latents.to(_DTYPES[dtype]).cpu().contiguous()
        latent_shape = latent_shape or list(latents.shape)
        record = {"index": index, "key": key, "shard": shard_index, "label": int(source.label_of(index)),
                  "path": source.path_of(index), "frames": int(frames.shape[0]) if mode == "frames" else None}
        if mode == "clips":
            record.update(intervals=item["intervals"], starts=item["starts"])
        if captioned:
            record["caption"] = _caption_of(source, index)
        videos.append(record)
        if len(shard) >= shard_size:
            flush()
    flush()
    text = None
    if text_encoder is not None:
        distinct = list(dict.fromkeys(r["caption"] for r in videos))  # first appearance order
        text = _embed_captions(text_encoder, distinct, out_dir, dtype, progress)

    meta = {
        "format": "magi-latent-cache", "version": FORMAT_VERSION, "mode": mode, "dtype": dtype,
        "vae": vae.identity(),
        "vae_geometry": {"latent_channels": vae.latent_channels, "spatial_stride": vae.spatial_stride,
                         "temporal_stride": vae.temporal_stride, "causal": vae.causal},
        "source": _describe_source(source),
        "unbounded": source.video_frames(0) is None if len(source) else False,
        "clips_per_video": clips_per_video if mode == "clips" else None,
        "clip_selection": selection,
        "num_shards": shard_index, "videos": videos, "skipped": skipped,
        "latent_shape": latent_shape,
        "latent_stats": stats.record() if stats.count else None,
        "captions": captioned, "text_embeddings": text,
    }
    if getattr(source, "classes", None):  # class names travel with the cache (and into checkpoints)
        meta["classes"] = [str(c) for c in source.classes]
    atomic_write_text(out_dir / "index.json", json.dumps(meta, indent=1))  # last: an index.json means a whole cache
    if stats.count:
        print(f"latent statistics: {stats.describe()}", flush=True)
        far = stats.far_from_unit()
        if far:
            warnings.warn(f"latent cache {out_dir}: {far}; the diffusion schedule assumes about unit variance. "
                          f"`magi cache-latents ... --write-vae-options CONFIG` writes the normalization that "
                          f"fixes it into CONFIG's vae.options (then re-cache)", stacklevel=2)
    return out_dir


def same_vae(a: dict, b: dict) -> bool:
    """Whether two VAE identities describe the same VAE (same class, config, weights, normalization;
    where it was loaded from does not matter)."""
    def norm(identity):
        return json.loads(json.dumps({k: v for k, v in identity.items() if k != "source"}))

    return norm(a) == norm(b)


def _vae_name(identity: dict) -> str:
    return identity.get("spec") or f"{identity.get('class')} (weights {identity.get('weights')}, " \
                                    f"from {identity.get('source')})"


class LatentDataset(torch.utils.data.Dataset):
    """Clips of cached latents; items `latents` (T', C, h, w) float32, `label`, `interval`, `path`, and
    `caption` when the source had captions (`captions` True; `caption_embeddings()` gives the stored
    embeddings where the cache was written with a text encoder).

    Sampling follows the video dataset it was cached from (the cached seed, interval, interval_sampling
    and max_interval unless overridden): a "frames" cache draws clips at training time (any
    `num_frames`, fixed or "dynamic" interval, either rule), a "clips" cache chooses among its
    pre-sampled clips (module doc: by the uniform rule over the cached intervals, or clip `epoch mod K`).

    Args:
        root: the cache folder.
        num_frames, interval, max_interval, seed, random_start, interval_sampling: override the
            source's sampling ("frames" caches only; a "clips" cache is fixed at what was cached).
        vae: if given, its identity must equal the cache's (ValueError otherwise).
        preload: read every shard into memory at construction (otherwise shards are memory-mapped
            and read per item).
    """

    def __init__(self, root, num_frames: int | None = None, interval: int | str | None = None,
                 max_interval: int | None = None, seed: int | None = None, random_start: bool | None = None,
                 vae=None, preload: bool = False, progress: bool = True, interval_sampling: str | None = None) -> None:
        from tqdm.auto import tqdm

        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"LatentDataset: no latent cache at {self.root} (missing index.json)")
        meta = json.loads(index.read_text())
        if meta.get("format") != "magi-latent-cache" or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{index}: not a version-{FORMAT_VERSION} magi latent cache")
        self.meta, self.mode = meta, meta["mode"]
        self.classes = list(meta["classes"]) if meta.get("classes") else None  # the source's class names
        self.captions = bool(meta.get("captions"))  # items carry `caption`
        self.vae_identity = meta["vae"]
        if vae is not None and not same_vae(vae.identity(), self.vae_identity):
            raise ValueError(f"LatentDataset({self.root}): cache was encoded with {_vae_name(self.vae_identity)}, "
                             f"not with the given VAE {_vae_name(vae.identity())}")
        src = meta["source"]
        self.epoch = 0
        self.unbounded = bool(meta.get("unbounded"))
        if self.mode == "clips":
            for name, value in (("num_frames", num_frames), ("interval", interval), ("max_interval", max_interval),
                                ("seed", seed), ("random_start", random_start),
                                ("interval_sampling", interval_sampling)):
                recorded = src.get(name)
                if name == "interval_sampling" and value is not None and recorded is not None:
                    value, recorded = sampling_rule(value), sampling_rule(recorded)
                if value is not None and value != recorded:
                    raise ValueError(f"LatentDataset.{name}: a clip cache is fixed at {name}={src.get(name)!r} "
                                     f"(got {value!r}); re-cache to change it")
        self.num_frames = num_frames if num_frames is not None else src.get("num_frames")
        self.interval = interval if interval is not None else src.get("interval", 1)
        self.max_interval = max_interval if max_interval is not None else src.get("max_interval", MAX_INTERVAL)
        self.seed = seed if seed is not None else src.get("seed", 0)
        self.random_start = random_start if random_start is not None else src.get("random_start", True)
        self.interval_sampling = sampling_rule(interval_sampling or src.get("interval_sampling") or "capped",
                                               "LatentDataset.interval_sampling")
        # "uniform": the stratified clips of a uniform source; "epoch": clip epoch mod K (older caches too)
        self.clip_selection = meta.get("clip_selection") or "epoch" if self.mode == "clips" else None

        # Keep the videos that hold one clip; count the rest like VideoFolder does.
        need = self.num_frames if self.interval == "dynamic" else clip_span(self.num_frames, self.interval)
        self.records, self.too_short = [], 0
        for record in tqdm(meta["videos"], desc=f"latent cache {self.root.name}", unit="video",
                           disable=not progress or len(meta["videos"]) < 1000):
            if self.mode == "frames" and record["frames"] < need:
                self.too_short += 1
                continue
            self.records.append(record)
        self.skipped = len(meta.get("skipped", []))
        if self.mode == "frames" and self.unbounded and self.records:
            longest = clip_span(self.num_frames, self.max_interval if self.interval == "dynamic" else self.interval)
            if longest > min(r["frames"] for r in self.records):
                raise ValueError(f"LatentDataset({self.root}): clips of {self.num_frames} frames at interval "
                                 f"{self.interval!r} need {longest} cached frames; the cache holds "
                                 f"{min(r['frames'] for r in self.records)}")
        missing = [s for s in {r["shard"] for r in self.records}
                   if not (self.root / f"shard_{s:05d}.safetensors").is_file()]
        if missing:
            raise FileNotFoundError(f"LatentDataset({self.root}): missing shard file(s) "
                                    f"{', '.join(f'shard_{s:05d}.safetensors' for s in sorted(missing))}")
        self.labels = [r["label"] for r in self.records]
        self.uniform: UniformIntervals | None = None
        if self.mode == "clips" and self.clip_selection == "uniform":
            self.uniform = UniformIntervals([None] * len(self.records), self.num_frames, self.max_interval,
                                            holds=[r["intervals"] for r in self.records])
        elif self.mode == "frames" and self.interval == "dynamic" and self.interval_sampling == "interval_first":
            self.uniform = UniformIntervals([None if self.unbounded else r["frames"] for r in self.records],
                                            self.num_frames, self.max_interval)
        self._handles: dict[int, Any] = {}
        self._memory: dict[str, torch.Tensor] | None = None
        if preload:
            from safetensors.torch import load_file

            self._memory = {}
            for s in tqdm(sorted({r["shard"] for r in self.records}), desc="loading shards", unit="shard",
                          disable=not progress):
                self._memory.update(load_file(str(self.root / f"shard_{s:05d}.safetensors")))

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open files are not sent to DataLoader workers
        return state

    def _tensor(self, record: dict) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[record["key"]]
        from safetensors import safe_open

        shard = record["shard"]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.root / f"shard_{shard:05d}.safetensors"), framework="pt")
        return self._handles[shard].get_tensor(record["key"])

    def pick(self, index: int) -> tuple[int, int, int]:
        """(record, interval, start or clip) of item `index` in the current epoch: for a "frames" cache
        the same rule as the video dataset (drawn with the source's video index, so a cache samples
        exactly what its dataset samples); for a "clips" cache the cached clip's position."""
        record = self.records[index]
        if self.mode == "clips":
            if self.uniform is None:
                k = self.epoch % len(record["intervals"])
                return index, int(record["intervals"][k]), k
            video, interval, _ = self.uniform.choose(self.seed, self.epoch, index, key=record["index"])
            clips = [j for j, k in enumerate(self.records[video]["intervals"]) if k == interval]
            rng = np.random.default_rng([self.seed, self.epoch, record["index"], 8])
            return video, interval, clips[int(rng.integers(0, len(clips)))] if len(clips) > 1 else clips[0]
        if self.uniform is not None:
            return self.uniform.choose(self.seed, self.epoch, index, key=record["index"],
                                       random_start=self.random_start)
        frames = None if self.unbounded else record["frames"]
        interval, start = choose_clip(self.seed, self.epoch, record["index"], self.num_frames, frames, self.interval,
                                      self.max_interval, self.random_start, rule=self.interval_sampling)
        return index, interval, start

    def label_of(self, index: int) -> int:
        return int(self.records[index]["label"])

    def caption_of(self, index: int) -> str | None:
        """The caption of record `index` (None when the cache has no captions); nothing is read."""
        return self.records[index].get("caption")

    def caption_embeddings(self) -> tuple[str, int, dict[str, torch.Tensor]] | None:
        """(encoder name, max_length, {caption: (L, E) float32}) stored by `cache_latents` with a text
        encoder, for every distinct caption of the cache; None when none were stored."""
        text = self.meta.get("text_embeddings")
        if not text:
            return None
        from safetensors.torch import load_file

        path = self.root / text["file"]
        if not path.is_file():
            raise FileNotFoundError(f"LatentDataset({self.root}): index.json lists caption embeddings in "
                                    f"{text['file']}, which is missing")
        embeddings = load_file(str(path))["embeddings"].float()  # (K, L, E)
        expected = (len(text["captions"]), text["max_length"], text["width"])
        if tuple(embeddings.shape) != expected:
            raise ValueError(f"LatentDataset({self.root}): {text['file']} holds embeddings {tuple(embeddings.shape)}, "
                             f"index.json describes {expected}")
        return text["encoder"], int(text["max_length"]), dict(zip(text["captions"], embeddings))

    def choose(self, index: int) -> tuple[int, int]:
        """(interval, start) of item `index` ("frames" caches; in record `pick(index)[0]`)."""
        return self.pick(index)[1:]

    def interval_for(self, index: int) -> int:
        """The frame interval item `index` trains in the current epoch (nothing is read)."""
        return self.pick(index)[1]

    def interval_range(self) -> tuple[int, int] | None:
        """(lowest, highest) interval an item can have."""
        if not self.records:
            return None
        if self.mode == "clips":
            cached = [k for r in self.records for k in r["intervals"]]
            return min(cached), max(cached)
        if self.interval != "dynamic":
            return int(self.interval), int(self.interval)
        if self.uniform is not None:
            return min(self.uniform.intervals), self.uniform.top
        if self.unbounded:
            return 1, self.max_interval
        return 1, max(max_interval_for(self.num_frames, r["frames"], self.max_interval) for r in self.records)

    def interval_warnings(self) -> list[str]:
        """Why this cache cannot train the interval distribution its source was configured with (empty
        when it can); the trainer repeats these at the start of training."""
        if self.mode != "clips" or self.interval != "dynamic" or not self.records:
            return []
        cached = interval_histogram([k for r in self.records for k in r["intervals"]], self.max_interval)
        missing = [k for k in range(1, self.max_interval + 1) if not cached.get(k)]
        out = []
        if self.clip_selection == "epoch":
            out.append(f"latent cache {self.root}: {len(self.records[0]['intervals'])} pre-sampled clips per video, "
                       f"epoch e reads clip e mod K (interval_sampling={self.interval_sampling}): the first K epochs "
                       f"train what encoding on the fly would, later epochs repeat each video's cached crops and "
                       f"intervals (cached clips per interval: {' '.join(f'{k}:{n}' for k, n in cached.items())}); "
                       f"more --clips-per-video, or training from video, draws new ones")
        if missing:
            out.append(f"latent cache {self.root}: no cached clip at interval{'s' if len(missing) > 1 else ''} "
                       f"{_ranges(missing)} of the configured 1..{self.max_interval}; those intervals never train "
                       f"(more --clips-per-video, or longer videos, would cover them)")
        return out

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.records):
            raise IndexError(f"LatentDataset: index {index} out of range 0..{len(self.records) - 1}")
        video, interval, where = self.pick(index)
        record = self.records[video]
        latents = self._tensor(record)
        if self.mode == "frames":
            clip = latents[where:where + clip_span(self.num_frames, interval):interval]  # (T, C, h, w)
        else:
            clip = latents[where]  # (T', C, h, w)
        item = {"latents": clip.float(), "label": record["label"], "interval": int(interval), "path": record["path"]}
        if "caption" in record:
            item["caption"] = record["caption"]
        return item

    def __repr__(self) -> str:
        return (f"LatentDataset({str(self.root)!r}, mode={self.mode}, videos={len(self)}, "
                f"num_frames={self.num_frames}, interval={self.interval!r})")


# --------------------------------------------------------------------------------------------------
# Command line: magi cache-latents


def main(argv: list[str] | None = None) -> int:
    from magi.config_io import apply_overrides, load_yaml
    from magi.data import build_dataset
    from magi.vae import load_vae

    from magi.errors import USER_ERRORS, ArgumentParser, fail

    parser = ArgumentParser(
        prog="magi cache-latents",
        description="Encode a dataset once with a VAE into a sharded safetensors latent cache.")
    parser.add_argument("--config", help="YAML file with a `data:` mapping (and optionally `vae:`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. data.size=64 (repeatable)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="data option without a config file, e.g. --data kind=moving-digits (repeatable)")
    parser.add_argument("--vae", help="VAE spec: pixels[:F[:gray]], a local folder or a hub id")
    parser.add_argument("--vae-subfolder", help="subfolder of the VAE repository (e.g. vae)")
    parser.add_argument("--out", required=True, help="output folder (must not hold a cache)")
    parser.add_argument("--clips-per-video", type=int, default=4, help="pre-sampled clips per video (3D VAEs)")
    parser.add_argument("--shard-size", type=int, default=256, help="videos per shard")
    parser.add_argument("--dtype", default="float32", choices=list(_DTYPES), help="stored latent dtype")
    parser.add_argument("--vae-dtype", default="float32", choices=list(_DTYPES), help="VAE compute dtype")
    parser.add_argument("--device", default="cpu", help="device to encode on (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding videos")
    parser.add_argument("--text-encoder", metavar="NAME_OR_DIR",
                        help="also store the embeddings of every distinct caption, computed once by this "
                             "transformers encoder (hub id or folder; default: the config's text_encoder.name)")
    parser.add_argument("--text-max-length", type=int, metavar="L",
                        help="caption tokens (default: the config's text_encoder.max_length, else 120); "
                             "the run must use the same encoder and L for the trainer to use them")
    parser.add_argument("--write-vae-options", metavar="CONFIG",
                        help="write the measured per-channel latents_mean/latents_std (composed with the VAE's "
                             "normalization, so re-encoding gives mean 0, std 1) into CONFIG's vae.options "
                             "(YAML; comments are not kept); then re-cache with that config")
    args = parser.parse_args(argv)

    try:
        config = load_yaml(args.config, args.set) if args.config else apply_overrides({}, args.set)
        data = dict(config.get("data") or {})
        data = apply_overrides({"data": data}, [f"data.{d}" for d in args.data])["data"]
        if "kind" not in data:
            raise ValueError("--data: no data kind; give --config with a data: mapping or --data kind=...")
        vae_spec = args.vae or config.get("vae")
        if isinstance(vae_spec, dict):  # a run config's `vae: {spec: ..., options: ...}`
            vae_spec = vae_spec.get("spec")
        if not vae_spec:
            raise ValueError("--vae: no VAE; give --vae or a `vae:` key in the config")
        kind = data.pop("kind")
        if kind == "latents":
            raise ValueError("--data: kind=latents is already a latent cache")
        if (Path(args.out) / "index.json").is_file():
            raise FileExistsError(f"--out: {args.out} already holds a latent cache (index.json); use a new folder")
        for flag, value in (("--clips-per-video", args.clips_per_video), ("--shard-size", args.shard_size)):
            if value < 1:
                raise ValueError(f"{flag}: expected a positive integer, got {value}")
        source = build_dataset(kind, **data)
        if len(source) == 0:
            raise ValueError(f"--data: no usable videos: "
                             f"{source.describe_usable() if hasattr(source, 'describe_usable') else 'empty'}")
        text_config = dict(config.get("text_encoder") or {})
        text_name = args.text_encoder or text_config.get("name")
        text_max_length = args.text_max_length or text_config.get("max_length") or 120
        if args.text_max_length is not None and args.text_max_length < 1:
            raise ValueError(f"--text-max-length: expected a positive integer, got {args.text_max_length}")
        if args.text_max_length is not None and not text_name:
            raise ValueError("--text-max-length: given without a text encoder (--text-encoder)")
        if text_name and not _has_captions(source):
            raise ValueError(f"--text-encoder: the data ({kind}) has no captions to embed")
        vae = load_vae(vae_spec, what="--vae", subfolder=args.vae_subfolder, dtype=_DTYPES[args.vae_dtype], device=args.device)
        text_encoder = None
        if text_name:
            from magi.text import load_text_encoder

            text_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(text_config.get("dtype", "auto"))
            text_encoder = load_text_encoder(text_name, int(text_max_length), device=args.device, dtype=text_dtype)
        out = cache_latents(source, vae, args.out, clips_per_video=args.clips_per_video, shard_size=args.shard_size,
                            dtype=args.dtype, num_workers=args.workers, device=args.device, text_encoder=text_encoder)
        if args.write_vae_options:
            from magi.latent_stats import write_vae_options

            stats = LatentStats()
            stats.update_from_record(json.loads((out / "index.json").read_text())["latent_stats"])
            options = stats.vae_options(vae)
            write_vae_options(args.write_vae_options, options)
            print(f"wrote vae.options latents_mean / latents_std to {args.write_vae_options}")
    except USER_ERRORS as e:
        return fail("magi cache-latents", e)
    meta = json.loads((out / "index.json").read_text())
    text = meta.get("text_embeddings")
    print(f"cached {len(meta['videos'])} videos ({meta['mode']}, latents {meta['latent_shape']} for the first) "
          f"in {meta['num_shards']} shard(s) at {out}; skipped {len(meta['skipped'])}"
          + (f"; captions: {len(text['captions'])} distinct, embedded by {text['encoder']}" if text
             else "; with captions" if meta.get("captions") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
