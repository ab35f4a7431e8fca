"""DIAMOND's Atari denoiser next to a MAGI world model's play stream, per frame on this CPU (docs/world-model.md).

How the numbers are made (also written into the JSON):
- DIAMOND (github.com/eloialonso/diamond, checked out by the user; its code is imported from that
  path at run time, none of it lives here): the denoiser of its default agent config
  (`config/agent/default.yaml`: UNet channels, depths, cond channels, 4 frames + 4 actions of
  context, EDM preconditioning) and the sampler of `config/trainer.yaml`
  (`world_model_env.diffusion_sampler`: 3 Euler steps), both read from the checkout, built with random weights (its
  zero-initialised output conv re-drawn, so the numbers flow), 64x64 RGB, Boxing's 18 actions.
  One frame = one `DiffusionSampler.sample(prev_obs (1, 4, 3, 64, 64), prev_act (1, 4))`, batch 1,
  the frame and action buffers rolled as its world-model env does. Its reward/termination model
  (also run per step in DIAMOND's env) is not timed: this is the denoiser alone, the issue's measure.
- MAGI: the model folder's play stream exactly as `magi play` runs it
  (`magi.world.stream_check.play_stream`, i.e. the one play loop `magi.play.loop.play`: real emulator
  opening, a sticky-random player at the keys, the window sliding without end) at its play setting
  (play.json: mask and diffusion steps, window), on each engine of `--engine`: `onnx` (the play
  setting exported by `magi export onnx` into a temporary folder, run in onnxruntime with the row's
  threads, as `magi play --engine onnx` does) or `torch` (`Magi.stream`, eager); by default the engine
  `magi play` picks for the model. Each frame's time = the loop's whole step: the context part, the
  key, the new frame and the decode to uint8.
- One process, for each thread count (1, then 2): warm-up, then `--rounds` rounds alternating
  DIAMOND frames and each engine's MAGI frames so all see the same machine load; medians per frame over all
  rounds (p90 too), of wall time and of the process's CPU time (all its threads), with the 1-minute
  load average before and after. The two cores are shared with other work on this machine; the
  ratio of medians measured side by side is the number to quote.

    python benchmarks/diamond_compare.py /tmp/diamond [--model pretrained/atari] [--engine onnx,torch] [--rounds 6]

Needs DIAMOND's imports (omegaconf, wandb) in the environment; their versions go into the JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_results  # noqa: E402

GAME = "Boxing"


def _fail(message: str) -> None:
    """Bad input: one line naming what is wrong, exit status 2."""
    print(f"diamond_compare: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_diamond(checkout: Path, num_actions: int) -> tuple[object, dict]:
    """DIAMOND's denoiser + sampler from its default configs (random weights) -> (sampler, record)."""
    src = checkout / "src"
    if not (src / "models" / "diffusion" / "denoiser.py").is_file():
        _fail(f"{checkout}: not a DIAMOND checkout (no src/models/diffusion/denoiser.py)")
    try:
        from omegaconf import OmegaConf
    except ImportError as e:
        _fail(f"DIAMOND's configs need omegaconf ({e}); pip install omegaconf wandb")
    sys.path.insert(0, str(src))
    try:
        from models.diffusion import (Denoiser, DenoiserConfig, DiffusionSampler, DiffusionSamplerConfig,
                                      InnerModelConfig)
    except ImportError as e:
        _fail(f"{src}: DIAMOND's code does not import here ({e}); it needs omegaconf and wandb")

    agent = OmegaConf.to_container(OmegaConf.load(checkout / "config" / "agent" / "default.yaml"), resolve=False)
    trainer = OmegaConf.to_container(OmegaConf.load(checkout / "config" / "trainer.yaml"), resolve=False)
    den = {k: v for k, v in agent["denoiser"].items() if k != "_target_"}
    inner = {k: v for k, v in den.pop("inner_model").items() if k != "_target_"}
    # interpolations such as s_tmax: ${eval:'float("inf")'} are left to the dataclass defaults (the same)
    sampler_cfg = {k: v for k, v in trainer["world_model_env"]["diffusion_sampler"].items()
                   if k != "_target_" and not (isinstance(v, str) and v.startswith("${"))}
    inner_cfg = InnerModelConfig(**inner, num_actions=num_actions)
    denoiser = Denoiser(DenoiserConfig(inner_model=inner_cfg, **den)).eval()
    torch.nn.init.normal_(denoiser.inner_model.conv_out.weight, std=0.02)  # zeros at init; random here
    sampler = DiffusionSampler(denoiser, DiffusionSamplerConfig(**sampler_cfg))
    record = {"denoiser": {**den, "inner_model": {**inner, "num_actions": num_actions}},
              "diffusion_sampler": sampler_cfg, "parameters": sum(p.numel() for p in denoiser.parameters()),
              "commit": _git_commit(checkout)}
    return sampler, record


