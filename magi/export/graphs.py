"""The play setting's frame as three fixed-shape functions, each a module `torch.onnx.export` traces
(docs/design.md §10, docs/export.md), built from `Magi`'s own methods so they compute what `Magi.stream` computes:

- `ContextPart`: the W-1 frames of the sliding window, each with the action that led into it, run as
  clean frames (`Magi._commit`) -> their keys/values in every temporal layer. It depends only on earlier
  frames, so a player loop computes it before reading the key.
- `FramePart`: the new frame at temporal position W-1, given those keys/values, the action that led into
  it, the noise of each mask step and (for more than one mask step) the token order: MAR's mask steps,
  each one backbone step (`MagiTransformer.step`) and the DDIM loop of the diffusion head unrolled
  (`GaussianDiffusion.ddim_sample`). -> the frame's latents.
- `DecoderPart`: latents -> uint8 frame, the VAE's decode and `to_uint8_video`.

The noise is an input, so a caller that draws it as `Magi._generate_frame` does (`draw_noise`) gets
`Magi.stream`'s frames from these functions (tests/test_export.py checks both in torch and in
onnxruntime).

Legend: B batch (1 here), W window frames (the new one included), L layers, H heads, N tokens per
frame, Dh head width, P token channels (C·p²), S mask steps, C latent channels, h/w latent grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from magi.model.magi import mask_schedule


@dataclass(frozen=True)
class PlayShape:
    """The static shapes a set of play graphs is exported for."""

    window: int  # W: frames the sliding window holds, the new one included
    mask_steps: int  # S
    diffusion_steps: int  # DDIM steps per mask step

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window: expected >= 2, got {self.window}")
        if self.mask_steps < 1 or self.diffusion_steps < 1:
            raise ValueError(f"mask_steps, diffusion_steps: expected >= 1, got {self.mask_steps}, {self.diffusion_steps}")


class _ListCache:
    """A functional stand-in for `KVCache` with the methods `MagiTransformer.step` / `.prefill` call:
    keys/values are whole tensors (no in-place writes into preallocated buffers), so tracing records
    plain concatenations. `frames` cached frames precede the new ones."""

    def __init__(self, num_layers: int, tokens_per_frame: int, keys=None, values=None, frames: int = 0):
        self.k = list(keys) if keys is not None else [None] * num_layers
        self.v = list(values) if values is not None else [None] * num_layers
        self.tokens_per_frame, self.frames = tokens_per_frame, frames
        self.prefix, self.text = 0, None  # no caption: play graphs are for world models without text

    def attend(self, layer: int, q, k, v) -> torch.Tensor:
        """The new frame's q (B, H, N, Dh) over the cached frames and itself (`KVCache.attend`)."""
        keys = torch.cat([self.k[layer], k], dim=2)  # (B, H, (W-1)N + N, Dh)
        values = torch.cat([self.v[layer], v], dim=2)
        return F.scaled_dot_product_attention(q, keys, values)  # (B, H, N, Dh)

    def prefill(self, layer: int, q, k, v) -> torch.Tensor:
        """Complete frames (nothing cached before them): block-causal over the new frames
        (`KVCache.prefill` with an empty cache)."""
        if self.frames:
            raise RuntimeError("_ListCache.prefill: only into an empty cache")
        n, s = self.tokens_per_frame, k.shape[2] // self.tokens_per_frame
        self.store(layer, k, v)
        frame = torch.arange(s).repeat_interleave(n)  # (S*N,) frame of each token: a constant
        visible = (frame[None, :] <= frame[:, None]).to(q.device)  # (S*N, S*N)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, H, S*N, Dh)

    def store(self, layer: int, k, v) -> int:
        self.k[layer], self.v[layer] = k, v  # (B, H, S*N, Dh)
        return k.shape[2]

    def commit_many(self, frames: int) -> None:
        pass


def frame_condition(model, prev_action: torch.Tensor) -> torch.Tensor:
    """(B, D): the conditioning of a frame (no class, the default interval) plus the action that led
    into it, prev_action (B,) longs, as `Magi.stream` builds it at cfg 1."""
    cond = model._cond(None, None, prev_action.shape[0], prev_action.device)  # (B, D)
    return model._frame_cond(cond, prev_action)


