"""The temporal attention masks of CTF and MTF, the two kernels that apply them, and the KV cache.

Training sequences are a list of *slots*, each one frame of N tokens with a frame index and a kind:

    CTF: [clean 0 … clean T-2, masked 0 … masked T-1]   (the last clean frame is never looked at)
    MTF: [masked 0 … masked T-1]

Query q may attend to key k iff (docs/design.md §3)

    CTF: (k clean and k.frame < q.frame) or (k.frame = q.frame and k.kind = q.kind)
    MTF: k.frame <= q.frame

A text model in "prefix" mode opens the sequence with the caption's tokens as one more clean slot at
frame -1: by the same predicates every frame sees it (-1 is before every frame) and it sees only itself.

The predicate is written once (`ctf_visible`, `mtf_visible`) and serves both kernels: FlexAttention
with a block mask (block-sparse, compiled where the platform allows) and `scaled_dot_product_attention`
with the dense boolean mask. At inference no mask is needed: the current frame attends to the cached
keys/values of the earlier clean frames plus its own (`KVCache`).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

CLEAN, MASKED = 0, 1


def ctf_visible(q_frame, q_kind, k_frame, k_kind):
    """Complete Teacher Forcing: clean keys of earlier frames, plus the query's own slot."""
    return ((k_kind == CLEAN) & (k_frame < q_frame)) | ((k_frame == q_frame) & (k_kind == q_kind))


def mtf_visible(q_frame, q_kind, k_frame, k_kind):
    """Masked Teacher Forcing: every (masked) slot of the same or an earlier frame."""
    return k_frame <= q_frame


VISIBLE = {"ctf": ctf_visible, "mtf": mtf_visible}


def slot_layout(teacher_forcing: str, num_frames: int) -> tuple[list[int], list[int]]:
    """(frame index, kind) of each slot of a training sequence of `num_frames` frames."""
    masked = list(range(num_frames))
    if teacher_forcing == "ctf":
        clean = list(range(num_frames - 1))
        return clean + masked, [CLEAN] * len(clean) + [MASKED] * num_frames
    if teacher_forcing == "mtf":
        return masked, [MASKED] * num_frames
    raise ValueError(f"teacher_forcing: expected 'ctf' or 'mtf', got {teacher_forcing!r}")


def default_block_size(tokens_per_frame: int) -> int:
    """A FlexAttention block size whose blocks follow frames: one frame per block when a frame fits
    (and is a multiple of 16, which compiled kernels need), else the default 128."""
    if tokens_per_frame <= 128 and tokens_per_frame % 16 == 0:
        return tokens_per_frame
    return 128


@dataclass
class TemporalMask:
    """The token-level mask of one training sequence, built lazily for whichever kernel asks."""

    teacher_forcing: str
    num_frames: int
    tokens_per_frame: int
    device: torch.device
    block_size: int = 0  # 0: default_block_size
    prefix: int = 0  # caption tokens opening the sequence (text_mode "prefix"): a clean slot at frame -1
    _dense: Optional[torch.Tensor] = field(default=None, repr=False)
    _block: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        frames, kinds = slot_layout(self.teacher_forcing, self.num_frames)
        n = self.tokens_per_frame
        self.slot_frames = torch.tensor(frames, device=self.device)  # (S,)
        self.slot_kinds = torch.tensor(kinds, device=self.device)  # (S,)
        text = torch.full((self.prefix,), -1, device=self.device)  # (L,) the caption's frame
        self.token_frame = torch.cat([text, self.slot_frames.repeat_interleave(n)])  # (L + S*N,)
        self.token_kind = torch.cat([torch.full_like(text, CLEAN), self.slot_kinds.repeat_interleave(n)])  # (L + S*N,)
        self.block_size = self.block_size or default_block_size(n)

    @property
    def num_slots(self) -> int:
        return len(self.slot_frames)

    @property
    def seq_len(self) -> int:
        return self.prefix + self.num_slots * self.tokens_per_frame

    def mask_mod(self):
        """FlexAttention's mask_mod: the visibility predicate on token indices."""
        visible, frame, kind = VISIBLE[self.teacher_forcing], self.token_frame, self.token_kind

        def mask_mod(b, h, q_idx, kv_idx):
            return visible(frame[q_idx], kind[q_idx], frame[kv_idx], kind[kv_idx])

        return mask_mod

    @property
    def dense(self) -> torch.Tensor:
        """(S*N, S*N) boolean, True = may attend."""
        if self._dense is None:
            f, k = self.token_frame, self.token_kind
            self._dense = VISIBLE[self.teacher_forcing](f[:, None], k[:, None], f[None, :], k[None, :])
        return self._dense

    @property
    def block_mask(self):
        """FlexAttention BlockMask (shared by batch and heads)."""
        if self._block is None:
            from torch.nn.attention.flex_attention import create_block_mask

            self._block = create_block_mask(self.mask_mod(), None, None, self.seq_len, self.seq_len,
                                            device=self.device, BLOCK_SIZE=self.block_size)
        return self._block

    def computed_pairs(self) -> int:
        """(query, key) pairs FlexAttention computes: the area of every tile it visits (full or
        partial), trimmed to the sequence. The attention FLOPs are proportional to it."""
        tiles = self.block_mask.to_dense()[0, 0].bool()  # (q blocks, kv blocks)
        sizes = torch.full((tiles.shape[0],), self.block_size, device=tiles.device)
        sizes[-1] = self.seq_len - self.block_size * (tiles.shape[0] - 1)
        return int((tiles * sizes[:, None] * sizes[None, :]).sum())

    def density(self) -> float:
        """Fraction of (query, key) pairs that are visible."""
        return self.dense.float().mean().item()


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _kernel_options(block_mask) -> Optional[dict]:
    """Triton tile sizes for the compiled kernel when the mask's blocks are smaller than 128 tokens.

    The compiled kernel's default tiles (up to 128 queries x 128 keys on Hopper) must divide the block
    mask's blocks, so frame-aligned blocks of 16-64 tokens (64 at the paper's UCF-101 shape) fail to
    compile with the defaults (measured on an H100, torch 2.11). Tiles equal to the block size keep the
    kernel's skipping exactly frame-aligned."""
    bq, bkv = block_mask.BLOCK_SIZE
    if bq >= 128 and bkv >= 128:
        return None
    t = min(bq, bkv, 64)
    return {"BLOCK_M": t, "BLOCK_N": t, "BLOCK_M1": t, "BLOCK_N1": t, "BLOCK_M2": t, "BLOCK_N2": t}


