"""Process-group setup and model wrapping: one code path with or without `torchrun`.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group is created with
NCCL on CUDA and gloo on the CPU; without it everything runs in one process and the collectives below
are no-ops. The model is replicated with DDP by default or sharded with FSDP2 (`fully_shard`) for
models that do not fit replicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the torchrun process group if there is one; choose the device (`auto`: CUDA if available).

    Each rank uses `cuda:LOCAL_RANK` on GPUs. The backend follows the device: NCCL for CUDA, gloo for
    the CPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device: expected auto, cpu or cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch.cuda.is_available() is False")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(minutes=timeout_minutes),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in one process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """Send a picklable Python object from rank `src` to every rank (identity in one process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: nn.Module, info: DistInfo, parallel: str) -> nn.Module:
    """Replicate (`ddp`) or shard (`fsdp`) `model` across ranks; in one process return it unchanged.

    FSDP2 shards the units of `fsdp_units` (the layers inside the transformer blocks) separately and the
    remaining parameters with the root, so each layer's weights are gathered only while it runs.
    """
    if parallel not in ("ddp", "fsdp"):
        raise ValueError(f"train.parallel: expected ddp or fsdp, got {parallel!r}")
    if parallel == "fsdp":
        if not info.distributed:
            return model
        return shard_fsdp(model, info)
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards as separate units: the parameter-holding children of every element of
    every `nn.ModuleList` (for MAGI: the spatial and temporal layer of each block, which the backbone
    calls one at a time, and the pieces of each diffusion-head block). Nested candidates are dropped."""
    units: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                units += [c for c in block.children() if next(c.parameters(), None) is not None]
    inside = {id(m) for u in units for m in u.modules() if m is not u}
    seen: set[int] = set()
    result = []
    for u in units:
        if id(u) not in inside and id(u) not in seen:
            seen.add(id(u))
            result.append(u)
    return result


def shard_fsdp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Apply FSDP2 `fully_shard` to each unit of `fsdp_units`, then to the root (in place).

    A unit's weights are all-gathered only while its forward runs; the root keeps the rest
    (embeddings, position tables, output norm)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place, so it is already the module)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


__all__ = ["DistInfo", "init_distributed", "destroy_distributed", "barrier", "all_reduce_sum",
           "broadcast_object", "wrap_model", "fsdp_units", "shard_fsdp", "unwrap", "is_fsdp"]
