"""Exponential moving average of the weights, kept as a frozen copy of the model (DiT's habit).

The copy is made from the unwrapped fp32 model before any DDP/FSDP wrapping; under FSDP2 the copy is
sharded the same way, so each rank averages only its own shard. The EMA is what checkpoints call
`ema.safetensors` and what `Magi.from_pretrained` prefers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of `model` (eval mode, no gradients) to average into."""
    ema = copy.deepcopy(model)
    ema.eval()
    ema.requires_grad_(False)
    return ema


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """The decay for the EMA update after optimizer step `step` (0-based).

    With `warmup`, min(decay, (1 + step) / (10 + step)) (the usual EMA warm-up, as in diffusers'
    EMAModel): early on the average covers only the last ~step/9 updates, so a short run's EMA does not
    keep a share of the random initial weights (decay**steps: 5% after 3,000 steps at 0.999) or of the
    early, poor weights. It reaches 0.999 after ~9,000 steps and 0.9999 after ~90,000; without `warmup`,
    `decay` from the first step (MAR's and DiT's plain EMA).
    """
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


def _local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local shard of a DTensor (FSDP2), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter; buffers are copied.

    `model` is the unwrapped training module (same structure and sharding as `ema`).
    """
    ema_params = [_local(p) for p in ema.parameters()]
    params = [_local(p).detach().to(dtype=e.dtype) for p, e in zip(model.parameters(), ema_params)]
    if len(ema_params) != len(list(model.parameters())):
        raise ValueError("update_ema: the EMA copy and the model have different parameters")
    if ema_params:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


__all__ = ["make_ema", "update_ema", "ema_decay_at"]
