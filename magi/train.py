"""The training command: `magi train`, `python -m magi.train` and `torchrun -m magi.train`, same arguments.

    magi train --config configs/ucf101_cosmos.yaml --out runs/ucf [--set train.lr=1e-4 ...] [--resume auto]

One script from one CPU process to many GPU nodes (docs/design.md §5, §7): DDP by default, FSDP2 by
`train.parallel: fsdp`; the global batch is split into per-rank micro-batches with gradient
accumulation. The recipe (docs/design.md §1): AdamW with decay only on matrices, linear warm-up then constant
(or cosine) lr, gradient clipping, bf16 autocast over fp32 master weights, EMA in fp32. Its pieces are in
`magi.recipe`, the loop in `magi.trainer`; this module holds the run folder's rules (a fresh run, a
resumed one, an interrupted one) and the command line.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from magi.checkpoint import check_checkpoint, latest_checkpoint, list_checkpoints
from magi.config import RunConfig
from magi.distributed import destroy_distributed
from magi.recipe import record_class_names, record_trained_intervals
from magi.trainer import LOSS_PLOT, NonFiniteLossError, TrainResult, Trainer


def train(run: RunConfig, out_dir: str | Path, resume: str | None = None, **components) -> TrainResult:
    """Build a Trainer (optionally with a prebuilt `model`, `dataset`, `vae`), resume, and fit."""
    trainer = Trainer(run, out_dir, **components)
    trainer.resume(resume)
    return trainer.fit()


RUN_FILES = ("checkpoints", "metrics.jsonl", "tensorboard", "samples", "summary.json", "intervals.json",
             "train_config.yaml", LOSS_PLOT)  # what a run writes into OUT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from magi.errors import ArgumentParser, number

    p = ArgumentParser(prog="magi train", description=__doc__.split("\n\n")[0],
                       epilog="Own videos without YAML: magi train --data DIR --out RUN [--minutes 10]; "
                              "DIR holds one sub-folder of videos per class.")
    from magi import __version__

    p.add_argument("--version", action="version", version=f"magi {__version__}")  # also under torchrun -m
    p.add_argument("--config", help="run config YAML (model, data, vae, train); or use --data")
    p.add_argument("--out", required=True, help="output directory (checkpoints, logs, samples, loss.png)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.lr=1e-4 --set model.width=256")
    p.add_argument("--resume", default=None,
                   help="'auto' = newest good checkpoint in --out (start fresh if none), or a checkpoint dir")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start over (else: refuse, or --resume auto)")
    g = p.add_argument_group("train on a folder of videos (instead of --config)")
    g.add_argument("--data", metavar="DIR", help="folder of videos, one sub-folder per class")
    g.add_argument("--vae", help="VAE spec: pixels:F[:gray], a diffusers VAE folder or hub id "
                                 "(default: pixels:2)")
    g.add_argument("--preset", help="model preset (default: tiny on a CPU, magi-b on a GPU)")
    g.add_argument("--frames", type=int, help="video frames per training clip (default: 8 CPU, 16 GPU)")
    g.add_argument("--size", type=int, help="frame size in pixels, square crop (default: 16 CPU, 32 GPU)")
    g.add_argument("--interval", default="1", help="frame interval of the clips, or 'dynamic' (default 1)")
    g.add_argument("--steps", type=int, help="optimizer steps (default: 3000 CPU, 20000 GPU)")
    g.add_argument("--minutes", type=number(float, above=0),
                   help="also stop after this many minutes of each session (train.max_minutes)")
    return p.parse_args(argv)


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def check_out_dir(out: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to write a new run over an earlier one in `out` (unless `overwrite`: delete its files) and
    a `--resume` path that is not there; ValueError / FileExistsError name the flag."""
    import shutil

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file; expected a directory for the run")
    if resume and resume not in ("auto", "none"):
        path = Path(resume)
        if not path.exists():
            raise FileNotFoundError(f"--resume: {path} does not exist; give 'auto' (the newest checkpoint in "
                                    f"--out) or a checkpoint directory RUN/checkpoints/<step>")
        if resume and overwrite:
            raise ValueError("--overwrite deletes the run that --resume would continue; give one of them")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    earlier_run = ((out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())) or any(
        (out / name).is_file() and (out / name).stat().st_size > 0
        for name in ("metrics.jsonl", "train_config.yaml", "summary.json"))
    if not earlier_run or resume not in (None, "none"):
        return
    if overwrite:
        if _is_main_process():
            for name in existing:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        return
    found = latest_checkpoint(out) if (out / "checkpoints").is_dir() else None
    if found is None and not list_checkpoints(out):
        raise FileExistsError(f"--out: {out} holds a run that stopped before its first checkpoint "
                              f"({', '.join(existing)}); nothing to resume: pass --overwrite (or --resume auto) "
                              f"to start it again, or choose another --out")
    raise FileExistsError(f"--out: {out} already holds a run ({found or ', '.join(existing)}); continue it "
                          f"with --resume auto, choose another --out, or pass --overwrite to start over")


