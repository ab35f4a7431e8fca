"""`Magi`: the model users train, sample and save.

Training (`forward`): latents are patchified into tokens; each (sample, frame) of the masked stream
gets a MAR mask ratio and random order; under CTF the sequence is `[clean 0..T-2, masked 0..T-1]`,
under MTF `[masked 0..T-1]`; the backbone gives conditions z and the diffusion head's loss is taken on
the masked tokens of the masked frames only.

Generation (`generate`, `stream`): frame after frame; inside a frame, MAR's cosine schedule reveals
tokens over `mask_steps` steps in a random order, each revealed token drawn by the diffusion head;
a finished frame is run once more as a clean frame and its keys/values join the KV cache.

Legend: B batch, T frames, N tokens per frame, D width, C latent channels, h/w latent grid,
p patch size, P = C·p² token channels.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from magi.atomic import atomic_write, atomic_write_text
from magi.config import CONDITIONING_FIELDS, MagiConfig
from magi.model.attention import TemporalMask
from magi.model.diffusion_head import DiffusionHead
from magi.model.transformer import MagiTransformer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "ema.safetensors"


def mask_ratios(shape: tuple[int, ...], low: float, std: float, device,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """MAR's mask ratios: a normal centred at 1.0 with `std`, truncated to [low, 1.0] (inverse CDF)."""
    a = 0.5 * math.erfc(-(low - 1.0) / std / math.sqrt(2.0))  # standard normal CDF at the lower bound
    u = torch.rand(shape, generator=generator, device=device)
    p = a + u * (0.5 - a)  # the upper bound 1.0 is the mean: CDF 0.5
    return (1.0 + std * torch.special.ndtri(p.clamp(1e-7, 0.5))).clamp(low, 1.0)


