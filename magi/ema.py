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


__all__ = ["make_ema", "update_ema"]
