"""Training checkpoints: `OUT/checkpoints/<step>/`, written atomically, the last K kept.

A checkpoint directory holds

    config.json          the model config (as `Magi.save_pretrained` writes it)
    model.safetensors    the training weights (fp32, full, unsharded)
    ema.safetensors      the EMA weights (what `Magi.from_pretrained` prefers)
    train_config.yaml    the full resolved run config (model, data, VAE, recipe)
    training_state.pt    optimizer, scheduler, step, epoch, sampler position, counters
    rng/rank_<r>.pt      Python / NumPy / torch CPU+CUDA RNG states of each rank

and is loadable without executing pickled code (safetensors; `torch.load(weights_only=True)`). It is
written into a hidden temporary directory next to the final one and renamed into place only when every
file is on disk, so a run killed mid-write leaves the previous checkpoints intact and at worst a
`.tmp-*` directory that the next save or resume removes. Saving and loading are collective: every
rank calls them (FSDP2 gathers or scatters shards); only rank 0 writes the shared files, and the output
directory must be visible to every rank (one shared filesystem across nodes, as usual for torchrun).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from magi.distributed import DistInfo, barrier, broadcast_object

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
RUN_CONFIG_FILE = "train_config.yaml"
STATE_FILE = "training_state.pt"
REQUIRED_FILES = (MODEL_FILE, EMA_FILE, CONFIG_FILE, RUN_CONFIG_FILE, STATE_FILE)


# --------------------------------------------------------------------------------------------------
# RNG states as plain tensors / ints (weights_only-loadable)


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and every CUDA device) RNG states."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Full (unsharded) state dicts, the same call for a plain module, DDP and FSDP2


def _full_options(cpu_offload: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """All weights of `model` (plain, DDP or FSDP2) as full CPU tensors on rank 0 (empty elsewhere
    under FSDP). Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, full tensors on rank 0. Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def _safetensors_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning any that share storage with another (safetensors refuses)."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel() > 0:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Listing


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, newest (highest step) first; temporary ones are ignored."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    steps = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(steps, key=lambda p: int(p.name), reverse=True)