def _flex_reference(q, k, v, block_mask) -> torch.Tensor:
    """FlexAttention's own differentiable reference implementation (the higher-order op, eager).

    `flex_attention` refuses autograd on the CPU (torch 2.13: "does not support backward on CPU"),
    but the op underneath computes the same block-masked attention and its backward in plain torch.
    This is a private API; if it moves, fall back to dense SDPA with the same predicate.
    """
    try:
        from torch._higher_order_ops.flex_attention import flex_attention as flex_op
        from torch.nn.attention.flex_attention import _apply_kernel_options, _identity

        options = _apply_kernel_options(q, k, v, False, None, None)
        return flex_op(q, k, v, _identity, block_mask.as_tuple(), q.shape[-1] ** -0.5, options)[0]
    except (ImportError, TypeError, AttributeError) as e:
        warnings.warn(f"FlexAttention reference op unavailable ({e}); using dense SDPA with the same mask")
        n_q, n_k = q.shape[-2], k.shape[-2]
        mask = block_mask.mask_mod(0, 0, torch.arange(n_q, device=q.device)[:, None],
                                   torch.arange(n_k, device=q.device)[None, :])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class FlexKernel:
    """FlexAttention: compiled on first use when possible, eager (exact, unfused) otherwise, and the
    differentiable reference op when gradients are needed on the CPU (where torch has no backward;
    train on the CPU with `attention: sdpa` for speed)."""

    def __init__(self, compile: bool = True):
        self.compile = compile
        self._coarse: dict[int, tuple] = {}  # id(fine mask) -> (fine mask, its 128-token-block twin)

    def coarse(self, block_mask):
        """The same mask on 128-token blocks (cached). Compiled bf16 backward has no kernel for blocks
        under 128 tokens (torch 2.11 on an H100: 'NoValidChoicesError' for 64-token frames, whatever the
        tile sizes; fp32 compiles), so bf16 training takes the coarser blocks: at 64 tokens per frame
        that computes 1.48x the pairs of frame-aligned blocks instead of 1.00x (results/attention.json)."""
        if id(block_mask) not in self._coarse:
            from torch.nn.attention.flex_attention import create_block_mask

            q_len, kv_len = block_mask.seq_lengths
            twin = create_block_mask(block_mask.mask_mod, None, None, q_len, kv_len,
                                     device=block_mask.kv_indices.device, BLOCK_SIZE=128)
            self._coarse[id(block_mask)] = (block_mask, twin)
        return self._coarse[id(block_mask)][1]

    def __call__(self, q, k, v, block_mask) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if needs_grad and q.device.type == "cpu":
            return _flex_reference(q, k, v, block_mask)
        if needs_grad and self.compile and q.dtype != torch.float32 and min(block_mask.BLOCK_SIZE) < 128:
            block_mask = self.coarse(block_mask)
        if self.compile:
            try:
                return _compiled_flex()(q, k, v, block_mask=block_mask,
                                        kernel_options=_kernel_options(block_mask))
            except Exception as e:  # no compiler / unsupported platform: fall back, once, loudly
                warnings.warn(f"compiled FlexAttention unavailable ({type(e).__name__}: {e}); "
                              "using the eager kernel")
                self.compile = False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return flex_attention(q, k, v, block_mask=block_mask)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[TemporalMask],
           kernel: str = "sdpa", flex: Optional[FlexKernel] = None) -> torch.Tensor:
    """Attention of q over (k, v), all (B, H, L, Dh), under `mask` (None = full attention)."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    if kernel == "flex":
        return (flex or FlexKernel(compile=False))(q, k, v, mask.block_mask)
    raise ValueError(f"attention: expected 'flex' or 'sdpa', got {kernel!r}")


class KVCache:
    """Keys and values of the clean frames generated so far, one preallocated buffer per temporal layer.

    The frame being generated writes its keys/values into the next free slot on every masked step
    (scratch, overwritten next step); `commit()` makes the slot permanent once the complete frame has
    been run through the network.
    """

    def __init__(self, num_layers: int, tokens_per_frame: int, max_frames: int, prefix: int = 0):
        self.k: list[Optional[torch.Tensor]] = [None] * num_layers
        self.v: list[Optional[torch.Tensor]] = [None] * num_layers
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        self.prefix = prefix  # caption tokens held before the frames (text_mode "prefix"), written once
        self.text: Optional[torch.Tensor] = None  # the caption's states (text_mode "cross"), (B, L, D)
        self.frames = 0  # committed frames

    def _allocate(self, layer: int, k, v) -> None:
        """The layer's buffers, on first use, in the dtype of the activations: (B, H, L + max_frames*N, Dh)."""
        if self.k[layer] is None:
            b, h, _, d = k.shape
            shape = (b, h, self.prefix + self.max_frames * self.tokens_per_frame, d)
            self.k[layer], self.v[layer] = k.new_empty(shape), v.new_empty(shape)

    def attend_prefix(self, layer: int, q, k, v) -> torch.Tensor:
        """The caption's tokens, q/k/v (B, H, L, Dh), attend to themselves only; their keys/values are
        kept before every frame's, for good (a sliding window's `rewind` keeps them)."""
        self._allocate(layer, k, v)
        self.k[layer][:, :, : self.prefix] = k
        self.v[layer][:, :, : self.prefix] = v
        return F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)

    def rewind(self) -> None:
        """Forget every frame, keep the caption (a sliding window rebuilds its frames from here)."""
        self.frames = 0

    def attend(self, layer: int, q, k, v) -> torch.Tensor:
        """Attention of the current frame's q (B, H, N, Dh) over the cached frames and itself."""
        if self.frames >= self.max_frames:
            raise RuntimeError(f"KVCache: full ({self.max_frames} frames)")
        self._allocate(layer, k, v)
        n = self.tokens_per_frame
        start, end = self.prefix + self.frames * n, self.prefix + (self.frames + 1) * n
        kb, vb = self.k[layer], self.v[layer]
        kb[:, :, start:end] = k
        vb[:, :, start:end] = v
        return F.scaled_dot_product_attention(q, kb[:, :, :end], vb[:, :, :end])  # (B, H, N, Dh)

    def commit(self) -> None:
        """Keep the keys/values last written as a clean frame."""
        self.frames += 1

    def prefill(self, layer: int, q, k, v) -> torch.Tensor:
        """Several complete frames at once, q/k/v (B, H, S*N, Dh): each frame attends to the cached
        frames, the earlier new frames and itself (block-causal), exactly what committing them one by
        one computes; their keys/values are written after the cached ones. `commit_many(S)` keeps them."""
        n, s = self.tokens_per_frame, k.shape[2] // self.tokens_per_frame
        end = self.store(layer, k, v)
        q_frame = torch.arange(s, device=q.device).repeat_interleave(n)  # (S*N,) new frame of each query
        k_frame = torch.arange(-self.frames, s, device=q.device).repeat_interleave(n)  # cached ones < 0
        k_frame = torch.cat([k_frame.new_full((self.prefix,), -self.frames - 1), k_frame])  # caption first
        visible = k_frame[None, :] <= q_frame[:, None]  # (S*N, cached*N + S*N)
        return F.scaled_dot_product_attention(q, self.k[layer][:, :, :end], self.v[layer][:, :, :end],
                                              attn_mask=visible)

    def store(self, layer: int, k, v) -> int:
        """Write the keys/values (B, H, S*N, Dh) of S complete frames after the cached ones, without
        attending (a prefill's last layer, whose outputs nothing reads). -> the end of the filled part."""
        n, s = self.tokens_per_frame, k.shape[2] // self.tokens_per_frame
        if self.frames + s > self.max_frames:
            raise RuntimeError(f"KVCache: {self.frames} + {s} frames exceed {self.max_frames}")
        self._allocate(layer, k, v)
        start, end = self.prefix + self.frames * n, self.prefix + (self.frames + s) * n
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return end

    def commit_many(self, frames: int) -> None:
        """Keep the keys/values of `frames` frames written by `prefill`."""
        self.frames += frames
