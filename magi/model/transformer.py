"""The spatial-temporal backbone: token embedding, positions, conditioning, and the block stack.

Each block is a spatial layer (full attention inside one frame) then a temporal layer (attention over
the tokens of the visible frames, under the CTF or MTF mask in training, over the KV cache at
inference). Each layer is pre-norm attention + MLP. The backbone turns patchified latent tokens into
the conditions z that the diffusion head denoises.

A text model (docs/design.md §9) projects the caption's token embeddings to the width (`embed_text`); by
`text_mode` they open every temporal layer's sequence ("prefix", held once in the KV cache), are
attended by a cross-attention layer after each temporal layer ("cross"), or are pooled into the
conditioning vector (by `Magi`, "pooled").

Legend: B batch, S slots (frames of a training sequence), N tokens per frame, D width,
H heads, Dh head width, P token channels (C·p²), L caption tokens, E text encoder width.
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
                layer: int = 0, prefill: bool = False, text_prefix: bool = False) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, H, L, Dh)
        if cache is not None and text_prefix:
            out = cache.attend_prefix(layer, q, k, v)  # (B, H, L, Dh): the caption sees only itself
        elif cache is not None and prefill:
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


class CrossAttention(nn.Module):
    """Pre-norm cross-attention of video tokens to the caption's tokens, residual (text_mode "cross")."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) video tokens, text (B, M, D) caption states -> (B, L, D)."""
        B, L, D = x.shape
        M, H = text.shape[1], self.heads
        q = self.q(self.norm(x)).view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, Dh)
        k, v = self.kv(text).view(B, M, 2, H, D // H).permute(2, 0, 3, 1, 4)  # k, v: (B, H, M, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        return x + self.proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_dim: int, cross: bool = False):
        super().__init__()
        self.spatial = Layer(width, heads, mlp_dim)
        self.temporal = Layer(width, heads, mlp_dim)
        self.cross = CrossAttention(width, heads) if cross else None

    def attend_text(self, x: torch.Tensor, text: Optional[torch.Tensor]) -> torch.Tensor:
        """The cross-attention layer (text_mode "cross") on x (B, L, D); x unchanged otherwise."""
        return x if self.cross is None else self.cross(x, text)


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
        # world models (docs/design.md §8): the action that led into a frame, added to every token of it;
        # absent when num_actions = 0, so checkpoints without actions load unchanged
        self.action_embed = nn.Embedding(c.num_actions + 1, D) if c.num_actions else None
        # noised context: the noise level of a clean frame (bucket 0 = clean, as at inference)
        self.noise_embed = nn.Embedding(c.context_noise_buckets, D) if c.context_noise > 0 else None
        # text (docs/design.md §9): the caption's token embeddings projected to the width, and the learned null
        # caption (in the encoder's space, so it passes the same projection); absent without text
        self.text_proj = nn.Sequential(nn.Linear(c.text_dim, D), nn.LayerNorm(D, eps=1e-6)) if c.text_dim else None
        self.null_text = nn.Parameter(torch.zeros(c.text_len, c.text_dim)) if c.text_dim else None
        # where each caption token sits (text_positions): word order for encoders that do not carry it
        self.text_pos = nn.Parameter(torch.zeros(c.text_len, D)) if c.text_dim and c.text_positions else None
        cross = c.text_dim > 0 and c.text_mode == "cross"
        self.blocks = nn.ModuleList(Block(D, c.num_heads, c.mlp_dim, cross) for _ in range(c.depth))
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
        for p in (self.null_text, self.text_pos):
            if p is not None:
                nn.init.normal_(p, std=0.02)

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

    @property
    def text_prefix(self) -> bool:
        """Whether the caption opens the temporal stream (text_mode "prefix")."""
        return self.config.text_dim > 0 and self.config.text_mode == "prefix"

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """Caption token embeddings (B, L, E) -> caption states (B, L, D): Linear + LayerNorm, plus each
        token's position (text_positions)."""
        states = self.text_proj(text)  # (B, L, D)
        return states if self.text_pos is None else states + self.text_pos

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
                cond: torch.Tensor, kernel: str = "flex", text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A whole training sequence: tokens (B, S, N, P) laid out as `mask` says, cond (B, D) or per
        slot (B, S, D), text (B, L, D) caption states of a text model -> z (B, S, N, D)."""
        x = self.embed(tokens, token_mask, mask.slot_frames, cond, self.config.num_frames)
        B, S, N, D = x.shape
        L = mask.prefix  # caption tokens opening the temporal sequence ("prefix"), else 0
        for block in self.blocks:
            x = block.spatial(x.reshape(B * S, N, D)).reshape(B, S * N, D)  # spatial: (B*S, N, D), no mask
            if L:
                x = torch.cat([text, x], dim=1)  # (B, L + S*N, D): the caption opens the sequence
            x = block.temporal(x, mask=mask, kernel=kernel, flex=self.flex)
            # temporal: (B, [L +] S*N, D) under the CTF / MTF mask
            if L:
                text, x = x[:, :L], x[:, L:]  # (B, L, D), (B, S*N, D)
            x = block.attend_text(x, text)
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
            x = block.temporal(x, cache=cache, layer=i)  # (B, N, D) over [caption +] cache + self
            x = block.attend_text(x, cache.text)
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
                x = block.attend_text(x, cache.text)
        cache.commit_many(S)

    def new_cache(self, max_frames: int, text: Optional[torch.Tensor] = None) -> KVCache:
        """An empty KV cache for `max_frames` frames; a text model's caption states (B, L, D) enter it
        once: in "prefix" mode their keys/values at every temporal layer (the caption run through the
        temporal layers, attending to itself, exactly as it opens a training sequence), in "cross" mode
        the states themselves for the cross-attention layers."""
        prefix = text.shape[1] if text is not None and self.text_prefix else 0
        cache = KVCache(len(self.blocks), self.config.tokens_per_frame, max_frames, prefix)
        if text is not None and self.text_prefix:
            for i, block in enumerate(self.blocks):
                text = block.temporal(text, cache=cache, layer=i, text_prefix=True)  # (B, L, D)
        elif text is not None and self.config.text_mode == "cross":
            cache.text = text
        return cache
