"""Configuration: `MagiConfig` (the model) with named presets, and the run's config dataclasses.

Configs are plain dataclasses built with `magi.config_io.from_dict`, which rejects unknown keys and wrong
types with the key's name, so a typo in a YAML file fails before anything is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from magi.config_io import apply_overrides, from_dict, load_yaml, parse_override, to_dict

# --------------------------------------------------------------------------------------------------
# The model config


@dataclass
class MagiConfig:
    """Everything that defines a MAGI model; saved with every checkpoint and rebuilds it on load."""

    # latent input: (B, T, C, h, w)
    latent_channels: int = 4
    latent_size: Union[int, tuple[int, int]] = 8
    num_frames: int = 4  # latent frames per training clip (T_train; temporal table size)
    patch_size: int = 2
    # backbone
    width: int = 256
    depth: int = 4  # spatial-temporal blocks; each = one spatial + one temporal layer
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # diffusion head (MAR)
    head_width: int = 256
    head_depth: int = 3
    diffusion_train_steps: int = 1000
    noise_schedule: Literal["cosine", "linear"] = "cosine"
    diffusion_batch_mul: int = 4
    # conditioning
    num_classes: int = 0  # 0 = unconditional; the null class is row `num_classes`
    class_dropout: float = 0.1
    # Names of classes 0..len-1 (a folder dataset's class sub-folders), recorded by the trainer in every
    # checkpoint so `magi sample --classes NAME` works without the data; None = not recorded.
    class_names: Optional[tuple[str, ...]] = None
    # Frame intervals. The interval embedding (sinusoidal -> MLP) takes any integer; these fields say
    # which ones mean something. `max_interval`: the largest interval the model may be trained on or
    # conditioned on (training refuses data drawing beyond it). `trained_intervals`: [lowest, highest]
    # interval of the training data ([3, 3] for a fixed interval 3), recorded by the trainer in every
    # checkpoint; sampling refuses intervals outside it unless told otherwise; None = not recorded
    # (checkpoints written before it existed). `default_interval`: what `generate` conditions on when
    # given none; the trainer sets it to the trained interval when that is fixed.
    # `trained_interval_shares`: the share of the first epoch's training clips at interval k, for
    # k = 1..highest trained (a range says nothing about how often each interval was seen; sampling warns
    # on an interval below 1%); None = not recorded.
    max_interval: int = 25
    default_interval: int = 1
    trained_intervals: Optional[tuple[int, int]] = None
    trained_interval_shares: Optional[tuple[float, ...]] = None
    # actions (world models, docs/design.md §8): frame t is conditioned on the action that led into it;
    # 0 = no action conditioning. Row `num_actions` of the action table is the null action.
    num_actions: int = 0
    action_dropout: float = 0.1  # training: per (sample, frame) probability of the null action
    # noised context (GameNGen's fix for drift in long rollouts; CTF only): in training the clean copies
    # of a clip's frames get Gaussian noise of std sigma = context_noise * b / (buckets - 1), b drawn
    # uniformly from 0..buckets-1 per sample, and the embedding of b is added to those clean frames; at
    # inference the context is committed with b = 0 (clean). 0 = off (no level table: checkpoints without
    # it load unchanged).
    context_noise: float = 0.0
    context_noise_buckets: int = 10
    # change-weighted loss (world models): a masked token whose value moved from the previous frame's
    # (mean |difference| over its values above `change_threshold`, in the unit-scale latent space) weighs
    # 1 + change_weight in the loss, the others 1. Most tokens of a game frame are static background, so
    # an unweighted loss spends most of its signal there; the sprites that the actions move are the few
    # tokens that change. The tokenizer's loss weighs its changing pixels the same way. 0 = off.
    change_weight: float = 0.0
    change_threshold: float = 0.1
    # weigh only the changes in the first `change_rows` rows of the token grid (0 = every row): Boxing's
    # hud layouts draw the score strip in the top token row, so `change_rows: 1` spends the weight on the
    # digits a landed punch changes rather than on the boxers.
    change_rows: int = 0
    # text (docs/design.md §9): caption token embeddings (B, text_len, text_dim) from a frozen text encoder
    # (`magi.text`), projected Linear + LayerNorm to the width. 0 = no text. Captions are padded or
    # truncated to `text_len` tokens by the encoder and every one of them is attended (no padding mask:
    # the encoder's outputs at pad positions are part of the caption's embedding, as fixed-length T5
    # embeddings are used by PixArt and Open-Sora). How text enters the network (`text_mode`):
    # "prefix": the caption's tokens open the temporal (frame-causal) stream, every frame attends to them
    #   and they attend only to themselves; the KV cache holds them once (NOVA);
    # "cross" (the default, measured best on captioned digits at equal CPU, docs/text.md): a cross-attention
    #   layer to the caption after each block's temporal layer (MAGI-1, Open-Sora);
    # "pooled": the mean caption token added to every video token, like the class (the cheap baseline).
    # In training the whole caption is replaced by a learned null caption with `text_dropout` (guidance).
    text_dim: int = 0
    text_len: int = 0
    text_mode: Literal["prefix", "cross", "pooled"] = "cross"
    text_dropout: float = 0.1
    # a learned position table (text_len, D) added to the caption states: a trained T5 carries word order in
    # its states, a small frozen encoder at its initialisation hardly does ("left then right" and "right then
    # left" are the same bytes), and cross-attention and pooling are blind to order without it (measured on
    # captioned digits: docs/text.md). Off = no table, so checkpoints without it load unchanged.
    text_positions: bool = False
    # masking (MAR): ratio ~ truncnorm on [mask_ratio_min, 1] centred at 1 with this std
    mask_ratio_min: float = 0.7
    mask_ratio_std: float = 0.25
    # method and kernel
    teacher_forcing: Literal["ctf", "mtf"] = "ctf"
    attention: Literal["flex", "sdpa"] = "flex"
    compile_flex: bool = True  # torch.compile the FlexAttention kernel where the platform allows

    def __post_init__(self) -> None:
        if isinstance(self.latent_size, list):
            self.latent_size = tuple(self.latent_size)
        if isinstance(self.trained_intervals, list):
            self.trained_intervals = tuple(self.trained_intervals)
        if isinstance(self.trained_interval_shares, list):
            self.trained_interval_shares = tuple(float(s) for s in self.trained_interval_shares)
        if isinstance(self.class_names, list):
            self.class_names = tuple(self.class_names)
        self.validate()

    # ---- derived quantities
    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid (h, w)."""
        s = self.latent_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.grid
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.width * self.mlp_ratio))

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot describe a working model."""
        positive = ["latent_channels", "num_frames", "patch_size", "width", "depth", "num_heads",
                    "head_width", "head_depth", "diffusion_train_steps", "diffusion_batch_mul",
                    "max_interval", "default_interval"]
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"MagiConfig.{name}: expected a positive integer, got {v!r}")
        if self.default_interval > self.max_interval:
            raise ValueError(f"MagiConfig.default_interval: {self.default_interval} exceeds max_interval "
                             f"{self.max_interval}")
        if self.trained_intervals is not None:
            t = self.trained_intervals
            if (len(t) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in t)
                    or not 1 <= t[0] <= t[1] <= self.max_interval):
                raise ValueError(f"MagiConfig.trained_intervals: expected [lowest, highest] with "
                                 f"1 <= lowest <= highest <= max_interval ({self.max_interval}), got {list(t)}")
            if not t[0] <= self.default_interval <= t[1]:
                raise ValueError(f"MagiConfig.default_interval: {self.default_interval} is outside the trained "
                                 f"intervals {t[0]}..{t[1]}")
        if self.trained_interval_shares is not None:
            s = self.trained_interval_shares
            if (not 1 <= len(s) <= self.max_interval or any(not 0 <= v <= 1 for v in s)
                    or abs(sum(s) - 1) > 1e-3):
                raise ValueError(f"MagiConfig.trained_interval_shares: expected the shares of intervals 1..k "
                                 f"(k <= max_interval {self.max_interval}), each in [0, 1], summing to 1; "
                                 f"got {list(s)}")
        h, w = self.grid
        if h <= 0 or w <= 0:
            raise ValueError(f"MagiConfig.latent_size: expected positive sizes, got {self.latent_size!r}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"MagiConfig.patch_size: {self.patch_size} does not divide the latent grid {h}x{w}")
        if self.width % self.num_heads:
            raise ValueError(
                f"MagiConfig.num_heads: {self.num_heads} does not divide width {self.width}")
        if (self.width // self.num_heads) % 2:
            raise ValueError(f"MagiConfig.num_heads: head dim {self.width // self.num_heads} must be even")
        if self.mlp_ratio <= 0:
            raise ValueError(f"MagiConfig.mlp_ratio: expected > 0, got {self.mlp_ratio}")
        if self.num_classes < 0:
            raise ValueError(f"MagiConfig.num_classes: expected >= 0, got {self.num_classes}")
        if self.class_names is not None:
            names = self.class_names
            if any(not isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ValueError(f"MagiConfig.class_names: expected distinct strings, got {list(names)}")
            if len(names) > self.num_classes:
                raise ValueError(f"MagiConfig.class_names: {len(names)} names but num_classes="
                                 f"{self.num_classes}; the model needs a class per name")
        if isinstance(self.num_actions, bool) or not isinstance(self.num_actions, int) or self.num_actions < 0:
            raise ValueError(f"MagiConfig.num_actions: expected an integer >= 0 (0 = off), got {self.num_actions!r}")
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"MagiConfig.action_dropout: expected in [0, 1), got {self.action_dropout}")
        if not 0.0 <= self.context_noise < float("inf"):
            raise ValueError(f"MagiConfig.context_noise: expected a finite number >= 0, got {self.context_noise}")
        if self.context_noise > 0 and self.teacher_forcing != "ctf":
            raise ValueError("MagiConfig.context_noise: noised context needs teacher_forcing='ctf' (MTF has "
                             "no clean frames to noise)")
        if isinstance(self.context_noise_buckets, bool) or not isinstance(self.context_noise_buckets, int) \
                or self.context_noise_buckets < 2:
            raise ValueError(f"MagiConfig.context_noise_buckets: expected an integer >= 2, got "
                             f"{self.context_noise_buckets!r}")
        if not 0.0 <= self.change_weight < float("inf"):
            raise ValueError(f"MagiConfig.change_weight: expected a finite number >= 0, got {self.change_weight}")
        if isinstance(self.change_rows, bool) or not isinstance(self.change_rows, int) \
                or not 0 <= self.change_rows <= self.grid[0] // self.patch_size:
            raise ValueError(f"MagiConfig.change_rows: expected an integer from 0 (every row) to the token grid's "
                             f"{self.grid[0] // self.patch_size} rows, got {self.change_rows!r}")
        if not 0.0 <= self.change_threshold < float("inf"):
            raise ValueError(f"MagiConfig.change_threshold: expected a finite number >= 0, got "
                             f"{self.change_threshold}")
        for name in ("text_dim", "text_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"MagiConfig.{name}: expected an integer >= 0 (0 = no text), got {v!r}")
        if (self.text_dim == 0) != (self.text_len == 0):
            raise ValueError(f"MagiConfig.text_len: a text model needs both text_dim and text_len > 0 (the "
                             f"encoder's width and the caption length), got text_dim={self.text_dim}, "
                             f"text_len={self.text_len}")
        if self.text_mode not in ("prefix", "cross", "pooled"):
            raise ValueError(f"MagiConfig.text_mode: expected 'prefix', 'cross' or 'pooled', got {self.text_mode!r}")
        if not isinstance(self.text_positions, bool):
            raise ValueError(f"MagiConfig.text_positions: expected true or false, got {self.text_positions!r}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ValueError(f"MagiConfig.text_dropout: expected in [0, 1), got {self.text_dropout}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"MagiConfig.class_dropout: expected in [0, 1), got {self.class_dropout}")
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"MagiConfig.mask_ratio_min: expected in (0, 1], got {self.mask_ratio_min}")
        if self.mask_ratio_std <= 0:
            raise ValueError(f"MagiConfig.mask_ratio_std: expected > 0, got {self.mask_ratio_std}")
        if self.teacher_forcing not in ("ctf", "mtf"):
            raise ValueError(
                f"MagiConfig.teacher_forcing: expected 'ctf' or 'mtf', got {self.teacher_forcing!r}")
        if self.attention not in ("flex", "sdpa"):
            raise ValueError(f"MagiConfig.attention: expected 'flex' or 'sdpa', got {self.attention!r}")
        if self.noise_schedule not in ("cosine", "linear"):
            raise ValueError(
                f"MagiConfig.noise_schedule: expected 'cosine' or 'linear', got {self.noise_schedule!r}")

    # ---- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MagiConfig":
        """A named configuration (`magi-850m`, `magi-b`, `tiny`, `test`) with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"MagiConfig.preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
        data = dict(PRESETS[name])
        data.update(overrides)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "MagiConfig":
        """Build from a mapping; a `preset` key starts from that preset. Unknown keys are rejected."""
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            return cls.preset(preset, **data)
        return from_dict(cls, data, prefix="model.")

    def to_dict(self) -> dict:
        return to_dict(self)

    def replace(self, **changes: Any) -> "MagiConfig":
        return dataclasses.replace(self, **changes)

    def diff(self, other: "MagiConfig", runtime: bool = False) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (self's, other's)}. The kernel choices
        (`RUNTIME_FIELDS`), the records of the training data (`RECORD_FIELDS`: intervals, class
        names) and the loss's token weights (`LOSS_FIELDS`) do not change the weights' meaning and are
        left out unless `runtime`; so are the text fields when neither config has text."""
        a, b = self.to_dict(), other.to_dict()
        free = RUNTIME_FIELDS + RECORD_FIELDS + LOSS_FIELDS
        if not a["text_dim"] and not b.get("text_dim"):  # no text: how text would enter means nothing
            free += ("text_len", "text_mode", "text_dropout", "text_positions")
        return {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k) and (runtime or k not in free)}

    def describe_trained_intervals(self) -> str:
        """"interval 3" / "intervals 1..25" / "intervals not recorded"."""
        t = self.trained_intervals
        if t is None:
            return "intervals not recorded"
        return f"interval {t[0]}" if t[0] == t[1] else f"intervals {t[0]}..{t[1]}"


# Fields that choose how the model computes, not what it computes: free to differ from a checkpoint's.
RUNTIME_FIELDS = ("attention", "compile_flex")
# What the training data was (set by the trainer): fine-tuning from a checkpoint may change it.
INTERVAL_RECORD_FIELDS = ("trained_intervals", "trained_interval_shares", "default_interval")
# Everything the trainer records about its data: fine-tuning on other data may change it.
RECORD_FIELDS = INTERVAL_RECORD_FIELDS + ("class_names",)
# What a model is conditioned on: `Magi.load_reconditioned` starts a model from one that differs only here.
CONDITIONING_FIELDS = ("num_classes", "class_dropout", "class_names", "num_actions", "action_dropout",
                       "text_dim", "text_len", "text_mode", "text_dropout", "text_positions")
# How the training loss weighs tokens: a fine-tune may weigh them otherwise than its checkpoint did.
LOSS_FIELDS = ("change_weight", "change_threshold", "change_rows")

PRESETS: dict[str, dict[str, Any]] = {
    # docs/design.md §1 exactly: 20 blocks of width 1280 / MLP 5120 / 16 heads, MAR head 3 x 1024, patch 2.
    # Latents: Cosmos 4x8x8 video tokenizer (16 channels) at 128 px, 17 frames -> 5 latent frames.
    "magi-850m": dict(latent_channels=16, latent_size=16, num_frames=5, patch_size=2,
                      width=1280, depth=20, num_heads=16, mlp_ratio=4.0,
                      head_width=1024, head_depth=3, num_classes=101),
    # A single-GPU research size (~190M): 12 blocks of width 768.
    "magi-b": dict(latent_channels=16, latent_size=16, num_frames=5, patch_size=2,
                   width=768, depth=12, num_heads=12, mlp_ratio=4.0,
                   head_width=1024, head_depth=3, num_classes=101),
    # CPU demo size (~2M): 32x32 moving digits through the pixels VAE (space-to-depth 4 -> 16ch 8x8).
    # Decision: the linear noise schedule for the small CPU presets. With MAR's cosine schedule the
    # first respaced sampling step multiplies the head's eps error at t=999 by ~170 (alpha_bar there
    # is ~1e-8), which a briefly trained small head cannot survive (tests/test_diffusion.py measures
    # it); the paper presets keep cosine. SDPA: torch has no FlexAttention backward on the CPU.
    "tiny": dict(latent_channels=16, latent_size=8, num_frames=6, patch_size=2,
                 width=128, depth=4, num_heads=4, mlp_ratio=4.0,
                 head_width=128, head_depth=3, num_classes=10,
                 noise_schedule="linear", attention="sdpa"),
    # Smallest model that still runs every code path (classes, head depth > 1, several frames).
    "test": dict(latent_channels=4, latent_size=4, num_frames=3, patch_size=2,
                 width=32, depth=1, num_heads=2, mlp_ratio=2.0,
                 head_width=32, head_depth=2, num_classes=3, diffusion_batch_mul=2,
                 noise_schedule="linear", compile_flex=False),
}




# --------------------------------------------------------------------------------------------------
# The run config: model + data + VAE + training recipe, one YAML file per experiment


@dataclass
class DataConfig:
    """Which dataset to train on: `magi.data.build_dataset(kind, **options)`.

    Items carry either `video` (T, 3, H, W) in [-1, 1], encoded by the VAE on the fly, or `latents`
    (T, C, h, w) from a latent cache (kind "latents"), plus `label` and `interval`.
    """

    kind: str = "moving-digits"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Options overriding `options` for the held-out clips that periodic samples continue (e.g. another
    # seed or split); empty = the first clips of the training set.
    sample_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_workers: int = 0

    def validate(self) -> None:
        if not self.kind:
            raise ValueError("data.kind: expected a dataset kind, got an empty string")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers: expected >= 0, got {self.num_workers}")


@dataclass
class VAEConfig:
    """The latent space: `magi.vae.load_vae(spec, **options)` ("pixels:4", a local path, a hub id)."""

    spec: str = "pixels:4"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if not self.spec:
            raise ValueError("vae.spec: expected a VAE spec such as 'pixels:4', got an empty string")


@dataclass
class SampleConfig:
    """Periodic samples from the EMA model: continue held-out clips from `context_frames` frames."""

    num_videos: int = 4  # 0 = no samples
    context_frames: int = 1  # latent frames given; the rest of the model's num_frames are generated
    mask_steps: int = 64
    diffusion_steps: int = 100
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    cfg: float = 1.0
    temperature: float = 1.0
    fps: int = 4
    seed: int = 0

    def validate(self) -> None:
        if self.num_videos < 0:
            raise ValueError(f"train.sample.num_videos: expected >= 0 (0 = off), got {self.num_videos}")
        for name in ("mask_steps", "diffusion_steps", "fps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.sample.{name}: expected > 0, got {getattr(self, name)}")
        if self.context_frames < 0:
            raise ValueError(f"train.sample.context_frames: expected >= 0, got {self.context_frames}")
        if self.cfg < 0 or self.temperature <= 0:
            raise ValueError("train.sample.cfg must be >= 0 and train.sample.temperature > 0, got "
                             f"{self.cfg} and {self.temperature}")


@dataclass
class TextEncoderConfig:
    """The frozen text encoder of a text model (`magi.text.TextEncoder`): a transformers encoder by hub
    id or local folder (`google/t5-v1_1-xxl`, a CLIP text model, any encoder model), captions padded or
    truncated to `max_length` tokens. Empty `name` = no text. The trainer sets `model.text_dim` to the
    encoder's width and `model.text_len` to `max_length` where the model leaves them 0."""

    name: str = ""
    max_length: int = 120
    dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on the CPU

    def validate(self) -> None:
        if self.max_length <= 0:
            raise ValueError(f"text_encoder.max_length: expected > 0, got {self.max_length}")