def random_token_mask(batch: int, frames: int, tokens: int, low: float, std: float, device,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, T, N) boolean, True = masked: per (sample, frame) ⌈N·r⌉ tokens in a random order."""
    r = mask_ratios((batch, frames), low, std, device, generator)  # (B, T)
    count = torch.ceil(tokens * r).long()  # (B, T)
    order = torch.rand(batch, frames, tokens, generator=generator, device=device).argsort(-1)
    rank = order.argsort(-1)  # rank of each token in the random order
    return rank < count[..., None]


def mask_schedule(num_tokens: int, steps: int) -> list[int]:
    """MAR's cosine schedule: tokens still masked after each of `steps` steps, ⌊N·cos(π/2·(s+1)/S)⌋,
    revealing at least one token per step while any is left and all of them at the last step."""
    remaining, out = num_tokens, []
    for s in range(steps):
        if s == steps - 1:
            n = 0
        else:
            n = max(1, min(remaining - 1, math.floor(num_tokens * math.cos(math.pi / 2 * (s + 1) / steps))))
        out.append(n)
        remaining = n
    return out


class Magi(nn.Module):
    """Masked autoregressive video generator (backbone + diffusion head)."""

    def __init__(self, config: MagiConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.backbone = MagiTransformer(config)
        self.head = DiffusionHead(config.token_dim, config.width, config.head_width, config.head_depth,
                                  config.diffusion_train_steps, config.noise_schedule,
                                  config.diffusion_batch_mul)
        self._masks: dict[tuple, TemporalMask] = {}

    # ------------------------------------------------------------------ tokens
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T, N, P) with N = (h/p)(w/p), P = C·p²."""
        B, T, C, h, w = latents.shape
        p = self.config.patch_size
        x = latents.reshape(B, T, C, h // p, p, w // p, p)
        x = x.permute(0, 1, 3, 5, 2, 4, 6)  # (B, T, h/p, w/p, C, p, p)
        return x.reshape(B, T, (h // p) * (w // p), C * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, P) -> (B, T, C, h, w)."""
        B, T = tokens.shape[:2]
        c, p = self.config, self.config.patch_size
        h, w = c.grid
        x = tokens.reshape(B, T, h // p, w // p, c.latent_channels, p, p)
        x = x.permute(0, 1, 4, 2, 5, 3, 6)  # (B, T, C, h/p, p, w/p, p)
        return x.reshape(B, T, c.latent_channels, h, w)

    def _check_latents(self, latents: torch.Tensor, name: str = "latents") -> None:
        c = self.config
        want = (c.latent_channels, *c.grid)
        if latents.dim() != 5 or tuple(latents.shape[2:]) != want:
            raise ValueError(f"{name}: expected (B, T, {want[0]}, {want[1]}, {want[2]}) "
                             f"(B, T, C, h, w), got {tuple(latents.shape)}")

    # ------------------------------------------------------------------ conditioning
    @property
    def null_class(self) -> int:
        return self.backbone.null_class

    def _labels(self, labels, batch: int, device) -> torch.Tensor:
        if labels is None:
            return torch.full((batch,), self.null_class, device=device, dtype=torch.long)
        labels = torch.as_tensor(labels, device=device, dtype=torch.long).reshape(-1)
        if labels.numel() == 1 and batch > 1:
            labels = labels.expand(batch)
        if labels.shape != (batch,):
            raise ValueError(f"labels: expected {batch} labels, got {labels.numel()}")
        if ((labels < 0) | (labels > self.null_class)).any():
            raise ValueError(f"labels: expected class indices in 0..{self.config.num_classes - 1} "
                             f"(or {self.null_class} for the null class), got {labels.tolist()}")
        return labels

    def _intervals(self, intervals, batch: int, device) -> torch.Tensor:
        if intervals is None:
            return torch.full((batch,), self.config.default_interval, device=device, dtype=torch.long)
        intervals = torch.as_tensor(intervals, device=device, dtype=torch.long).reshape(-1)
        if intervals.numel() == 1 and batch > 1:
            intervals = intervals.expand(batch)
        if intervals.shape != (batch,) or (intervals < 1).any():
            raise ValueError(f"intervals: expected {batch} positive integers, got {intervals.tolist()}")
        return intervals

    @property
    def null_action(self) -> int:
        return self.config.num_actions

    def _uses_actions(self, actions) -> bool:
        """Whether the model is action-conditioned; actions given to a model without are refused."""
        if self.config.num_actions == 0 and actions is not None:
            raise ValueError("actions: the model has no action conditioning (num_actions=0)")
        return self.config.num_actions > 0

    def _action_tensor(self, actions, batch: int, device, name: str = "actions") -> torch.Tensor:
        """Actions as longs (B, L) from (B, L) (or (L,) when B = 1), checked: indices
        0..num_actions-1, or -1 / num_actions for none (mapped to the null action)."""
        if self.config.num_actions == 0:
            raise ValueError(f"{name}: the model has no action conditioning (num_actions=0)")
        a = torch.as_tensor(actions, device=device, dtype=torch.long)
        if a.dim() == 1 and batch == 1:
            a = a[None]
        if a.dim() != 2 or a.shape[0] != batch:
            raise ValueError(f"{name}: expected ({batch}, frames) action indices, got shape {tuple(a.shape)}")
        if ((a < -1) | (a > self.null_action)).any():
            raise ValueError(f"{name}: expected action indices in 0..{self.null_action - 1} (-1 or "
                             f"{self.null_action} for none), got values {sorted(set(a.flatten().tolist()))[:8]}")
        return torch.where(a < 0, torch.full_like(a, self.null_action), a)

    def _prev_actions(self, actions, batch: int, frames: int, device, drop: bool = False):
        """The action that led into each frame, (B, T): `actions[:, t-1]`, the null action at frame 0
        (docs/design.md §8). `actions` (B, T or T-1) follows the recordings: actions[t] is taken at frame t.
        In training (`drop`) each (sample, frame) falls back to the null action with `action_dropout`.
        None when the model has no action conditioning."""
        if not self._uses_actions(actions):
            return None
        null = torch.full((batch, 1), self.null_action, device=device, dtype=torch.long)
        if actions is None:
            return null.expand(batch, frames)
        a = self._action_tensor(actions, batch, device)
        if a.shape[1] < frames - 1:
            raise ValueError(f"actions: {frames} frames need at least {frames - 1} actions, got {a.shape[1]}")
        prev = torch.cat([null, a[:, : frames - 1]], dim=1)  # (B, T)
        if drop and self.config.action_dropout > 0:
            dropped = torch.rand(prev.shape, device=device) < self.config.action_dropout
            prev = torch.where(dropped, torch.full_like(prev, self.null_action), prev)
        return prev

    def _cond(self, labels, intervals, batch: int, device, drop_labels: bool = False) -> torch.Tensor:
        """(B, D) conditioning vector; in training labels are dropped to the null class (CFG)."""
        labels = self._labels(labels, batch, device)
        if drop_labels and self.config.class_dropout > 0:
            drop = torch.rand(batch, device=device) < self.config.class_dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return self.backbone.condition(labels, self._intervals(intervals, batch, device))

    @property
    def null_text(self) -> torch.Tensor:
        """The learned null caption (text_len, text_dim), in the text encoder's embedding space."""
        if self.backbone.null_text is None:
            raise ValueError("text: the model has no text conditioning (text_dim=0)")
        return self.backbone.null_text

    def _text_states(self, text, batch: int, device, drop: bool = False) -> Optional[torch.Tensor]:
        """Caption states (B, L, D) from caption embeddings `text` (B, text_len, text_dim), the null
        caption where `text` is None; in training (`drop`) each sample's whole caption falls back to the
        null caption with `text_dropout` (guidance). None for a model without text."""
        c = self.config
        if c.text_dim == 0:
            if text is not None:
                raise ValueError("text: the model has no text conditioning (text_dim=0)")
            return None
        null = self.null_text[None].expand(batch, -1, -1)  # (B, L, E)
        if text is None:
            raw = null
        else:
            raw = torch.as_tensor(text, device=device).to(null.dtype)
            if raw.shape != (batch, c.text_len, c.text_dim):
                raise ValueError(f"text: expected caption embeddings ({batch}, {c.text_len}, {c.text_dim}) "
                                 f"(B, text_len, text_dim), got {tuple(raw.shape)}")
            if drop and c.text_dropout > 0:
                dropped = torch.rand(batch, device=device) < c.text_dropout  # (B,)
                raw = torch.where(dropped[:, None, None], null, raw)
        return self.backbone.embed_text(raw)  # (B, L, D)

    def _conditioning(self, labels, intervals, text, batch: int, device, drop: bool = False):
        """(cond (B, D), caption states for the backbone or None): the class + interval vector and the
        caption, both dropped to their null in training (`drop`). "pooled" adds the mean caption state to
        cond and leaves the backbone no text; "prefix" and "cross" hand the states (B, L, D) on."""
        cond = self._cond(labels, intervals, batch, device, drop_labels=drop)
        states = self._text_states(text, batch, device, drop=drop)
        if states is not None and self.config.text_mode == "pooled":
            return cond + states.mean(dim=1), None
        return cond, states

    # ------------------------------------------------------------------ training
    def temporal_mask(self, num_frames: int, device, prefix: int = 0) -> TemporalMask:
        """The (cached) CTF/MTF mask of a training sequence of `num_frames` frames, opened by `prefix`
        caption tokens (text_mode "prefix")."""
        key = (self.config.teacher_forcing, num_frames, torch.device(device), prefix)
        if key not in self._masks:
            self._masks[key] = TemporalMask(self.config.teacher_forcing, num_frames,
                                            self.config.tokens_per_frame, torch.device(device), prefix=prefix)
        return self._masks[key]

    def _masked_stream_conditions(self, tokens: torch.Tensor, token_mask: torch.Tensor,
                                  cond: torch.Tensor, prev_actions: Optional[torch.Tensor] = None,
                                  noise_levels: Optional[torch.Tensor] = None,
                                  text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, T, N, P), token_mask (B, T, N), cond (B, D), prev_actions (B, T) or None,
        noise_levels (B,) or None (noised context: the clean copies' noise bucket per sample; None =
        clean, bucket 0, as at inference), text (B, L, D) caption states for the backbone or None
        -> z of the masked stream (B, T, N, D). Clean and masked copies see the same caption."""
        T = tokens.shape[1]
        if T > self.config.num_frames:
            raise ValueError(f"latents: {T} frames, but the model was built for at most "
                             f"num_frames={self.config.num_frames} in training")
        prefix = text.shape[1] if text is not None and self.backbone.text_prefix else 0
        mask = self.temporal_mask(T, tokens.device, prefix)
        if prev_actions is not None:  # per frame; a slot takes its frame's (clean and masked alike)
            cond = self.backbone.frame_condition(cond, prev_actions)[:, mask.slot_frames]  # (B, S, D)
        if self.config.teacher_forcing == "ctf":
            clean = tokens[:, : T - 1]  # (B, T-1, N, P)
            if self.backbone.noise_embed is not None:
                cond = self._noised_context(cond, clean.shape[0], T, noise_levels)  # (B, 2T-1, D)
                if noise_levels is not None:
                    sigma = self.config.context_noise * noise_levels.float() / (self.config.context_noise_buckets - 1)
                    clean = clean + sigma[:, None, None, None] * torch.randn_like(clean)
            clean_mask = torch.zeros_like(token_mask[:, : T - 1])
            seq = torch.cat([clean, tokens], dim=1)  # (B, 2T-1, N, P)
            seq_mask = torch.cat([clean_mask, token_mask], dim=1)  # (B, 2T-1, N)
        else:
            seq, seq_mask = tokens, token_mask  # (B, T, N, P)
        z = self.backbone(seq, seq_mask, mask, cond, kernel=self.config.attention, text=text)  # (B, S, N, D)
        return z[:, -T:]  # the masked stream: (B, T, N, D)

    def _noised_context(self, cond: torch.Tensor, batch: int, T: int,
                        levels: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-slot conditioning (B, 2T-1, D) of a CTF sequence whose clean slots carry their noise level."""
        if cond.dim() == 2:
            cond = cond[:, None].expand(-1, 2 * T - 1, -1)  # (B, S, D)
        if levels is None:
            levels = torch.zeros(batch, dtype=torch.long, device=cond.device)
        return torch.cat([self.backbone.context_condition(cond[:, : T - 1], levels), cond[:, T - 1:]], dim=1)

    def conditions(self, latents: torch.Tensor, mask: torch.Tensor, labels=None,
                   intervals=None, actions=None, text=None) -> torch.Tensor:
        """The backbone output for every masked-stream token given an explicit token mask
        (B, T, N), True = masked, as in a training forward (no label, action or caption dropout).
        `actions` (B, T): actions[:, t] is taken at frame t and conditions frame t+1; `text` (B, L, E)
        caption embeddings of a text model (None: the null caption). -> (B, T, N, D)"""
        self._check_latents(latents)
        tokens = self.patchify(latents)
        B, T = tokens.shape[:2]
        if mask.shape != tokens.shape[:3]:
            raise ValueError(f"mask: expected shape {tuple(tokens.shape[:3])} (B, T, N), got {tuple(mask.shape)}")
        cond, states = self._conditioning(labels, intervals, text, B, latents.device)
        prev = self._prev_actions(actions, B, T, latents.device)
        return self._masked_stream_conditions(tokens, mask.bool(), cond, prev, text=states)

    def forward(self, latents: torch.Tensor, labels=None, intervals=None, actions=None, text=None) -> dict:
        """Training loss on `latents` (B, T, C, h, w); `actions` (B, T) for world models (actions[:, t]
        taken at frame t); `text` (B, text_len, text_dim) caption embeddings for a text model (None: the
        null caption). Randomness (masks, label, action and caption dropout, diffusion timesteps and
        noise) comes from the global torch RNG, so seeding makes a step reproducible."""
        self._check_latents(latents)
        c = self.config
        B, T = latents.shape[:2]
        tokens = self.patchify(latents)  # (B, T, N, P)
        token_mask = random_token_mask(B, T, c.tokens_per_frame, c.mask_ratio_min, c.mask_ratio_std,
                                       latents.device)  # (B, T, N)
        cond, states = self._conditioning(labels, intervals, text, B, latents.device, drop=self.training)
        prev = self._prev_actions(actions, B, T, latents.device, drop=self.training)  # (B, T) or None
        levels = None  # noised context: a noise bucket per sample, training only
        if self.training and self.backbone.noise_embed is not None:
            levels = torch.randint(0, c.context_noise_buckets, (B,), device=latents.device)
        z = self._masked_stream_conditions(tokens, token_mask, cond, prev, levels, states)  # (B, T, N, D)
        weight = self.change_weights(tokens)[token_mask] if c.change_weight > 0 else None  # (M,)
        loss = self.head(tokens[token_mask], z[token_mask], weight)  # (M, P), (M, D)
        return {"loss": loss, "mask_ratio": token_mask.float().mean().detach()}

    def change_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Loss weight per token (B, T, N) of `tokens` (B, T, N, P): 1 + change_weight where the token
        moved from the previous frame's by more than change_threshold (mean |difference|), else 1;
        a clip's first frame has no previous one and weighs 1. With change_rows, only tokens in the
        grid's first change_rows rows (tokens are row-major) can weigh more."""
        c = self.config
        change = (tokens[:, 1:] - tokens[:, :-1]).abs().mean(dim=-1)  # (B, T-1, N)
        changed = torch.cat([torch.zeros_like(change[:, :1]), change], dim=1) > c.change_threshold  # (B, T, N)
        if c.change_rows:
            per_row = c.grid[1] // c.patch_size
            changed &= torch.arange(tokens.shape[2], device=tokens.device) < c.change_rows * per_row  # (N,)
        return 1.0 + c.change_weight * changed.float()

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not decay: norms, biases, embeddings and position tables."""
        names = set()
        for name, p in self.named_parameters():
            if p.ndim < 2 or name.startswith(("backbone.pos_", "backbone.mask_token",
                                              "backbone.class_embed", "backbone.action_embed",
                                              "backbone.noise_embed", "backbone.null_text")):
                names.add(name)
        return names

    # ------------------------------------------------------------------ generation
    def conditions_incremental(self, latents: torch.Tensor, mask: torch.Tensor, labels=None,
                               intervals=None, actions=None, text=None) -> torch.Tensor:
        """Same as `conditions`, computed the way generation does: frame by frame over a KV cache
        holding the caption once and the earlier complete frames, each committed with its action.
        -> (B, T, N, D)"""
        self._check_latents(latents)
        tokens = self.patchify(latents)
        B, T = tokens.shape[:2]
        cond, states = self._conditioning(labels, intervals, text, B, latents.device)
        prev = self._prev_actions(actions, B, T, latents.device)
        cache = self.backbone.new_cache(T, states)
        out = []
        for t in range(T):
            cond_t = cond if prev is None else self._frame_cond(cond, prev[:, t])
            out.append(self.backbone.step(tokens[:, t], mask[:, t].bool(), t, cond_t, cache,
                                          self.config.num_frames))
            if t < T - 1:  # the complete frame joins the cache exactly as in generation
                self._commit(tokens[:, t], t, cond_t, cache, self.config.num_frames)
        return torch.stack(out, dim=1)

    def _frame_cond(self, cond: torch.Tensor, prev_action: torch.Tensor) -> torch.Tensor:
        """cond (B or 2B, D) of one frame plus its action (B,) or, per half of a CFG batch, (2B,); a CFG
        batch given (B,) repeats the actions."""
        prev = prev_action.repeat(cond.shape[0] // prev_action.shape[0])  # (B or 2B,)
        return self.backbone.frame_condition(cond, prev[:, None])[:, 0]  # (B or 2B, D)

    @torch.no_grad()
    def generate(self, num_frames: int, context: Optional[torch.Tensor] = None, labels=None,
                 intervals=None, cfg: float = 1.0, mask_steps: int = 64, diffusion_steps: int = 100,
                 temperature: float = 1.0, sampler: str = "ddpm",
                 generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
                 long_video: str = "interpolate", progress: bool = False, actions=None,
                 window: Optional[int] = None, text=None) -> torch.Tensor:
        """Generate a video of `num_frames` latent frames, context included: (B, T, C, h, w).

        `context` (B, k, C, h, w) are given first frames; `labels`/`intervals` condition every frame;
        `cfg` > 1 is classifier-free guidance with MAR's linear schedule, towards the class and, in a
        world model, towards the action that led into each new frame (the unconditional half sees the
        same history with the null action for the new frame: guidance on what the key changes).
        `long_video` is how frames past the training length are positioned: "interpolate" (stretch the
        temporal table) or "window" (keep the last num_frames-1 frames of the training length, recompute
        their cache).
        `window` (with "window"): frames the sliding window holds, the new one included, 2 to the
        training length (the default); fewer frames of context cost less per frame (`magi play`).
        `actions` (world models): (B, >= num_frames-1), actions[:, t] taken at frame t, or a callable
        (see `stream`).
        `text` (text models): caption embeddings (B, text_len, text_dim) from the model's text encoder
        (`magi.text`), every frame conditioned on them; None is the null caption. `cfg` > 1 guides towards
        the caption (and the class): the unconditional half gets the null caption.
        """
        frames = list(self.stream(num_frames, context, labels, intervals, cfg, mask_steps,
                                  diffusion_steps, temperature, sampler, generator, batch_size,
                                  long_video, progress, actions=actions, window=window, text=text))
        new = torch.stack(frames, dim=1)  # (B, T-k, C, h, w)
        return new if context is None else torch.cat([context.to(new.dtype), new], dim=1)

    @torch.no_grad()
    def stream(self, num_frames: Optional[int], context: Optional[torch.Tensor] = None, labels=None,
               intervals=None, cfg: float = 1.0, mask_steps: int = 64, diffusion_steps: int = 100,
               temperature: float = 1.0, sampler: str = "ddpm",
               generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
               long_video: str = "interpolate", progress: bool = False,
               actions=None, window: Optional[int] = None, text=None) -> Iterator[torch.Tensor]:
        """Like `generate`, yielding each new frame (B, C, h, w) as soon as it is done.

        `num_frames=None` streams without end (with `long_video="window"`). For a world model,
        `actions` is either a tensor (B, L), actions[:, t] taken at frame t, or a callable
        `actions(t) -> int or (B,)` giving the action taken at frame t: it is called once per frame, in
        order, just before the frame after t is generated (for the context frames too), so an
        interactive loop returns the player's current key from it between two frames (`magi play`).
        """
        c = self.config
        device = next(self.parameters()).device
        k = 0 if context is None else context.shape[1]
        if context is not None:
            self._check_latents(context, "context")
            batch = context.shape[0]
        elif text is not None:
            batch = len(text)
        elif labels is not None:
            batch = torch.as_tensor(labels).reshape(-1).numel()
        else:
            batch = batch_size or 1
        if batch_size is not None and batch_size != batch:
            raise ValueError(f"batch_size: {batch_size} disagrees with the {batch} given by context/text/labels")
        if num_frames is None and long_video != "window":
            raise ValueError("num_frames: an endless stream (None) needs long_video='window'")
        if num_frames is not None and num_frames <= k:
            raise ValueError(f"num_frames: expected more than the {k} context frames, got {num_frames}")
        if mask_steps < 1:
            raise ValueError(f"mask_steps: expected >= 1, got {mask_steps}")
        if long_video not in ("interpolate", "window"):
            raise ValueError(f"long_video: expected 'interpolate' or 'window', got {long_video!r}")
        if cfg != 1.0 and c.num_classes == 0 and c.num_actions == 0 and c.text_dim == 0:
            raise ValueError("cfg: classifier-free guidance needs a class-conditional model (num_classes > 0), "
                             "a text model (text_dim > 0) or an action-conditioned world model (num_actions > 0)")
        if window is not None and (long_video != "window" or not 2 <= window <= c.num_frames):
            raise ValueError(f"window: expected 2..{c.num_frames} (the training length) with long_video='window', "
                             f"got {window} with long_video={long_video!r}")
        W = window or c.num_frames  # frames the sliding window holds, the new one included
        prev_action = self._action_reader(actions, batch, num_frames, device)

        cond, states = self._conditioning(labels, intervals, text, batch, device)  # (B, D), (B, L, D)
        if cfg != 1.0:
            null, null_states = self._conditioning(None, intervals, None, batch, device)
            cond = torch.cat([cond, null])  # (2B, D): conditional half, unconditional half
            states = None if states is None else torch.cat([states, null_states])  # (2B, L, D)
        sliding = long_video == "window"
        positions = W if sliding else max(num_frames, c.num_frames)

        def frame_cond(t: int, generated: bool = False) -> torch.Tensor:
            """(B or 2B, D): frame t's conditioning as a complete frame of the cache or, `generated`, as
            the frame being made, whose unconditional half (action guidance) gets the null action."""
            if prev_action is None:
                return cond
            a = prev_action(t)  # (B,)
            if generated and cfg != 1.0:
                a = torch.cat([a, torch.full_like(a, self.null_action)])  # (2B,)
            return self._frame_cond(cond, a)

        history: list[torch.Tensor] = []  # tokens (B, N, P) of every frame so far
        if context is not None:
            history = list(self.patchify(context.to(device=device, dtype=torch.float32)).unbind(1))
        cache, cached, offset = self.backbone.new_cache(positions, states), 0, 0  # the caption enters once

        from tqdm.auto import tqdm

        frames = range(k, num_frames) if num_frames is not None else itertools.count(k)
        for t in tqdm(frames, desc="frames", disable=not progress, leave=False):
            if sliding and t >= W:  # slide: the last W-1 frames at positions 0..W-2
                offset = t - (W - 1)
                cache.rewind()  # the frames leave, the caption stays
                cached = offset
            if cached < t:  # complete frames enter the cache as clean frames, with their actions
                self._commit(torch.stack(history[cached:t], dim=1), cached - offset,
                             torch.stack([frame_cond(f) for f in range(cached, t)], dim=1), cache, positions)
                cached = t
            tokens = self._generate_frame(t - offset, frame_cond(t, generated=True), cache, positions, cfg,
                                          mask_steps, diffusion_steps, temperature, sampler, generator)
            history.append(tokens)
            if sliding and len(history) > W:
                history[len(history) - W - 1] = None  # out of every future window
            yield self.unpatchify(tokens[:, None])[:, 0]  # (B, C, h, w)

    def _action_reader(self, actions, batch: int, num_frames: Optional[int], device):
        """t -> (B,) the action that led into frame t (null at frame 0), reading a tensor or calling a
        callable once per frame in order; None for a model without action conditioning."""
        if not self._uses_actions(actions):
            return None
        null = torch.full((batch,), self.null_action, device=device, dtype=torch.long)
        if actions is None:
            return lambda t: null
        if callable(actions):
            taken: dict[int, torch.Tensor] = {}  # frame t -> the action taken at t (recent frames only)
            asked = [0]  # frames whose action has been read

            def read(t: int) -> torch.Tensor:
                while asked[0] < t:
                    a = torch.as_tensor(actions(asked[0]), device=device, dtype=torch.long).reshape(-1)
                    a = a.expand(batch) if a.numel() == 1 else a
                    taken[asked[0]] = self._action_tensor(a[:, None], batch, device, "actions(t)")[:, 0]
                    taken.pop(asked[0] - self.config.num_frames - 1, None)  # older than any window reads
                    asked[0] += 1
                return null if t == 0 else taken[t - 1]

            return read
        a = self._action_tensor(actions, batch, device)  # (B, L)
        if num_frames is not None and a.shape[1] < num_frames - 1:
            raise ValueError(f"actions: {num_frames} frames need at least {num_frames - 1} actions "
                             f"(actions[:, t] taken at frame t), got {a.shape[1]}")

        def read_tensor(t: int) -> torch.Tensor:
            if t - 1 >= a.shape[1]:
                raise ValueError(f"actions: frame {t} needs actions[:, {t - 1}], only {a.shape[1]} given")
            return null if t == 0 else a[:, t - 1]

        return read_tensor

    def _commit(self, tokens: torch.Tensor, frame: int, cond: torch.Tensor, cache, positions: int):
        """Complete frames join the KV cache: tokens (B, N, P) or (B, S, N, P) from temporal position
        `frame` on, cond (B or 2B, D) or per frame (B or 2B, S, D); a CFG batch repeats the tokens."""
        if tokens.dim() == 3:
            tokens, cond = tokens[:, None], cond[:, None] if cond.dim() == 2 else cond  # one frame
        clean = torch.zeros(cond.shape[0], dtype=torch.long, device=cond.device)
        cond = self.backbone.context_condition(cond, clean)  # noised context: committed clean (bucket 0)
        reps = cond.shape[0] // tokens.shape[0]
        self.backbone.prefill(tokens.repeat(reps, 1, 1, 1), frame, cond, cache, positions)

    def _generate_frame(self, frame: int, cond: torch.Tensor, cache, positions: int, cfg: float,
                        mask_steps: int, diffusion_steps: int, temperature: float, sampler: str,
                        generator: Optional[torch.Generator]) -> torch.Tensor:
        """MAR inside one frame: reveal tokens over `mask_steps` steps. -> tokens (B, N, P)

        `cache` is the KV cache of the earlier frames, or a function building one afresh for every
        step (the no-cache baseline that benchmarks/generate.py measures)."""
        c = self.config
        N, P = c.tokens_per_frame, c.token_dim
        B = cond.shape[0] // (2 if cfg != 1.0 else 1)
        device = cond.device
        tokens = torch.zeros(B, N, P, device=device)
        mask = torch.ones(B, N, dtype=torch.bool, device=device)
        order = torch.rand(B, N, generator=generator, device=device).argsort(-1)  # (B, N)
        rank = order.argsort(-1)
        for mask_len in mask_schedule(N, mask_steps):
            next_mask = rank < mask_len  # the first mask_len tokens of the order stay masked
            reveal = mask & ~next_mask  # (B, N)
            if not reveal.any():  # fewer tokens than steps: nothing left to reveal at this step
                continue
            x, m = tokens, mask
            if cfg != 1.0:
                x, m = torch.cat([tokens, tokens]), torch.cat([mask, mask])
            step_cache = cache() if callable(cache) else cache
            z = self.backbone.step(x, m, frame, cond, step_cache, positions)  # (B or 2B, N, D)
            if cfg != 1.0:
                z_sel = torch.cat([z[:B][reveal], z[B:][reveal]])  # (2M, D)
            else:
                z_sel = z[reveal]  # (M, D)
            cfg_step = 1.0 + (cfg - 1.0) * (N - max(mask_len, 1)) / N  # MAR's linear CFG schedule
            tokens[reveal] = self.head.sample(z_sel.float(), diffusion_steps, temperature, cfg_step,
                                              sampler, generator).to(tokens.dtype)
            mask = next_mask
        return tokens

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: Union[str, Path], weights_name: str = WEIGHTS_NAME,
                        state_dict: Optional[dict] = None) -> Path:
        """Write `config.json` and safetensors weights into directory `path` (each file atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        atomic_write(path / weights_name, lambda f: save_file(state, f, metadata={"format": "pt"}))
        atomic_write_text(path / CONFIG_NAME, json.dumps(self.config.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path_or_id: Union[str, Path], ema: bool = True,
                        config: Optional[MagiConfig] = None, device=None,
                        attention: Optional[str] = None, **hub_kwargs) -> "Magi":
        """Load from a local directory or a Hugging Face Hub repo id. With `ema`, `ema.safetensors` is
        preferred when present. If `config` is given, a checkpoint of a different config is refused
        with the mismatching fields named. `attention` overrides the saved kernel choice."""
        path = resolve_pretrained(path_or_id, **hub_kwargs)
        saved = load_config(path)
        if attention is not None:
            saved = saved.replace(attention=attention)
        if config is not None:
            diff = config.diff(saved)
            if diff:
                raise ValueError(f"{path}: checkpoint config differs from the expected one in "
                                 + ", ".join(f"{k} (expected {a!r}, checkpoint {b!r})" for k, (a, b) in diff.items()))
        model = cls(saved)
        model.load_weights(path, ema=ema)
        return model.to(device) if device is not None else model

    def load_pretrained(self, path: Union[str, Path], ema: bool = True) -> "Magi":
        """Load a checkpoint into this model; refuses one of another config, naming the fields."""
        path = Path(path)
        saved = load_config(path)
        diff = self.config.diff(saved)
        if diff:
            raise ValueError(f"{path}: checkpoint config differs from this model's in {_fields(diff)}")
        return self.load_weights(path, ema=ema)

    def load_grown(self, path: Union[str, Path], ema: bool = True) -> "Magi":
        """Start this model from a shallower checkpoint of the same config otherwise (progressive depth
        growth with the identity start of Chen et al.'s Net2DeeperNet): the saved blocks go to evenly
        spaced depths and each new block starts as the identity (its attention and MLP output
        projections zero, the residual stream passes unchanged), so the grown model computes exactly
        what the checkpoint did and training adds capacity from there."""
        path = Path(path)
        saved = load_config(path)
        diff = self.config.diff(saved)
        other = {k: v for k, v in diff.items() if k != "depth"}
        if other:
            raise ValueError(f"{path}: only the depth may differ when growing a model; the checkpoint differs "
                             f"in {_fields(other)}")
        old, new = saved.depth, self.config.depth
        if old > new:
            raise ValueError(f"{path}: checkpoint depth {old} is deeper than this model's {new}; growing only "
                             "adds blocks")
        kept = {round(i * new / old): i for i in range(old)}  # new block index -> saved block index
        file = self._weights_file(path, ema)
        state = load_file(str(file))
        prefix = "backbone.blocks."
        grown = {k: v for k, v in state.items() if not k.startswith(prefix)}
        own = self.state_dict()
        for key, value in own.items():
            if not key.startswith(prefix):
                continue
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in kept:
                grown[key] = state[f"{prefix}{kept[int(index)]}.{rest}"]
            elif rest.endswith(("attn.proj.weight", "attn.proj.bias", "mlp.2.weight", "mlp.2.bias")):
                grown[key] = torch.zeros_like(value)  # a new block: identity at the start
            else:
                grown[key] = value  # a new block's other weights keep this model's fresh init
        return self._load_state(grown, file)

    def load_reconditioned(self, path: Union[str, Path], ema: bool = True) -> "Magi":
        """Start this model from a checkpoint that differs only in its conditioning (`CONDITIONING_FIELDS`:
        classes, actions, text), e.g. a text model from a class-conditional one of the same video.

        Every weight both models have with the same shape loads; the class table keeps the classes both
        have and the null class (its last row), so a model without classes starts from the checkpoint's
        unconditional embedding; conditioning only this model has (text projection, null caption,
        cross-attention, an action table) keeps its fresh initialisation, except that where it is added
        into the residual stream it starts at zero (each cross-attention's output projection; the pooled
        caption's LayerNorm, text_mode "pooled"; a new caption position table), so the model starts as the
        checkpoint's unconditional one (or, from a text model, as that text model), as `load_grown`'s new
        blocks start as the identity; what only the checkpoint has is dropped.
        The video path (patch embedding, blocks, head) is the checkpoint's."""
        path = Path(path)
        saved = load_config(path)
        other = {k: v for k, v in self.config.diff(saved).items() if k not in CONDITIONING_FIELDS}
        if other:
            raise ValueError(f"{path}: only the conditioning ({', '.join(CONDITIONING_FIELDS)}) may differ when "
                             f"starting a reconditioned model; the checkpoint differs in {_fields(other)}")
        file = self._weights_file(path, ema)
        state, own = load_file(str(file)), self.state_dict()
        merged = {k: state[k] if k in state and state[k].shape == v.shape else v for k, v in own.items()}
        key = "backbone.class_embed.weight"
        if key in state and state[key].shape != own[key].shape:  # (num_classes + 1, D): null class last
            shared = min(state[key].shape[0], own[key].shape[0]) - 1
            table = own[key].clone()
            table[:shared] = state[key][:shared]
            table[-1] = state[key][-1]
            merged[key] = table
        fresh = [k for k in own if k not in state]
        zero = [k for k in fresh if ".cross.proj." in k or k == "backbone.text_pos"
                or (self.config.text_mode == "pooled" and k.startswith("backbone.text_proj.1."))]
        merged.update({k: torch.zeros_like(own[k]) for k in zero})
        return self._load_state(merged, file)

    @staticmethod
    def _weights_file(path: Path, ema: bool) -> Path:
        file = path / EMA_WEIGHTS_NAME if ema and (path / EMA_WEIGHTS_NAME).is_file() else path / WEIGHTS_NAME
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} (or {EMA_WEIGHTS_NAME}) found")
        return file

    def load_weights(self, path: Union[str, Path], ema: bool = True) -> "Magi":
        file = self._weights_file(Path(path), ema)
        return self._load_state(load_file(str(file)), file)

    def _load_state(self, state: dict[str, torch.Tensor], file: Path) -> "Magi":
        missing, unexpected = self.state_dict().keys() - state.keys(), state.keys() - self.state_dict().keys()
        if missing or unexpected:
            raise ValueError(f"{file}: weights do not match the model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        own = self.state_dict()
        bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(f"{file}: tensor shapes differ from the model: {'; '.join(bad[:5])}")
        self.load_state_dict(state)
        return self


def _fields(diff: dict) -> str:
    """`MagiConfig.diff`'s fields as an error names them."""
    return ", ".join(f"{k} (model {a!r}, checkpoint {b!r})" for k, (a, b) in diff.items())


def resolve_pretrained(path_or_id: Union[str, Path], **hub_kwargs) -> Path:
    """A local directory as is; otherwise a Hugging Face Hub repo id, downloaded (or from cache)."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: expected a checkpoint directory, found a file")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_id), allow_patterns=["*.json", "*.safetensors"],
                                      **hub_kwargs))
    except Exception as e:
        raise FileNotFoundError(f"{path_or_id}: not a local directory and could not be fetched from "
                                f"the Hugging Face Hub ({type(e).__name__}: {e})") from e


def load_config(path: Union[str, Path]) -> MagiConfig:
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON: {e}") from e
    return MagiConfig.from_dict(data)
