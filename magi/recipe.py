"""Pieces of the training recipe (docs/design.md §1, §5): the per-micro-batch seed, the lr schedule, AdamW's
parameter groups (decay only on matrices), the global batch sampler that makes the data order a function of
(seed, epoch) whatever the world size, the collate function, and the builders of a run's dataset, VAE and
text encoder from its config. `magi.trainer.Trainer` puts them together.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from magi.config import RunConfig
from magi.data.clips import epoch_interval_histogram, trained_interval_range


def step_seed(seed: int, step: int, micro_index: int) -> int:
    """A well-mixed 63-bit seed for one micro-batch, independent of world size and resumption."""
    return int(np.random.SeedSequence([seed, step, micro_index]).generate_state(2, np.uint64)[0] >> 1)


class LRSchedule:
    """lr factor at a step: linear warm-up to 1 over `warmup` steps, then constant or cosine decay to
    `min_ratio` at `total` steps. `decay` > 0 (constant only) ends with a linear decay to `min_ratio`
    over the last `decay` steps (warmup-stable-decay). A plain callable object, so LambdaLR's
    state_dict stays plain data."""

    def __init__(self, warmup: int, total: int, kind: str = "constant", min_ratio: float = 0.0,
                 decay: int = 0):
        self.warmup, self.total, self.kind, self.min_ratio, self.decay = warmup, total, kind, min_ratio, decay

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            start = self.total - self.decay
            if self.decay <= 0 or step < start:
                return 1.0
            return 1.0 - (1.0 - self.min_ratio) * min(1.0, (step - start + 1) / self.decay)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; no decay on what `model.no_weight_decay()` names
    (norms, biases, embeddings, position tables) nor on any 0/1-d tensor."""
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name in no_decay_names or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's micro-batches of one epoch, from global batch `start` on.

    Epoch `e` is a permutation of the dataset drawn from (seed, e); global batch `s` is its slice
    [s*G, (s+1)*G) (the incomplete tail is dropped), split into `world * accum` micro-batches of size
    `micro`; rank r takes micro-batches r*accum .. r*accum+accum-1 of every global batch. The order is
    a function of (seed, epoch) only, so the position to resume from is just the step.
    """

    def __init__(self, num_items: int, global_batch: int, micro: int, accum: int, rank: int,
                 seed: int, epoch: int, start: int = 0):
        self.num_items, self.global_batch, self.micro, self.accum = num_items, global_batch, micro, accum
        self.rank, self.seed, self.epoch, self.start = rank, seed, epoch, start
        self.batches_per_epoch = num_items // global_batch

    def permutation(self) -> list[int]:
        """The epoch's order of the items, from (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_items, generator=g).tolist()

    def epoch_items(self) -> list[int]:
        """Every item the epoch trains, over all ranks (the incomplete last global batch left out)."""
        return self.permutation()[:self.batches_per_epoch * self.global_batch]

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.permutation()
        for s in range(self.start, self.batches_per_epoch):
            batch = perm[s * self.global_batch:(s + 1) * self.global_batch]
            for i in range(self.accum):
                j = self.rank * self.accum + i  # global micro-batch index
                yield batch[j * self.micro:(j + 1) * self.micro]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start) * self.accum


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack `video` / `latents` / `actions`, `label` and `interval` of dataset items; keep paths and
    captions as lists."""
    out: dict[str, Any] = {}
    for key in ("video", "latents", "actions"):
        if key in items[0]:
            out[key] = torch.stack([it[key] for it in items])  # (B, T, C, H, W) or actions (B, T)
    for key in ("label", "interval"):
        if key in items[0] and items[0][key] is not None:
            out[key] = torch.as_tensor([int(it[key]) for it in items], dtype=torch.long)  # (B,)
    out["path"] = [str(it.get("path", "")) for it in items]
    if "caption" in items[0]:
        out["caption"] = [str(it["caption"]) for it in items]
    return out


def build_text_encoder(run: RunConfig, device: torch.device):
    """The run's frozen text encoder and the run with `model.text_dim` / `text_len` set from it (where
    the model leaves them 0); (None, run) for a run without text."""
    tc, mc = run.text_encoder, run.model
    if not tc.name:
        return None, run
    from magi.text import TextEncoder

    dtype = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}[tc.dtype]
    encoder = TextEncoder.from_pretrained(tc.name, max_length=tc.max_length, device=device, dtype=dtype)
    if mc.text_dim and mc.text_dim != encoder.width:
        raise ValueError(f"model.text_dim={mc.text_dim} but the text encoder {tc.name!r} is {encoder.width} wide")
    model = mc.replace(text_dim=encoder.width, text_len=tc.max_length)
    model.validate()
    return encoder, replace(run, model=model)


def preload_caption_embeddings(encoder, dataset: Dataset) -> int:
    """Fill the text encoder's memo with the caption embeddings a latent cache stored
    (`LatentDataset.caption_embeddings`) when they come from the same encoder and max_length, so training
    never runs the encoder on its captions; others are ignored with a warning. Returns how many were used."""
    stored = dataset.caption_embeddings() if encoder is not None and hasattr(dataset, "caption_embeddings") else None
    if stored is None:
        return 0
    name, max_length, embeddings = stored
    if not encoder.same_encoder(name, max_length):
        warnings.warn(f"the latent cache's caption embeddings come from text encoder {name!r} (max_length "
                      f"{max_length}), not this run's {encoder.name!r} (max_length {encoder.max_length}); "
                      f"ignoring them: captions are encoded by {encoder.name!r} in training", stacklevel=2)
        return 0
    encoder.remember(list(embeddings), torch.stack(list(embeddings.values())) if embeddings
                     else torch.zeros(0, encoder.max_length, encoder.width))
    return len(embeddings)


def record_trained_intervals(run: RunConfig, dataset: Dataset):
    """The model config with the data's interval range recorded (`trained_intervals`) and
    `default_interval` set to the trained interval when it is fixed (kept when it lies in a trained
    range, else the range's lowest). Refuses data that trains intervals beyond `model.max_interval`."""
    mc = run.model
    trained = trained_interval_range(dataset)
    if trained is None:
        return mc
    lo, hi = trained
    if hi > mc.max_interval:
        raise ValueError(f"the data trains frame intervals up to {hi} but model.max_interval={mc.max_interval}; "
                         f"raise model.max_interval or lower data.options.max_interval")
    default = mc.default_interval if lo <= mc.default_interval <= hi else lo
    counts = epoch_interval_histogram(dataset, 0, list(range(len(dataset))))
    shares = None
    if counts:  # how often each interval is seen, not only the range (sampling warns on rare ones)
        total = sum(counts.values())
        shares = tuple(round(counts.get(k, 0) / total, 6) for k in range(1, max(counts) + 1))
        shares = tuple(v / sum(shares) for v in shares)
    return mc.replace(trained_intervals=(lo, hi), default_interval=default, trained_interval_shares=shares)


def describe_data(dataset: Dataset) -> str:
    """Why a dataset holds the clips it does (`describe_usable()` of a folder), else its size."""
    if hasattr(dataset, "describe_usable"):
        return dataset.describe_usable()
    return f"{len(dataset)} clips"


def num_data_classes(dataset: Dataset) -> int | None:
    """Classes the data's labels span: its class list, its `num_classes`, or 1 + the largest label of a
    folder's videos (labels from a list file); None when the dataset cannot say without decoding."""
    classes = getattr(dataset, "classes", None)
    records = getattr(dataset, "records", None)
    top = max((int(r.label) for r in records), default=-1) + 1 if records and hasattr(records[0], "label") else 0
    if classes:
        return max(len(classes), top)
    found = getattr(dataset, "num_classes", None)
    return int(found) if found else (top or None)


def record_class_names(run: RunConfig, dataset: Dataset):
    """The model config with the data's class names recorded (`class_names`), for a class-conditional
    model on data that names its classes (a folder's sub-folders). Refuses a config whose
    `model.class_names` disagree with the data's (the labels would mean other classes)."""
    mc = run.model
    names = getattr(dataset, "classes", None)
    if not mc.num_classes or not names:
        return mc
    names = tuple(str(n) for n in names)
    if mc.class_names is not None and tuple(mc.class_names) != names:
        raise ValueError(f"model.class_names: the config lists {list(mc.class_names)} but the data's classes "
                         f"are {list(names)}; remove model.class_names (it is recorded from the data) or "
                         f"train on the data it names")
    if len(names) > mc.num_classes:
        return mc  # _check_latents refuses it, naming model.num_classes
    return mc.replace(class_names=names)


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc `malloc_trim`; a no-op elsewhere).

    The masked-token count changes every step, so CPU training allocates tensors of ever-new sizes and
    glibc's heap fragments: measured on the demo run, RSS grew ~1 MB per step to 3 GB by step 6,600 and
    `malloc_trim(0)` brought it back to 0.65 GB. Called at every log step.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        pass


def build_dataset(kind: str, options: dict[str, Any], where: str = "data.options") -> Dataset:
    """`magi.data.build_dataset(kind, **options)` with errors that name the config keys."""
    from magi import data as data_mod

    try:
        return data_mod.build_dataset(kind, **options)
    except TypeError as e:
        raise ValueError(f"{where}: {e} (data.kind={kind!r})") from e
    except ValueError as e:
        raise ValueError(f"data.kind={kind!r}, {where}: {e}") from e


def build_vae(spec: str, options: dict[str, Any]):
    from magi.vae import load_vae

    try:
        return load_vae(spec, what="vae.spec", **options)
    except TypeError as e:
        raise ValueError(f"vae.options: {e} (vae.spec={spec!r})") from e