@dataclass
class TrainConfig:
    """The training recipe (docs/design.md §1): AdamW, warm-up then constant lr, bf16 autocast, EMA in fp32.

    `global_batch_size` is the number of clips per optimizer step summed over all ranks; each rank
    runs `micro_batch_size` clips per forward and accumulates gradients
    `global_batch_size / (world_size * micro_batch_size)` times.
    """

    # length: exactly one of max_steps / epochs
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    max_minutes: Optional[float] = None  # also stop (with a checkpoint) after this much wall time
    # batch
    global_batch_size: int = 128
    micro_batch_size: Optional[int] = None  # per rank and forward; None = global / world (no accumulation)
    # optimizer (AdamW; norms, biases, embeddings and position tables are not decayed)
    lr: float = 2e-4
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 10_000
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # final lr of cosine / decay as a fraction of lr
    decay_steps: int = 0  # constant only: decay linearly to min_lr_ratio over the last decay_steps (WSD)
    grad_clip: float = 3.0  # max global grad norm; 0 = off
    # numerics
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 = autocast with fp32 master weights
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)); see magi.ema.ema_decay_at
    # parallelism and device
    parallel: Literal["ddp", "fsdp"] = "ddp"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None  # torch.set_num_threads per process; None = torch's default
    compile: bool = False
    seed: int = 0
    # fine-tuning: a pretrained or checkpoint directory whose weights (EMA preferred) start a fresh run;
    # the optimizer, schedule and step start anew. A resumed run takes everything from its checkpoint.
    init_from: Optional[str] = None
    # init_from a shallower model of the same config otherwise (`Magi.load_grown`): its blocks go to evenly
    # spaced depths of this model's `model.depth`, the new blocks start as the identity
    init_grow: bool = False
    # init_from a model that differs only in its conditioning (`Magi.load_reconditioned`): e.g. a text model
    # started from a class-conditional one; the video path loads, the new conditioning starts fresh
    init_reconditioned: bool = False
    # bookkeeping
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_last: int = 3
    sample_every: int = 0  # 0 = only at the end when sample.num_videos > 0
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    max_nonfinite: int = 20  # consecutive non-finite steps before the run stops (after saving)
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)

    def validate(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("train.max_steps / train.epochs: set exactly one of them, got "
                             f"max_steps={self.max_steps!r}, epochs={self.epochs!r}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"train.max_steps: expected > 0, got {self.max_steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"train.epochs: expected > 0, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"train.max_minutes: expected > 0, got {self.max_minutes}")
        if self.global_batch_size <= 0:
            raise ValueError(f"train.global_batch_size: expected > 0, got {self.global_batch_size}")
        if self.micro_batch_size is not None and not 0 < self.micro_batch_size <= self.global_batch_size:
            raise ValueError(f"train.micro_batch_size: expected in 1..global_batch_size "
                             f"({self.global_batch_size}), got {self.micro_batch_size}")
        if self.micro_batch_size is not None and self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"train.global_batch_size: {self.global_batch_size} is not a multiple of "
                             f"train.micro_batch_size {self.micro_batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr: expected > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay: expected >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas: expected two values in [0, 1), got {list(self.betas)}")
        if self.eps <= 0:
            raise ValueError(f"train.eps: expected > 0, got {self.eps}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps: expected >= 0, got {self.warmup_steps}")
        if self.decay_steps < 0:
            raise ValueError(f"train.decay_steps: expected >= 0, got {self.decay_steps}")
        if self.decay_steps and self.lr_schedule != "constant":
            raise ValueError("train.decay_steps: only with lr_schedule: constant (cosine already decays)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio: expected in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip: expected >= 0 (0 = off), got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay: expected in [0, 1), got {self.ema_decay}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ValueError(f"train.num_threads: expected > 0, got {self.num_threads}")
        for name in ("log_every", "checkpoint_every", "keep_last", "max_nonfinite"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name}: expected > 0, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"train.sample_every: expected >= 0 (0 = at the end), got {self.sample_every}")
        if self.init_grow and not self.init_from:
            raise ValueError("train.init_grow: grows the model given by train.init_from, which is not set")
        if self.init_reconditioned and not self.init_from:
            raise ValueError("train.init_reconditioned: starts from the model given by train.init_from, which is not set")
        if self.init_reconditioned and self.init_grow:
            raise ValueError("train.init_reconditioned and train.init_grow: choose one way to start from train.init_from")
        self.sample.validate()


@dataclass
class RunConfig:
    """One experiment: `model` (a MagiConfig, `preset:` allowed), `data`, `vae` and `train`.

    Saved as `train_config.yaml` in every checkpoint, so a run is rebuilt from its checkpoint alone.
    """

    model: MagiConfig = dataclasses.field(default_factory=MagiConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    text_encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build and validate; unknown keys, wrong types and impossible values raise naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"run config: expected a mapping, got {data!r}")
        unknown = sorted(set(data) - {"model", "data", "vae", "train", "text_encoder"})
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known: data, model, text_encoder, "
                             "train, vae")
        model = data.get("model", {})
        if not isinstance(model, dict):
            raise ValueError(f"model: expected a mapping, got {model!r}")
        run = cls(
            model=MagiConfig.from_dict(model),
            data=from_dict(DataConfig, data.get("data", {}) or {}, prefix="data."),
            vae=from_dict(VAEConfig, data.get("vae", {}) or {}, prefix="vae."),
            train=from_dict(TrainConfig, data.get("train", {}) or {}, prefix="train."),
            text_encoder=from_dict(TextEncoderConfig, data.get("text_encoder", {}) or {}, prefix="text_encoder."),
        )
        run.validate()
        return run

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "RunConfig":
        """Read a YAML run config, apply dotted overrides (`train.lr=1e-4`), validate; errors name the file."""
        data = load_yaml(path, overrides)
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.vae.validate()
        self.train.validate()
        self.text_encoder.validate()
        m, t = self.model, self.text_encoder
        if m.text_dim and not t.name:
            raise ValueError(f"text_encoder.name: model.text_dim={m.text_dim} makes a text model, which needs "
                             "a text encoder (a transformers encoder's hub id or folder)")
        if t.name and m.text_len and m.text_len != t.max_length:
            raise ValueError(f"text_encoder.max_length: {t.max_length} differs from model.text_len={m.text_len} "
                             "(the caption length the model was built for)")
        if self.train.sample.context_frames >= self.model.num_frames:
            raise ValueError(f"train.sample.context_frames: {self.train.sample.context_frames} leaves "
                             f"nothing to generate with model.num_frames={self.model.num_frames}")

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


__all__ = ["MagiConfig", "PRESETS", "RunConfig", "DataConfig", "VAEConfig", "TrainConfig", "SampleConfig",
           "TextEncoderConfig",
           "from_dict", "to_dict", "load_yaml", "apply_overrides", "parse_override"]