def check_checkpoint(path: str | Path) -> None:
    """Raise ValueError naming what is missing or unreadable in checkpoint directory `path`."""
    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ValueError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    for name in (MODEL_FILE, EMA_FILE):
        try:
            with safe_open(str(path / name), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
            raise ValueError(f"{path / name}: unreadable safetensors file: {e}") from e
    try:
        json.loads((path / CONFIG_FILE).read_text())
        torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: unreadable {CONFIG_FILE} or {STATE_FILE}: {e}") from e


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run that passes `check_checkpoint`; bad ones are skipped with a warning."""
    for path in list_checkpoints(out_dir):
        try:
            check_checkpoint(path)
        except ValueError as e:
            warnings.warn(f"skipping bad checkpoint: {e}", stacklevel=2)
            continue
        return path
    return None


def training_behind(path: str | Path) -> dict | None:
    """{"steps", "wall_time_s"} of all the training behind a run's checkpoint or an exported folder
    (`magi.demo.export_pretrained`'s training.json), earlier fine-tuning stages (`train.init_from`,
    recorded in the export) included; a checkpoint counts its own run only (the folder its run started
    from may since have been overwritten). None when the folder holds neither record."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        return {"steps": int(state["step"]), "wall_time_s": float(state.get("wall_time_s", 0.0))}
    if not (path / "training.json").is_file():
        return None
    info = json.loads((path / "training.json").read_text())
    steps, seconds = 0, 0.0
    while info:
        steps, seconds = steps + int(info["steps"]), seconds + float(info["wall_time_s"])
        info = (info.get("init_from") or {}).get("training")
    return {"steps": steps, "wall_time_s": seconds}


# --------------------------------------------------------------------------------------------------
# Save / load


def _write_failure(error: Exception, where: Path, shown: Path) -> OSError | None:
    """The OSError behind a library's failed write into `where` (safetensors says "os error 28",
    torch.save "file write failed"), naming `shown`; None when `error` is not a write failure."""
    if isinstance(error, OSError):
        return OSError(error.errno, error.strerror, str(shown)) if error.errno else error
    text = str(error)
    found = re.search(r"os error (\d+)", text)
    if found:
        code = int(found.group(1))
    elif "write failed" in text or "failed writing" in text:
        code = errno.ENOSPC if shutil.disk_usage(where.parent).free < 2**20 else errno.EIO
    else:
        return None
    return OSError(code, os.strerror(code), str(shown))


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    model_config: dict,
    run_config_yaml: str,
    state: dict[str, Any],
    info: DistInfo,
    keep_last: int | None = None,
) -> Path:
    """Write `OUT/checkpoints/<step>/` atomically and prune to the newest `keep_last`. Collective.

    `model` is the (possibly wrapped) training module, `ema` the EMA copy, `state` the loop's plain
    bookkeeping (step, epoch, sampler position, counters), stored in `training_state.pt`.
    """
    root = checkpoint_root(out_dir)
    final = root / str(step)
    model_state = full_model_state(model)
    ema_state = full_model_state(ema)
    optim_state = full_optimizer_state(model, optimizer)

    tmp_name = None
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp_name = f".tmp-{step}-{uuid.uuid4().hex[:8]}"
        (root / tmp_name / "rng").mkdir(parents=True)
    tmp = root / broadcast_object(tmp_name)
    barrier()

    try:
        torch.save(rng_state(), tmp / "rng" / f"rank_{info.rank}.pt")
        if info.is_main:
            metadata = {"step": str(step)}
            save_file(_safetensors_dict(model_state), str(tmp / MODEL_FILE), metadata=metadata)
            save_file(_safetensors_dict(ema_state), str(tmp / EMA_FILE), metadata=metadata)
            (tmp / CONFIG_FILE).write_text(json.dumps(model_config, indent=2) + "\n")
            (tmp / RUN_CONFIG_FILE).write_text(run_config_yaml)
            full_state = dict(state)
            full_state.update(step=step, world_size=info.world_size, optimizer=optim_state,
                              scheduler=scheduler.state_dict() if scheduler is not None else None)
            torch.save(full_state, tmp / STATE_FILE)
    except Exception as e:  # noqa: BLE001 - a full or failing disk, as each library reports it
        error = _write_failure(e, tmp, shown=final)
        if error is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # give the space back; the previous checkpoint stands
        raise error from e
    barrier()

    if info.is_main:
        _fsync_tree(tmp)
        old = None
        if final.exists():  # re-saving a step (e.g. the end of a run): swap, then delete the old one
            old = root / f".old-{step}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if keep_last is not None:
            for stale in list_checkpoints(out_dir)[keep_last:]:
                shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def remove_stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Delete `.tmp-*` / `.old-*` directories left by a run killed mid-save; returns what was removed."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".old-"))]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def restore_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    info: DistInfo,
) -> dict[str, Any]:
    """Restore weights, EMA, optimizer, scheduler and this rank's RNG from checkpoint `path`. Collective.

    Returns the loop's bookkeeping (step, epoch, sampler position, counters). Every rank reads the
    files (the output directory is shared); FSDP2 keeps only its shard.
    """
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    path = Path(path)
    check_checkpoint(path)
    options = StateDictOptions(full_state_dict=True, strict=True)
    try:
        set_model_state_dict(model, load_file(str(path / MODEL_FILE)), options=options)
        set_model_state_dict(ema, load_file(str(path / EMA_FILE)), options=options)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the model built from the config: {e}") from e
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
    if scheduler is not None and state.get("scheduler") is not None:
        # Only the position: the schedule's shape (lambdas, base lrs) comes from the current config,
        # not from the checkpoint (LambdaLR would otherwise restore the old run's total steps).
        sched = {k: v for k, v in state["scheduler"].items() if k not in ("base_lrs", "_last_lr")}
        sched["lr_lambdas"] = [None] * len(sched.get("lr_lambdas") or [None])
        scheduler.load_state_dict(sched)
    rng_file = path / "rng" / f"rank_{info.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    else:
        warnings.warn(f"{path}: no RNG state for rank {info.rank} (world size changed?); "
                      "continuing with the seeded per-step RNG", stacklevel=2)
    return {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}


__all__ = ["save_checkpoint", "restore_checkpoint", "latest_checkpoint", "list_checkpoints",
           "check_checkpoint", "remove_stale_temporaries", "rng_state", "set_rng_state",
           "full_model_state", "full_optimizer_state", "checkpoint_root", "MODEL_FILE", "EMA_FILE",
           "CONFIG_FILE", "RUN_CONFIG_FILE", "STATE_FILE"]