def resume_target(out: Path, resume: str | None) -> str | None:
    """`--resume RUN` (a run directory) means its newest checkpoint; anything else as given."""
    if resume and resume not in ("auto", "none"):
        path = Path(resume)
        if (path / "checkpoints").is_dir() and not (path / "training_state.pt").exists():
            found = latest_checkpoint(path)
            if found is None:
                raise ValueError(f"--resume: {path} has no loadable checkpoint in {path / 'checkpoints'}")
            return str(found)
    return resume


def build_run(args: argparse.Namespace) -> tuple[RunConfig, dict[str, Any]]:
    """The run config of `--config` or `--data` (with `--set` on top) and prebuilt components."""
    from magi.config_io import apply_overrides

    if args.config and args.data:
        raise ValueError("--config and --data: give one (--data builds the config; to change it use --set, "
                         "or start from the RUN/train_config.yaml it writes with --config)")
    if not args.config and not args.data:
        raise ValueError("--config or --data: give a run config YAML, or a folder of videos (--data DIR)")
    folder_flags = [f"--{name}" for name in ("vae", "preset", "frames", "size", "steps", "minutes")
                    if getattr(args, name) is not None]
    if args.config:
        if folder_flags:
            raise ValueError(f"{', '.join(folder_flags)}: only with --data; with --config use --set "
                             f"(e.g. --set train.max_minutes=10)")
        return RunConfig.load(args.config, args.set), {}
    from magi.from_folder import build_folder_config, describe

    interval = args.interval if args.interval == "dynamic" else _positive_int(args.interval, "--interval")
    data, vae, dataset = build_folder_config(args.data, vae=args.vae, preset=args.preset, frames=args.frames,
                                             size=args.size, minutes=args.minutes, steps=args.steps,
                                             interval=interval)
    data = apply_overrides(data, args.set)
    try:
        run = RunConfig.from_dict(data)
    except ValueError as e:
        raise ValueError(f"--set: {e}" if args.set else str(e)) from e
    if _is_main_process():
        shown = replace(run, model=record_trained_intervals(run, dataset))
        shown = replace(shown, model=record_class_names(shown, dataset))  # as the trainer records them
        print(describe(data, dataset))
        print(f"run config (to be written to {Path(args.out) / 'train_config.yaml'} when training starts; "
              f"`magi train --config` on that file reproduces the run):")
        print("  " + shown.to_yaml().rstrip().replace("\n", "\n  "))
    # the dataset and VAE built for the checks serve the run unless --set changed what they are
    changed = any(o.split("=", 1)[0].strip().startswith(("data.", "vae.")) for o in args.set)
    return run, ({} if changed else {"dataset": dataset, "vae": vae})


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{flag}: expected a positive integer or 'dynamic', got {text!r}") from None
    if value < 1:
        raise ValueError(f"{flag}: expected a positive integer or 'dynamic', got {value}")
    return value


EXIT_INTERRUPTED = 130  # 128 + SIGINT


def _clear_unfinished_run(out: Path) -> list[str]:
    """After an interrupt before the first checkpoint of a fresh run: remove what it wrote, so the same
    command starts again (there is nothing to resume). Returns the names removed."""
    import shutil

    if list_checkpoints(out):
        return []
    removed = []
    for name in RUN_FILES:
        target = out / name
        if target.exists():
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            removed.append(name)
    return removed