class ContextPart(nn.Module):
    """(window latents (1, W-1, C, h, w), their actions (W-1,) longs: each the action that led into the
    frame, the null action for none) -> keys/values (L, 2, 1, H, (W-1)·N, Dh)."""

    def __init__(self, model, shape: PlayShape):
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        m, W = self.model, self.shape.window
        tokens = m.patchify(latents)  # (1, W-1, N, P)
        cond = torch.stack([frame_condition(m, actions[i:i + 1]) for i in range(W - 1)], dim=1)  # (1, W-1, D)
        cache = _ListCache(len(m.backbone.blocks), m.config.tokens_per_frame)
        m._commit(tokens, 0, cond, cache, W)  # frames at temporal positions 0..W-2
        return torch.stack([torch.stack([k, v]) for k, v in zip(cache.k, cache.v)])  # (L, 2, 1, H, (W-1)N, Dh)


class FramePart(nn.Module):
    """(keys/values (L, 2, 1, H, (W-1)·N, Dh), action (1,) longs: the one that led into the new frame,
    noise (S, N, P): the DDIM start of each token at each mask step (only the tokens a step reveals use
    theirs), rank (N,) longs: each token's place in the reveal order (ignored for one mask step)) ->
    the new frame's latents (1, C, h, w)."""

    def __init__(self, model, shape: PlayShape):
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, kv: torch.Tensor, action: torch.Tensor, noise: torch.Tensor,
                rank: Optional[torch.Tensor] = None) -> torch.Tensor:
        m, s = self.model, self.shape
        c = m.config
        N, P = c.tokens_per_frame, c.token_dim
        cache = _ListCache(len(m.backbone.blocks), N, kv[:, 0], kv[:, 1], frames=s.window - 1)
        cond = frame_condition(m, action)  # (1, D)
        process = m.head.process(s.diffusion_steps)
        tokens = torch.zeros(1, N, P, device=kv.device)
        mask = torch.ones(1, N, dtype=torch.bool, device=kv.device)
        for step, mask_len in enumerate(mask_schedule(N, s.mask_steps)):
            z = m.backbone.step(tokens, mask, s.window - 1, cond, cache, s.window)  # (1, N, D)
            x = process.ddim_sample(m.head._eps_fn(z[0].float(), 1.0), noise[step])  # (N, P): every token
            if mask_len == 0:  # the last step reveals every token still masked
                tokens = torch.where(mask[..., None], x[None].to(tokens.dtype), tokens)
                mask = torch.zeros_like(mask)
            else:
                next_mask = (rank < mask_len)[None]  # (1, N): the first mask_len of the order stay masked
                reveal = mask & ~next_mask
                tokens = torch.where(reveal[..., None], x[None].to(tokens.dtype), tokens)
                mask = next_mask
        return m.unpatchify(tokens[:, None])[:, 0]  # (1, C, h, w)


class DecoderPart(nn.Module):
    """latents (1, C, h, w) -> uint8 frame (1, 3, H, W), exactly `LoadedCheckpoint.decode`."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        from magi.video_io import to_uint8_video

        return to_uint8_video(self.vae.decode(latents[:, None]))[:, 0]  # (1, 3, H, W)


def draw_noise(tokens: int, token_dim: int, mask_steps: int, generator: Optional[torch.Generator],
               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The randomness `Magi._generate_frame` draws for one frame (batch 1, cfg 1, DDIM), in its order,
    laid out for `FramePart`: (noise (S, N, P) scaled by the temperature, rank (N,) longs). The token
    order first (`torch.rand`), then per mask step the DDIM start of the tokens it reveals, in token
    order (`DiffusionHead.sample`); a token's noise sits at its own index."""
    order = torch.rand(1, tokens, generator=generator).argsort(-1)  # (1, N)
    rank = order.argsort(-1)[0]  # (N,)
    noise = torch.zeros(mask_steps, tokens, token_dim)
    mask = torch.ones(tokens, dtype=torch.bool)
    for step, mask_len in enumerate(mask_schedule(tokens, mask_steps)):
        next_mask = rank < mask_len
        reveal = mask & ~next_mask
        if not reveal.any():
            continue
        drawn = torch.randn((int(reveal.sum()), token_dim), generator=generator, dtype=torch.float32)
        noise[step, reveal] = drawn * temperature
        mask = next_mask
    return noise, rank
