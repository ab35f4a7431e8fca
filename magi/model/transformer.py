"""The spatial-temporal backbone: token embedding, positions, conditioning, and the block stack.

Each block is a spatial layer (full attention inside one frame) then a temporal layer (attention over
the tokens of the visible frames, under the CTF or MTF mask in training, over the KV cache at
inference). Each layer is pre-norm attention + MLP. The backbone turns patchified latent tokens into
the conditions z that the diffusion head denoises.

Legend: B batch, S slots (frames of a training sequence), N tokens per frame, D width,
H heads, Dh head width, P token channels (C·p²).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from magi.config import MagiConfig
from magi.model.attention import FlexKernel, KVCache, TemporalMask, attend
from magi.model.diffusion_head import ScalarEmbedder, init_linears


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: Optional[TemporalMask] = None, kernel: str = "sdpa",
                flex: Optional[FlexKernel] = None, cache: Optional[KVCache] = None,
                layer: int = 0, prefill: bool = False) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, H, L, Dh)
        if cache is not None and prefill:
            out = cache.prefill(layer, q, k, v)  # (B, H, S*N, Dh), block-causal over the new frames
        elif cache is not None:
            out = cache.attend(layer, q, k, v)
        else:
            out = attend(q, k, v, mask, kernel, flex)  # (B, H, L, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))  # (B, L, D)

    def store_keys_values(self, x: torch.Tensor, cache: KVCache, layer: int) -> None:
        """Only the keys and values of x (B, S*N, D) into the cache, from the k/v rows of `qkv`."""
        B, L, D = x.shape
        kv = F.linear(x, self.qkv.weight[D:], self.qkv.bias[D:])  # (B, L, 2D): the k and v columns
        k, v = kv.view(B, L, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # k, v: (B, H, L, Dh)
        cache.store(layer, k, v)


class Layer(nn.Module):
    """Pre-norm attention then pre-norm MLP, both residual."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), **attn_kwargs)
        return x + self.mlp(self.norm2(x))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.spatial = Layer(width, heads, mlp_dim)
        self.temporal = Layer(width, heads, mlp_dim)


