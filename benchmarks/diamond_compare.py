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
  (`magi.world.evaluate.play_stream`: real emulator opening, `Magi.stream` without end, a
  sticky-random player at the keys, `long_video="window"`) at its play setting (play.json: mask and
  diffusion steps), each frame's time = the stream's next latent + the VAE decode to uint8.
- One process, for each thread count (1, then 2): warm-up, then `--rounds` rounds alternating
  DIAMOND frames and MAGI frames so both see the same machine load; medians per frame over all
  rounds (p90 too), of wall time and of the process's CPU time (all its threads), with the 1-minute
  load average before and after. The two cores are shared with other work on this machine; the
  ratio of medians measured side by side is the number to quote.

    python benchmarks/diamond_compare.py /tmp/diamond [--model pretrained/atari] [--rounds 6]

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


def timed(fn) -> tuple[float, float, object]:
    """(wall ms, process CPU ms, result) of fn(); the CPU time counts every thread of the process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("diamond", type=Path, help="a checkout of github.com/eloialonso/diamond")
    p.add_argument("--model", default="pretrained/atari", help="a MAGI world-model folder (default pretrained/atari)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per thread count")
    p.add_argument("--diamond-frames", type=int, default=10, help="DIAMOND frames per round")
    p.add_argument("--magi-frames", type=int, default=50, help="MAGI frames per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames of each before the rounds")
    p.add_argument("--name", default="diamond_compare", help="results/<name>.json")
    args = p.parse_args(argv)

    from magi.world.atari import atari_env
    from magi.world.evaluate import play_setting_of, play_stream
    from magi.pretrained import load_pretrained

    env = atari_env(GAME)
    num_actions = len(env.unwrapped.get_action_meanings())
    env.close()
    sampler, diamond = load_diamond(args.diamond.resolve(), num_actions)
    ckpt = load_pretrained(args.model)
    setting = play_setting_of(args.model)
    magi = {"model": str(args.model), "setting": setting, "vae": ckpt.vae_spec,
            "parameters": sum(p.numel() for p in ckpt.model.parameters())}

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        dia = DiamondStream(sampler, num_actions)
        stream = play_stream(ckpt, GAME, setting["mask_steps"], setting["diffusion_steps"], setting["sampler"],
                             setting["temperature"], window=setting.get("window"), cfg=setting["cfg"])
        for _ in range(args.warmup):
            dia.step()
            next(stream)
        times = {"diamond": [], "magi": []}  # (wall ms, CPU ms) per frame
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            times["diamond"] += [timed(dia.step)[:2] for _ in range(args.diamond_frames)]
            times["magi"] += [timed(lambda: next(stream))[:2] for _ in range(args.magi_frames)]
        stream.close()
        load.append(os.getloadavg()[0])
        wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        rows.append({"threads": threads, "diamond_ms": wall["diamond"], "magi_ms": wall["magi"],
                     "diamond_over_magi": wall["diamond"] / wall["magi"],
                     "diamond_cpu_ms": cpu["diamond"], "magi_cpu_ms": cpu["magi"],
                     "cpu_ratio": cpu["diamond"] / cpu["magi"],
                     "diamond_p90_ms": float(np.percentile([w for w, _ in times["diamond"]], 90)),
                     "magi_p90_ms": float(np.percentile([w for w, _ in times["magi"]], 90)),
                     "diamond_frames": len(times["diamond"]), "magi_frames": len(times["magi"]),
                     "load_average_1min": load})
    print(f"DIAMOND denoiser ({diamond['parameters'] / 1e6:.2f}M, {diamond['diffusion_sampler']['num_steps_denoising']} "
          f"Euler steps) vs MAGI {args.model} ({magi['parameters'] / 1e6:.2f}M, play setting "
          f"m{setting['mask_steps']}-d{setting['diffusion_steps']} {setting['sampler']}, decode included); ms per frame, medians")
    print_table(rows, ["threads", "diamond_ms", "magi_ms", "diamond_over_magi", "diamond_cpu_ms", "magi_cpu_ms",
                       "cpu_ratio", "diamond_p90_ms", "magi_p90_ms", "diamond_frames", "magi_frames"])
    versions = {pkg: _version(pkg) for pkg in ("torch", "omegaconf", "wandb", "numpy")}
    method = __doc__.split("How the numbers are made (also written into the JSON):\n")[1].split("\n\n")[0]
    write_results(args.name, {"method": " ".join(method.split()), "diamond": diamond, "magi": magi,
                              "rounds": args.rounds, "warmup": args.warmup, "versions": versions, "rows": rows})
    return 0


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