def main(argv: list[str] | None = None) -> int:
    from magi.errors import one_line_warnings

    with one_line_warnings("magi train"):  # also under torchrun -m magi.train, which bypasses magi.cli
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from magi.errors import WRITE_ERRNOS, fail, write_failure
    from magi.run_lock import RunLock, RunLocked, describe_holder

    args = parse_args(argv)
    out = Path(args.out)
    lock = RunLock(out) if _is_main_process() else None  # all ranks of a torchrun job are one run
    try:
        if out.exists() and not out.is_dir():
            return fail("magi train", f"--out: {out} is a file; expected a directory for the run")
        if lock is not None:
            try:
                lock.acquire()
            except RunLocked as e:
                return fail("magi train", e)
            except OSError as e:
                if e.errno not in WRITE_ERRNOS + (errno.ENOENT, errno.ENOTDIR):
                    raise
                return fail("magi train", f"--out: {write_failure(e)}; nothing was written")
            if lock.took_over:
                print(f"magi train: took over {lock.path}, left by {describe_holder(lock.took_over)}, which "
                      "is no longer running", file=sys.stderr)
        state = {"fresh": False}  # OUT held no earlier run: an interrupt then clears what this one wrote
        try:
            return _train(args, out, state)
        except KeyboardInterrupt:  # start-up, or a second Ctrl+C that stopped a step at once
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl+C does not break the message
            return _interrupted(out, state["fresh"])  # still holding the lock: nobody else is in OUT
        finally:
            if lock is not None:
                lock.release()
    except KeyboardInterrupt:  # while taking or giving back the lock
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\nmagi train: interrupted (Ctrl+C) before training started; nothing was changed", file=sys.stderr)
        return EXIT_INTERRUPTED


def _train(args: argparse.Namespace, out: Path, state: dict) -> int:
    from magi.errors import USER_ERRORS, WRITE_ERRNOS, fail, write_failure

    try:  # every config, data and path error surfaces here, before any work or output
        fresh = not _holds_run(out)
        check_out_dir(out, args.resume, args.overwrite)
        resume = resume_target(out, args.resume)
        if resume not in (None, "auto", "none"):
            check_checkpoint(resume)  # an incomplete or unreadable checkpoint fails before anything is built
        run, components = build_run(args)
    except USER_ERRORS as e:
        return fail("magi train", e)
    state["fresh"] = fresh or not list_checkpoints(out)
    if resume == "auto" and not fresh and not list_checkpoints(out) and _is_main_process():
        removed = _clear_unfinished_run(out)  # an attempt that stopped before its first checkpoint
        print(f"magi train: --resume auto: {out} has no checkpoint yet (an earlier attempt stopped before its "
              f"first), so training starts at step 0; that attempt's {', '.join(removed)} replaced")
    try:
        try:
            trainer = Trainer(run, out, **components)  # data/model mismatches also fail here, before training
            trainer.resume(resume)
        except USER_ERRORS as e:
            return fail("magi train", e)
        result = trainer.fit()
    except NonFiniteLossError as e:
        print(f"magi train: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        found = latest_checkpoint(out) if (out / "checkpoints").is_dir() else None
        after = (f"the last complete checkpoint is {found}: --resume auto continues from it once the "
                 "folder can be written" if found else "no checkpoint was written")
        return fail("magi train", f"{write_failure(e)}; {after}")
    finally:
        destroy_distributed()
    if result.interrupted_by:
        return 128 + int(getattr(signal, result.interrupted_by))
    return 0


def _holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in RUN_FILES)


def _interrupted(out: Path, fresh: bool) -> int:
    """Ctrl+C before training's own handler was in place (start-up), or a second Ctrl+C that stopped
    a step at once: one line saying where the run stands and what to do."""
    if not _is_main_process():
        return EXIT_INTERRUPTED
    found = latest_checkpoint(out) if (out / "checkpoints").is_dir() else None
    if found is not None:
        print(f"\nmagi train: stopped at once (Ctrl+C); the last checkpoint is {found}: the same command with "
              "--resume auto continues from it", file=sys.stderr)
    elif fresh:
        removed = _clear_unfinished_run(out)
        cleared = f" (removed its {', '.join(removed)})" if removed else ""
        print(f"\nmagi train: interrupted (Ctrl+C) before the first checkpoint, so there is nothing to resume; "
              f"{out} is as before{cleared}: the same command starts again", file=sys.stderr)
    else:
        print("\nmagi train: interrupted (Ctrl+C) before training started; nothing was changed", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