class MagiTransformer(nn.Module):
    def __init__(self, config: MagiConfig):
        super().__init__()
        self.config = config
        c, D = config, config.width
        self.token_embed = nn.Linear(c.token_dim, D)
        self.mask_token = nn.Parameter(torch.zeros(D))
        self.pos_spatial = nn.Parameter(torch.zeros(c.tokens_per_frame, D))
        self.pos_temporal = nn.Parameter(torch.zeros(c.num_frames, D))
        self.class_embed = nn.Embedding(c.num_classes + 1, D)  # last row: the null class
        self.interval_embed = ScalarEmbedder(D)
        # world models (DESIGN §8): the action that led into a frame, added to every token of it;
        # absent when num_actions = 0, so checkpoints without actions load unchanged
        self.action_embed = nn.Embedding(c.num_actions + 1, D) if c.num_actions else None
        # noised context: the noise level of a clean frame (bucket 0 = clean, as at inference)
        self.noise_embed = nn.Embedding(c.context_noise_buckets, D) if c.context_noise > 0 else None
        self.blocks = nn.ModuleList(Block(D, c.num_heads, c.mlp_dim) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(D, eps=1e-6)
        self.flex = FlexKernel(compile=c.compile_flex)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linears(self)
        self.interval_embed.reset_parameters()
        for p in (self.mask_token, self.pos_spatial, self.pos_temporal, self.class_embed.weight):
            nn.init.normal_(p, std=0.02)
        for table in (self.action_embed, self.noise_embed):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    @property
    def null_action(self) -> int:
        return self.config.num_actions

    def condition(self, labels: torch.Tensor, intervals: torch.Tensor) -> torch.Tensor:
        """Class embedding + interval embedding: (B,) longs -> (B, D), added to every token."""
        return self.class_embed(labels) + self.interval_embed(intervals)

    def frame_condition(self, cond: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        """Per-frame conditioning: cond (B, D) + the embedding of the action that led into each frame,
        prev_actions (B, T) longs (null action = `null_action`) -> (B, T, D)."""
        return cond[:, None] + self.action_embed(prev_actions)

    def context_condition(self, cond: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Conditioning of clean (context) frames: cond (B, D) or (B, S, D) plus the embedding of each
        sample's noise level, levels (B,) longs; unchanged for a model without noised context."""
        if self.noise_embed is None:
            return cond
        level = self.noise_embed(levels)  # (B, D)
        return cond + (level if cond.dim() == 2 else level[:, None])

    def temporal_table(self, num_positions: int) -> torch.Tensor:
        """The temporal position table, linearly interpolated to `num_positions` rows when longer
        than the training length (the paper's recipe for long videos). (num_positions, D)"""
        table = self.pos_temporal
        if num_positions <= table.shape[0]:
            return table
        # (1, D, T) -> (1, D, L) -> (L, D)
        return F.interpolate(table.T[None], size=num_positions, mode="linear", align_corners=True)[0].T

    def embed(self, tokens: torch.Tensor, token_mask: Optional[torch.Tensor], frames: torch.Tensor,
              cond: torch.Tensor, num_positions: int) -> torch.Tensor:
        """tokens (B, S, N, P), token_mask (B, S, N) True = masked, frames (S,) frame index per slot,
        cond (B, D) for every slot or (B, S, D) per slot -> (B, S, N, D)."""
        x = self.token_embed(tokens)  # (B, S, N, D)
        if token_mask is not None:
            x = torch.where(token_mask[..., None], self.mask_token.to(x.dtype), x)
        pos_t = self.temporal_table(num_positions)[frames]  # (S, D)
        cond = cond[:, None, None] if cond.dim() == 2 else cond[:, :, None]  # (B, 1 or S, 1, D)
        return x + self.pos_spatial[None, None] + pos_t[None, :, None] + cond

    def forward(self, tokens: torch.Tensor, token_mask: Optional[torch.Tensor], mask: TemporalMask,
                cond: torch.Tensor, kernel: str = "flex") -> torch.Tensor:
        """A whole training sequence: tokens (B, S, N, P) laid out as `mask` says, cond (B, D) or per
        slot (B, S, D) -> z (B, S, N, D)."""
        x = self.embed(tokens, token_mask, mask.slot_frames, cond, self.config.num_frames)
        B, S, N, D = x.shape
        for block in self.blocks:
            x = block.spatial(x.reshape(B * S, N, D))  # spatial: (B*S, N, D), no mask
            x = block.temporal(x.reshape(B, S * N, D), mask=mask, kernel=kernel, flex=self.flex)
            # temporal: (B, S*N, D) under the CTF / MTF mask
        return self.norm_out(x).view(B, S, N, D)

    def step(self, tokens: torch.Tensor, token_mask: Optional[torch.Tensor], frame: int,
             cond: torch.Tensor, cache: KVCache, num_positions: int) -> torch.Tensor:
        """One frame at inference: tokens (B, N, P) at temporal position `frame`, attending to the
        clean frames in `cache` and itself -> z (B, N, D). The frame's keys/values are written to the
        cache's next slot; `cache.commit()` keeps them."""
        frames = torch.tensor([frame], device=tokens.device)
        x = self.embed(tokens[:, None], None if token_mask is None else token_mask[:, None],
                       frames, cond, num_positions)[:, 0]  # (B, N, D)
        for i, block in enumerate(self.blocks):
            x = block.spatial(x)  # (B, N, D)
            x = block.temporal(x, cache=cache, layer=i)  # (B, N, D) over cache + self
        return self.norm_out(x)

    def prefill(self, tokens: torch.Tensor, first_frame: int, cond: torch.Tensor, cache: KVCache,
                num_positions: int) -> None:
        """Several complete frames at once into the cache: tokens (B, S, N, P) at temporal positions
        first_frame.., cond (B, D) or per frame (B, S, D). Same keys/values as S `step` + commit calls,
        in one pass of larger matrix products (a sliding window rebuilds its cache this way)."""
        B, S, N, _ = tokens.shape
        frames = torch.arange(first_frame, first_frame + S, device=tokens.device)
        x = self.embed(tokens, None, frames, cond, num_positions)  # (B, S, N, D)
        D = x.shape[-1]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block.spatial(x.reshape(B * S, N, D))  # spatial: (B*S, N, D)
            x = x.reshape(B, S * N, D)  # (B, S*N, D)
            if i == last:  # nothing reads the last layer's outputs: only its keys/values are needed
                block.temporal.attn.store_keys_values(block.temporal.norm1(x), cache, i)
            else:
                x = block.temporal(x, cache=cache, layer=i, prefill=True)  # (B, S*N, D)
        cache.commit_many(S)

    def new_cache(self, max_frames: int) -> KVCache:
        return KVCache(len(self.blocks), self.config.tokens_per_frame, max_frames)