def _git_commit(path: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class DiamondStream:
    """DIAMOND's world-model step, denoiser only: sample the next frame from the last n frames and
    actions, then roll the buffers (as its `WorldModelEnv.step` does)."""

    def __init__(self, sampler, num_actions: int, size: int = 64, seed: int = 0) -> None:
        cfg = sampler.denoiser.cfg.inner_model
        n, c = cfg.num_steps_conditioning, cfg.img_channels
        gen = torch.Generator().manual_seed(seed)
        self.sampler, self.num_actions = sampler, num_actions
        self.obs = torch.rand(1, n, c, size, size, generator=gen) * 2 - 1  # (1, n, 3, H, W) in [-1, 1]
        self.act = torch.randint(num_actions, (1, n), generator=gen)  # (1, n)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        frame, _ = self.sampler.sample(self.obs, self.act)  # (1, 3, H, W)
        self.obs = torch.cat([self.obs[:, 1:], frame[:, None]], dim=1)
        self.act = torch.cat([self.act[:, 1:], torch.tensor([[int(self.rng.integers(self.num_actions))]])], dim=1)
        return frame


def engine_names(text: str | None, model: str | Path) -> list[str]:
    """The engines `--engine` names (comma-separated onnx / torch), by default the one `magi play` picks
    for `model` (`magi.play.server.play_engine`: its play.json, else onnx where the setting runs on it).
    Exits 2 in one line for an unknown name or one the setting cannot run on."""
    from magi.play.engine import ENGINES
    from magi.play.server import play_engine, play_setting

    try:
        setting, _ = play_setting(Path(model))
        if text is None:
            return [play_engine(Path(model), setting)]
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise ValueError(f"--engine: expected one or more of {', '.join(ENGINES)}, got {text!r}")
        return [play_engine(Path(model), setting, n) for n in dict.fromkeys(names)]
    except ValueError as e:
        _fail(str(e))


def build_engine(name: str, world, options, threads: int, folder: Path):
    """The play loop's engine `name` for `world` (a `magi.play.session.World`) at the sampler setting
    `options`: onnx exports the graphs into `folder` once (as `magi play --engine onnx` does at start) and
    loads them with `threads` intra-op threads; torch runs `Magi.stream` (threads: torch.set_num_threads)."""
    from magi.play.engine import OnnxEngine, TorchEngine

    if name == "torch":
        return TorchEngine(world.ckpt)
    if name != "onnx":
        raise ValueError(f"engine: expected onnx or torch, got {name!r}")
    if not (folder / "manifest.json").is_file():
        return OnnxEngine.for_world(world, options, folder, threads=threads)
    return OnnxEngine(folder, threads=threads)


def timed(fn) -> tuple[float, float, object]:
    """(wall ms, process CPU ms, result) of fn(); the CPU time counts every thread of the process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("diamond", type=Path, help="a checkout of github.com/eloialonso/diamond")
    p.add_argument("--model", default="pretrained/atari", help="a MAGI world-model folder (default pretrained/atari)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per thread count")
    p.add_argument("--diamond-frames", type=int, default=10, help="DIAMOND frames per round")
    p.add_argument("--magi-frames", type=int, default=50, help="MAGI frames per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames of each before the rounds")
    p.add_argument("--engine", default=None, metavar="onnx|torch",
                   help="MAGI's engine(s), comma-separated (onnx,torch: both, alternating); default: the one "
                   "`magi play` picks for --model")
    p.add_argument("--name", default="diamond_compare", help="results/<name>.json")
    p.add_argument("--note", default="", help="what else ran on the machine, written beside the numbers")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked before anything heavy is loaded: exit 2 in one line for bad ones."""
    args = parser().parse_args(argv)
    try:
        args.thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        _fail(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        _fail(f"--threads: expected thread counts >= 1, got {args.threads!r}")
    if not (Path(args.model) / "config.json").is_file():
        _fail(f"{Path(args.model) / 'config.json'}: not found (--model: a MAGI world-model folder)")
    args.engines = engine_names(args.engine, args.model)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import tempfile

    from magi.play.server import play_setting
    from magi.play.session import load_world
    from magi.world.atari import atari_env
    from magi.world.evaluate import play_setting_of
    from magi.world.stream_check import play_stream

    env = atari_env(GAME)
    num_actions = len(env.unwrapped.get_action_meanings())
    env.close()
    sampler, diamond = load_diamond(args.diamond.resolve(), num_actions)
    world = load_world(args.model)
    ckpt = world.ckpt
    setting = play_setting_of(args.model)
    options, _ = play_setting(Path(args.model))
    options.long_video = "window"
    magi = {"model": str(args.model), "setting": setting, "vae": ckpt.vae_spec, "engines": args.engines,
            "parameters": sum(p.numel() for p in ckpt.model.parameters())}

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="diamond-compare-onnx-"))
    try:
        for threads in args.thread_counts:
            torch.set_num_threads(threads)
            dia = DiamondStream(sampler, num_actions)
            streams = {}
            for name in args.engines:
                engine = build_engine(name, world, options, threads, folder)
                magi.setdefault("engine_described", {})[name] = engine.describe()
                streams[name] = play_stream(ckpt, GAME, setting["mask_steps"], setting["diffusion_steps"],
                                            setting["sampler"], setting["temperature"], window=setting.get("window"),
                                            cfg=setting["cfg"], engine=engine)
            for _ in range(args.warmup):
                dia.step()
                for stream in streams.values():
                    next(stream)
            times = {"diamond": [], **{name: [] for name in streams}}  # (wall ms, CPU ms) per frame
            load = [os.getloadavg()[0]]
            for _ in range(args.rounds):
                times["diamond"] += [timed(dia.step)[:2] for _ in range(args.diamond_frames)]
                for name, stream in streams.items():
                    times[name] += [timed(lambda: next(stream))[:2] for _ in range(args.magi_frames)]
            for stream in streams.values():
                stream.close()
            load.append(os.getloadavg()[0])
            wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
            for name in streams:
                rows.append({"threads": threads, "engine": name, "diamond_ms": wall["diamond"], "magi_ms": wall[name],
                             "diamond_over_magi": wall["diamond"] / wall[name],
                             "diamond_cpu_ms": cpu["diamond"], "magi_cpu_ms": cpu[name],
                             "cpu_ratio": cpu["diamond"] / cpu[name],
                             "diamond_p90_ms": float(np.percentile([w for w, _ in times["diamond"]], 90)),
                             "magi_p90_ms": float(np.percentile([w for w, _ in times[name]], 90)),
                             "diamond_frames": len(times["diamond"]), "magi_frames": len(times[name]),
                             "load_average_1min": load})
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    print(f"DIAMOND denoiser ({diamond['parameters'] / 1e6:.2f}M, {diamond['diffusion_sampler']['num_steps_denoising']} "
          f"Euler steps) vs MAGI {args.model} ({magi['parameters'] / 1e6:.2f}M, play setting "
          f"m{setting['mask_steps']}-d{setting['diffusion_steps']} {setting['sampler']}, decode included); ms per frame, medians")
    print_table(rows, ["threads", "engine", "diamond_ms", "magi_ms", "diamond_over_magi", "diamond_cpu_ms",
                       "magi_cpu_ms", "cpu_ratio", "diamond_p90_ms", "magi_p90_ms", "diamond_frames", "magi_frames"])
    versions = {pkg: _version(pkg) for pkg in ("torch", "onnxruntime", "omegaconf", "wandb", "numpy")}
    method = __doc__.split("How the numbers are made (also written into the JSON):\n")[1].split("\n\n")[0]
    write_results(args.name, {"method": " ".join(method.split()), "diamond": diamond, "magi": magi,
                              "rounds": args.rounds, "warmup": args.warmup, "versions": versions,
                              "note": args.note, "rows": rows})
    return 0


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
