"""A long stream, as `magi play` runs it (docs/world-model.md): the play loop (`magi.play.loop.play`) driven
from a real emulator opening by a scripted player at the keys (`play_stream`), checked over thousands of
frames for both sprites staying on screen (`stream_check`, `magi eval world-model --stream-frames N`) and
timed per frame (`stream_cost`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from magi.world.detect import opponent_detector, player_detector
from magi.world.policies import StickyPlayer



def frame_layout(ckpt) -> str:
    """How the emulator's screen became the frames a model was trained on: its run's data.options.layout
    (`magi.world.atari.FRAME_LAYOUTS`; "screen" when not recorded)."""
    return (((ckpt.run_config or {}).get("data") or {}).get("options") or {}).get("layout", "screen")


def emulator_opening(game: str, frames: int, size, seed: int, layout: str = "screen") -> torch.Tensor:
    """`frames` real frames of a fresh emulator episode (`reset(seed)`, then NOOPs), as `magi play`
    opens a session: uint8 (1, frames, 3, H, W) at the training `size` and frame `layout`."""
    from magi.world.atari import atari_env, noop_opening, resize_screens

    env = atari_env(game, who="emulator_opening")
    screens = noop_opening(env, seed, frames, list(env.unwrapped.get_action_meanings()).index("NOOP"))
    env.close()
    return torch.from_numpy(resize_screens(screens, size, layout))[None]  # (1, frames, 3, H, W)


def play_stream(ckpt, game: str, mask_steps: int = 1, diffusion_steps: int = 5, sampler: str = "ddim",
                temperature: float = 1.0, seed: int = 0, player: Optional[Callable[[int], int]] = None,
                window: Optional[int] = None, cfg: float = 1.0, engine=None) -> Iterator[tuple[torch.Tensor, float]]:
    """The endless stream `magi play` runs, through its play loop (`magi.play.loop.play`): real opening
    frames of a fresh emulator episode (play's first held-out seed, NOOPs), then the engine's frames
    (default `TorchEngine`: `Magi.stream(None, ..., long_video="window")`), each decoded to uint8.
    `player(t)` is the action taken at frame t (default: a `StickyPlayer` seeded with `seed`). Yields
    (frame uint8 (3, H, W), ms spent on it: the loop's whole step, context part + frame + decode)."""
    from magi.play.engine import TorchEngine
    from magi.play.loop import play
    from magi.play.session import FIRST_SEED
    from magi.pretrained import SamplingOptions

    k = stream_context_frames(ckpt)
    opening = emulator_opening(game, k, ckpt.frame_size, FIRST_SEED, frame_layout(ckpt))  # (1, k, 3, H, W)
    context = ckpt.encode(opening)  # (1, k, C, h, w)
    if player is None:
        meanings = _game_actions(game)
        player = StickyPlayer(len(meanings), k, seed, noop=meanings.index("NOOP") if "NOOP" in meanings else 0)
    options = SamplingOptions(mask_steps=mask_steps, diffusion_steps=diffusion_steps, sampler=sampler,
                              temperature=temperature, cfg=cfg, long_video="window", window=window)
    frames = play(engine or TorchEngine(ckpt), context, player, options, seed)
    try:
        with torch.no_grad():
            for played in frames:
                yield torch.from_numpy(played.image), played.ms
    finally:
        frames.close()


TIMING_NOTE = ("the wall ms end when the decoded uint8 frame is on the host, so on CUDA they include the GPU's work; "
               "the CPU ms are the process's host time only (on CUDA they leave the GPU's time out)")


def stream_check(ckpt, game: str, frames: int = 10_000, mask_steps: int = 1, diffusion_steps: int = 5,
                 sampler: str = "ddim", temperature: float = 1.0, seed: int = 0, block: int = 1000,
                 snapshot_every: Optional[int] = None, progress: bool = True,
                 window: Optional[int] = None, cfg: float = 1.0) -> tuple[dict, torch.Tensor]:
    """Stream `frames` frames from a model (a `LoadedCheckpoint`) exactly as `magi play` does
    (`play_stream`), timing every frame (generate + decode) and finding both sprites in every decoded
    frame.

    -> (report, snapshots uint8 (S, 3, H, W): the first generated frame and every `snapshot_every`-th
    after it). The report: the share of frames in which the player, the opponent and both are found
    (target >= 0.95 for both), the longest run of frames with a sprite lost, and per block of `block`
    frames the ms per frame (median, p95, mean) and the detected shares, to show both stay flat."""
    import os
    import time

    from tqdm.auto import tqdm

    from magi.play.session import FIRST_SEED

    if frames < 1 or block < 1:
        raise ValueError(f"stream_check: frames and block must be >= 1, got {frames}, {block}")
    detectors = {"player": player_detector(game)}
    if opponent_detector(game) is not None:
        detectors["opponent"] = opponent_detector(game)
    k = stream_context_frames(ckpt)
    snapshot_every = snapshot_every or block
    found = {sprite: np.zeros(frames, bool) for sprite in detectors}
    ms = np.zeros(frames)
    snapshots, pending = [], []
    meanings = _game_actions(game)
    player = StickyPlayer(len(meanings), k, seed, noop=meanings.index("NOOP") if "NOOP" in meanings else 0)
    stream = play_stream(ckpt, game, mask_steps, diffusion_steps, sampler, temperature, seed, player, window, cfg)
    cpu_ms = np.zeros(frames)  # the process's CPU time per frame (all threads): robust to a loaded machine
    load = [os.getloadavg()[0]]
    bar = tqdm(total=frames, desc="stream", disable=not progress, leave=False)
    try:
        for t in range(frames):
            cpu = time.process_time()
            image, ms[t] = next(stream)
            cpu_ms[t] = (time.process_time() - cpu) * 1000
            pending.append(image)
            if t % snapshot_every == 0 or t == frames - 1:
                snapshots.append(image)
            if len(pending) == block or t == frames - 1:  # detect a block at once: (b, 3, H, W)
                batch, lo = torch.stack(pending), t + 1 - len(pending)
                for sprite, d in detectors.items():
                    found[sprite][lo:t + 1] = ~np.isnan(d.detect(batch)).any(axis=-1)
                pending = []
            bar.update()
    finally:
        stream.close()
        bar.close()
    load.append(os.getloadavg()[0])
    both = np.logical_and.reduce(list(found.values()))
    blocks = []
    for lo in range(0, frames, block):
        hi = min(frames, lo + block)
        blocks.append({"frames": [lo, hi], "ms_median": float(np.median(ms[lo:hi])),
                       "ms_p95": float(np.percentile(ms[lo:hi], 95)), "ms_mean": float(ms[lo:hi].mean()),
                       "cpu_ms_median": float(np.median(cpu_ms[lo:hi])), "both_detected": float(both[lo:hi].mean()),
                       **{f"{s}_detected": float(f[lo:hi].mean()) for s, f in found.items()}})
    report = {
        "frames": frames, "context_frames": k, "emulator_seed": FIRST_SEED, "player_seed": seed,
        "player": "StickyPlayer: NOOP in the opening, then a key held, changed with probability 0.25 per frame",
        "setting": {"mask_steps": mask_steps, "diffusion_steps": diffusion_steps, "sampler": sampler,
                    "temperature": temperature, "long_video": "window", "window": window},
        "torch_threads": torch.get_num_threads(), "device": str(ckpt.device),
        "sprites": list(detectors), "both_detected_fraction": float(both.mean()),
        **{f"{s}_detected_fraction": float(f.mean()) for s, f in found.items()},
        "target_both_detected": 0.95, "passes": bool(both.mean() >= 0.95),
        "longest_run_without_both": _longest_run(~both),
        "first_frame_without_both": int(np.argmax(~both)) if (~both).any() else None,
        "ms_per_frame_median": float(np.median(ms)), "ms_per_frame_p95": float(np.percentile(ms, 95)),
        "cpu_ms_per_frame_median": float(np.median(cpu_ms)), "load_average_1min": load,
        "late_over_early_ms": blocks[-1]["ms_median"] / blocks[0]["ms_median"],
        "actions_changed": int(np.count_nonzero(np.diff(player.taken[k - 1:]))),
        "blocks": blocks, "timed": "Magi.stream's next frame + decode to uint8, per frame (detection not timed): "
                                   "wall ms, and the process's CPU ms (all threads; other work on the machine "
                                   "inflates the wall time, not this); " + TIMING_NOTE,
        "snapshot_frames": [t for t in range(frames) if t % snapshot_every == 0 or t == frames - 1],
    }
    return report, torch.stack(snapshots)


def stream_cost(ckpt, game: str, setting: dict, frames: int = 40, warmup: int = 8, seed: int = 0) -> dict:
    """What a frame of `magi play`'s stream costs at one sampler setting (`play_stream`, batch 1, eager,
    decode included, on this process's threads): the medians over `frames` frames after `warmup`, wall
    and CPU ms (the process's CPU time over all threads, which other work on the machine does not
    inflate). The ladder's cost column: quality and cost measured in one evaluation."""
    import time

    stream = play_stream(ckpt, game, setting["mask_steps"], setting["diffusion_steps"], setting["sampler"],
                         seed=seed, window=setting.get("window"), cfg=setting.get("cfg", 1.0))
    wall, cpu = [], []
    try:
        for t in range(warmup + frames):
            start = time.process_time()
            _, ms = next(stream)
            if t >= warmup:
                wall.append(ms)
                cpu.append((time.process_time() - start) * 1000)
    finally:
        stream.close()
    return {"frames": frames, "warmup": warmup, "torch_threads": torch.get_num_threads(), "device": str(ckpt.device),
            "ms_per_frame_median": float(np.median(wall)), "cpu_ms_per_frame_median": float(np.median(cpu)),
            "timed": "play_stream (Magi.stream's next frame + decode), batch 1, eager; " + TIMING_NOTE}


def stream_context_frames(ckpt) -> int:
    """Real opening frames `magi play` gives a model (`magi.play.loop.opening_frames`)."""
    from magi.play.loop import opening_frames

    return opening_frames(ckpt.model.config)


def _game_actions(game: str) -> list[str]:
    """The game's minimal action set, index = action (as `magi play` reads it)."""
    from magi.world.atari import atari_env

    env = atari_env(game, who="stream_check")
    meanings = list(env.unwrapped.get_action_meanings())
    env.close()
    return meanings


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def write_stream_check(out: Path, name: str, report: dict, snapshots: torch.Tensor) -> list[Path]:
    """`stream_NAME.json` and `stream_NAME.png` (the snapshots left to right, 2x) in `out`."""
    from PIL import Image

    from magi.visualize import frame_grid, upscale

    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"stream_{name}.json", out / f"stream_{name}.png"
    json_path.write_text(json.dumps(report, indent=1))
    Image.fromarray(frame_grid(upscale(snapshots.permute(0, 2, 3, 1).numpy(), 2))).save(png_path)
    return [json_path, png_path]
