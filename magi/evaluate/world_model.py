"""A world model measured against the emulator (issue 14, DESIGN §8).

From held-out episodes: give the model k real frames, then feed it the recorded actions for H frames
and compare its frames with the emulator's:

- PSNR and SSIM per horizon step, pooled over rollouts (PSNR from the pooled squared error), next to
  the copy-the-last-frame baseline;
- controllability: the player's position read from every frame by a small detector (`PlayerDetector`,
  whose own error on real frames is measured against the emulator's RAM), its error per horizon step
  with the true actions, with the actions of another rollout ("shuffled") and with the null action.

Both model and truth are compared in the model's pixel space: the truth goes through the VAE round
trip (e.g. `pixels:4:gray` keeps one gray channel), so the VAE's own loss is not charged to the model.

    magi eval world-model runs/atari_ctf runs/atari_mtf --out results/world_model --rollouts 64

Legend: R rollouts, L = k + H frames, A actions.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch


# --------------------------------------------------------------------------------------------------
# Player detectors: where is the sprite the player controls?


def _gray(frames: torch.Tensor) -> np.ndarray:
    """uint8 (..., 3, H, W) -> float (..., H, W) gray (channel mean)."""
    return frames.float().mean(dim=-3).numpy()


def _boxing_player(gray: np.ndarray) -> np.ndarray:
    """The white boxer: centroid (x, y) of pixels brighter than the ring (gray > 140) below the score
    line and right of the black border. gray (..., H, W) at any size -> (..., 2), NaN when absent."""
    H, W = gray.shape[-2:]
    top, left, bottom = round(6 * H / 64), round(4 * W / 64), round(60 * H / 64)
    region = gray[..., top:bottom, left:]
    weight = (region > 140).astype(np.float64)  # (..., h, w)
    mass = weight.sum(axis=(-2, -1))
    ys = np.arange(top, bottom, dtype=np.float64)[:, None]
    xs = np.arange(left, W, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight * xs).sum(axis=(-2, -1)) / mass
        y = (weight * ys).sum(axis=(-2, -1)) / mass
    out = np.stack([x, y], axis=-1)
    out[mass < 2] = np.nan  # fewer than 2 bright pixels: no boxer
    return out * np.array([64 / W, 64 / H])  # in pixels of a 64x64 frame


def _breakout_player(gray: np.ndarray) -> np.ndarray:
    """The paddle: the bright run in the paddle row (row 58 of 64, columns 3..60; DESIGN §8).
    -> (..., 2) (x, y) in 64-px units, y fixed; NaN when absent."""
    H, W = gray.shape[-2:]
    row = gray[..., round(58 * H / 64), round(3 * W / 64):round(61 * W / 64)]  # (..., w)
    weight = (row > 60).astype(np.float64)
    mass = weight.sum(axis=-1)
    xs = np.arange(round(3 * W / 64), round(61 * W / 64), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight * xs).sum(axis=-1) / mass * 64 / W
    x[mass < 1] = np.nan
    return np.stack([x, np.where(np.isnan(x), np.nan, 58.0)], axis=-1)


@dataclass(frozen=True)
class PlayerDetector:
    """Reads the player's sprite position from frames, and its true position from the emulator RAM.

    `detect(frames uint8 (..., 3, H, W)) -> (..., 2)` (x, y) in pixels of a 64x64 frame (NaN when no
    sprite is found); `ram_xy(ram (..., 128)) -> (..., 2)` the RAM bytes of the same position (in the
    emulator's own units; `calibrate` fits the linear map between the two on real frames)."""

    game: str
    detect_fn: Callable[[np.ndarray], np.ndarray]
    ram_bytes: tuple[int, int]  # (x, y) RAM addresses; y may repeat x for 1-D players

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        return self.detect_fn(_gray(frames))

    def ram_xy(self, ram: np.ndarray) -> np.ndarray:
        return ram[..., list(self.ram_bytes)].astype(np.float64)


PLAYER_DETECTORS = {
    "Boxing": PlayerDetector("Boxing", _boxing_player, (32, 34)),  # AtariARI: player_x, player_y
    "Breakout": PlayerDetector("Breakout", _breakout_player, (72, 72)),  # paddle x (DESIGN §8)
}


def player_detector(game: str) -> PlayerDetector:
    if game not in PLAYER_DETECTORS:
        raise ValueError(f"no player detector for {game!r}; detectors exist for {', '.join(PLAYER_DETECTORS)}")
    return PLAYER_DETECTORS[game]


def calibrate(detector: PlayerDetector, frames: torch.Tensor, ram: np.ndarray) -> dict:
    """The detector's error on real frames against the emulator RAM: fit pixel ≈ a·ram + b per axis
    (least squares) on frames where the sprite is found; report the residual (px at 64x64), the share
    of frames where it is found, and the fitted map."""
    found = detector.detect(frames)  # (T, 2)
    truth = detector.ram_xy(ram)  # (T, 2)
    ok = ~np.isnan(found).any(axis=-1)
    out = {"frames": int(len(found)), "found_rate": float(ok.mean()), "axes": {}}
    errors = []
    for axis, name in enumerate("xy"):
        if np.ptp(truth[ok, axis]) == 0:  # a fixed axis (the Breakout paddle's y)
            continue
        a, b = np.polyfit(truth[ok, axis], found[ok, axis], 1)
        residual = found[ok, axis] - (a * truth[ok, axis] + b)
        corr = float(np.corrcoef(truth[ok, axis], found[ok, axis])[0, 1])
        out["axes"][name] = {"scale": float(a), "offset": float(b), "corr": corr,
                             "mean_abs_error_px": float(np.abs(residual).mean()),
                             "p95_abs_error_px": float(np.percentile(np.abs(residual), 95))}
        errors.append(residual)
    dist = np.sqrt(sum(e**2 for e in errors))
    out["mean_error_px"] = float(dist.mean())
    out["median_error_px"] = float(np.median(dist))
    return out


# --------------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollouts:
    """Held-out clips: real frames uint8 (R, L, 3, H, W), recorded actions (R, L) (actions[:, t] taken
    at frame t), emulator RAM (R, L, 128), and where each came from."""

    frames: torch.Tensor
    actions: torch.Tensor
    ram: np.ndarray
    sources: list[dict]


def held_out_rollouts(dataset, num_rollouts: int, length: int, seed: int = 0) -> Rollouts:
    """`num_rollouts` clips of `length` frames at interval 1 from the episodes of `dataset` (a
    `VideoFolder` over recordings with actions), cycling through the episodes with starts drawn
    from `seed`."""
    from magi.data.builtin import load_ram

    rng = np.random.default_rng(seed)
    usable = [i for i in range(len(dataset)) if dataset.video_frames(i) >= length]
    if not usable:
        raise ValueError(f"no held-out episode has {length} frames")
    frames, actions, rams, sources = [], [], [], []
    for r in range(num_rollouts):
        i = usable[r % len(usable)]
        start = int(rng.integers(0, dataset.video_frames(i) - length + 1))
        frames.append(dataset.frames(i, num_frames=length, interval=1, start=start))  # (L, 3, H, W)
        actions.append(dataset.actions_of(i, start, 1, length))  # (L,)
        rams.append(load_ram(dataset.path_of(i))[start:start + length])  # (L, 128)
        sources.append({"path": dataset.path_of(i), "start": start})
    return Rollouts(torch.stack(frames), torch.stack(actions), np.stack(rams), sources)


@torch.no_grad()
def roll_out(model, vae, context: torch.Tensor, actions: torch.Tensor, length: int, *,
             mask_steps: int, diffusion_steps: int, sampler: str, temperature: float, seed: int,
             batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Continue `context` uint8 (R, k, 3, H, W) to `length` frames under `actions` (R, >= length-1)
    with a sliding window past the training length. -> uint8 (R, length, 3, H, W) (context included,
    through the VAE round trip)."""
    from magi.data import to_float_video
    from magi.video_io import to_uint8

    device = next(model.parameters()).device
    out = []
    for b in range(0, len(context), batch_size):
        video = to_float_video(context[b:b + batch_size].to(device))  # (b, k, 3, H, W) in [-1, 1]
        latents = vae.encode(video)  # (b, k, C, h, w)
        gen = torch.Generator(device=device).manual_seed(seed + b)
        pred = model.generate(length, context=latents, actions=actions[b:b + batch_size].to(device),
                              mask_steps=mask_steps, diffusion_steps=diffusion_steps, sampler=sampler,
                              temperature=temperature, generator=gen, long_video="window",
                              progress=progress)  # (b, L, C, h, w)
        out.append(to_uint8(vae.decode(pred.float())).cpu())  # (b, L, 3, H, W)
    return torch.cat(out)


def pooled_psnr(pred: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """PSNR per frame from the squared error pooled over rollouts: uint8 (R, L, ...) -> L values."""
    from magi.data import to_float_video
    from magi.visualize import psnr

    return psnr(to_float_video(pred), to_float_video(truth), dims=(0, -3, -2, -1)).tolist()


def position_error(detector: PlayerDetector, pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per frame: mean distance (px at 64x64) between the player found in `pred` and in `truth`, over
    rollouts where the truth shows it; a prediction with no player counts as missing (its rate is
    reported) and is scored at the frame's half-diagonal, not dropped."""
    p, t = detector.detect(pred), detector.detect(truth)  # (R, L, 2)
    dist = np.sqrt(((p - t) ** 2).sum(axis=-1))  # (R, L)
    seen = ~np.isnan(t).any(axis=-1)
    missing = seen & np.isnan(p).any(axis=-1)
    dist = np.where(missing, 32 * np.sqrt(2), dist)
    with np.errstate(invalid="ignore"):
        mean = np.where(seen, dist, np.nan)  # (R, L)
        per_frame = np.nanmean(mean, axis=0)
        per_rollout = np.nanmean(mean[:, :8], axis=1)  # (R,) over the first 8 frames
    return {"error_px": [None if np.isnan(v) else float(v) for v in per_frame],
            "missing_rate": (missing.sum(0) / np.maximum(seen.sum(0), 1)).tolist(),
            "rollout_error_first8_px": [None if np.isnan(v) else float(v) for v in per_rollout]}


def _mean(values: list, lo: int, hi: int) -> Optional[float]:
    v = [x for x in values[lo:hi] if x is not None]
    return float(np.mean(v)) if v else None


# --------------------------------------------------------------------------------------------------
# The evaluation


@dataclass
class WorldModelEvalConfig:
    context_frames: int = 0  # real frames given; 0 = the model's training length minus one
    horizon: int = 32
    rollouts: int = 64
    mask_steps: int = 4
    diffusion_steps: int = 10
    sampler: str = "ddim"
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64


def evaluate_world_model(checkpoints: dict[str, str], out_dir: str | Path,
                         config: WorldModelEvalConfig = WorldModelEvalConfig(), data_root: Optional[str] = None,
                         device: str = "cpu", progress: bool = True, gif_rollouts: int = 6) -> dict:
    """Evaluate world-model checkpoints ({name: checkpoint or run dir}) on the same held-out rollouts;
    write `world_model.json`, `world_model.png` (curves) and per model two GIFs next to each other:
    `rollouts_NAME.gif` (the first `gif_rollouts` rollouts) and `rollouts_NAME_worst.gif` (the
    rollouts with the largest player error over the first 8 frames, listed in the JSON)."""
    from magi.data import build_dataset
    from magi.evaluate.metrics import ssim
    from magi.pretrained import load_pretrained

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: load_pretrained(path, device=device) for name, path in checkpoints.items()}
    first = next(iter(loaded.values()))
    c = replace(config, context_frames=config.context_frames or max(1, first.model.config.num_frames - 1))
    length = c.context_frames + c.horizon
    for name, ckpt in loaded.items():
        if ckpt.model.config.num_actions == 0:
            raise ValueError(f"{checkpoints[name]}: not an action-conditioned model (num_actions=0)")
    data = (first.run_config or {}).get("data") or {}
    if data.get("kind") != "atari":
        raise ValueError(f"{checkpoints[next(iter(checkpoints))]}: trained on data.kind="
                         f"{data.get('kind')!r}; the world-model evaluation reads Atari recordings")
    options = dict(data.get("options") or {})
    if data_root is not None:
        options["root"] = data_root
    options.update(split="val", num_frames=length, interval=1)
    dataset = build_dataset("atari", **options)
    game = options.get("game", "Pong")
    game = game if isinstance(game, str) else game[0]
    detector = player_detector(game)
    rollouts = held_out_rollouts(dataset, c.rollouts, length, c.seed)

    vae = first.vae
    truth = _round_trip(vae, rollouts.frames, device)  # (R, L, 3, H, W) uint8
    k = c.context_frames
    calib = calibrate(detector, truth.flatten(0, 1), rollouts.ram.reshape(-1, 128))
    copy = truth[:, k - 1:k].expand(-1, length, -1, -1, -1).clone()
    copy[:, :k] = truth[:, :k]
    shuffled = rollouts.actions.roll(1, dims=0)  # every rollout gets the next rollout's actions
    null = torch.full_like(rollouts.actions, -1)

    def score(pred: torch.Tensor) -> dict:
        ps = pooled_psnr(pred[:, k:], truth[:, k:])
        ss = ssim(pred[:, k:], truth[:, k:]).mean(dim=0).tolist()
        pos = position_error(detector, pred[:, k:], truth[:, k:])
        return {"psnr": ps, "ssim": ss, **pos}

    result = {"game": game, "config": asdict(c), "rollout_sources": rollouts.sources,
              "detector": {"game": game, "ram_bytes": list(detector.ram_bytes), "on_real_frames": calib},
              "baselines": {"copy_last_frame": score(copy)}, "models": {}}
    videos = {}
    for name, ckpt in loaded.items():
        model = ckpt.model
        runs = {}
        for variant, acts in (("true_actions", rollouts.actions), ("shuffled_actions", shuffled),
                              ("null_action", null)):
            pred = roll_out(model, ckpt.vae, rollouts.frames[:, :k], acts, length, mask_steps=c.mask_steps,
                            diffusion_steps=c.diffusion_steps, sampler=c.sampler,
                            temperature=c.temperature, seed=c.seed, batch_size=c.batch_size,
                            progress=progress)
            runs[variant] = score(pred)
            if variant == "true_actions":
                videos[name] = pred
        per_rollout = np.array([np.nan if v is None else v
                                for v in runs["true_actions"]["rollout_error_first8_px"]])
        scored = np.flatnonzero(~np.isnan(per_rollout))
        worst = [int(i) for i in scored[np.argsort(-per_rollout[scored], kind="stable")][:gif_rollouts]]
        runs["worst_rollouts"] = [{"rollout": i, "player_error_first8_px": float(per_rollout[i]),
                                   **rollouts.sources[i]} for i in worst]
        true_err, shuf_err = runs["true_actions"]["error_px"], runs["shuffled_actions"]["error_px"]
        e8, s8 = _mean(true_err, 0, 8), _mean(shuf_err, 0, 8)
        copy_psnr = result["baselines"]["copy_last_frame"]["psnr"]
        runs["summary"] = {
            "player_error_first8_px": e8, "player_error_first8_shuffled_px": s8,
            "player_error_first8_null_px": _mean(runs["null_action"]["error_px"], 0, 8),
            "shuffled_over_true_first8": (s8 / e8) if e8 and s8 else None,
            "psnr_mean": float(np.mean(runs["true_actions"]["psnr"])),
            "psnr_above_copy_steps": int(sum(a > b for a, b in zip(runs["true_actions"]["psnr"], copy_psnr))),
        }
        record = Path(ckpt.path) / "training.json"  # an exported model: the step it was exported at
        step = ckpt.step if ckpt.step is not None or not record.is_file() else json.loads(record.read_text()).get("steps")
        runs["model"] = {"checkpoint": ckpt.path, "step": step, "ema": ckpt.ema,
                         "teacher_forcing": model.config.teacher_forcing,
                         "parameters": sum(p.numel() for p in model.parameters())}
        result["models"][name] = runs
    gifs = {}  # GIF name -> (rollout indices, predictions): the first rollouts and the worst ones
    for name, pred in videos.items():
        gifs[name] = list(range(min(gif_rollouts, len(pred)))), pred
        gifs[f"{name}_worst"] = [w["rollout"] for w in result["models"][name]["worst_rollouts"]], pred
    result["files"] = _write_outputs(out, result, truth, gifs, k)
    (out / "world_model.json").write_text(json.dumps(result, indent=1))
    return result


def _round_trip(vae, frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 frames through the VAE and back, as the model sees them."""
    from magi.data import to_float_video
    from magi.video_io import to_uint8

    with torch.no_grad():
        return to_uint8(vae.decode(vae.encode(to_float_video(frames.to(device))))).cpu()


def _write_outputs(out: Path, result: dict, truth: torch.Tensor, gifs: dict, k: int) -> list[str]:
    """Curves (PSNR, player error) in one PNG; GIFs of truth | prediction, one per entry of `gifs`
    ({name: (rollout indices, predictions (R, L, 3, H, W))}), the predicted frames framed in red."""
    from matplotlib.figure import Figure

    from magi.video_io import side_by_side, write_gif
    from magi.visualize import mark_frames, stack_rows, upscale

    fig = Figure(figsize=(11, 4), dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    steps = np.arange(1, result["config"]["horizon"] + 1)
    base = result["baselines"]["copy_last_frame"]
    ax1.plot(steps, base["psnr"], "k--", label="copy last frame")
    ax2.plot(steps, [np.nan if v is None else v for v in base["error_px"]], "k--", label="copy last frame")
    for name, runs in result["models"].items():
        line = ax1.plot(steps, runs["true_actions"]["psnr"], label=f"{name}")[0]
        for variant, style in (("true_actions", "-"), ("shuffled_actions", ":"), ("null_action", "-.")):
            ax2.plot(steps, [np.nan if v is None else v for v in runs[variant]["error_px"]], style,
                     color=line.get_color(), label=f"{name}, {variant.replace('_', ' ')}")
    ax1.set(xlabel="horizon step", ylabel="PSNR (dB, pooled)", title=f"{result['game']}: frames vs emulator")
    ax2.set(xlabel="horizon step", ylabel="player position error (px at 64x64)", title="controllability")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "world_model.png")
    files = ["world_model.png"]
    scale = max(1, 128 // truth.shape[-1])
    for name, (indices, pred) in gifs.items():
        rows = [side_by_side(upscale(truth[i].permute(0, 2, 3, 1).numpy(), scale),
                             mark_frames(upscale(pred[i].permute(0, 2, 3, 1).numpy(), scale), k))
                for i in indices]
        path = write_gif(out / f"rollouts_{name}.gif", stack_rows(rows), fps=8)
        files.append(path.name)
    return files


# --------------------------------------------------------------------------------------------------
# magi eval world-model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="checkpoint or run directories (NAME=PATH to name one)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-root", help="the recordings' root (default: the checkpoint's data.options.root)")
    d = WorldModelEvalConfig()
    for field, value in asdict(d).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict:
    named = {}
    for item in args.checkpoints:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        named[name] = path
    fields = asdict(WorldModelEvalConfig())
    config = WorldModelEvalConfig(**{f: getattr(args, f) for f in fields})
    result = evaluate_world_model(named, args.out, config, args.data_root, args.device,
                                  progress=not args.no_progress)
    print(format_table(result))
    print(f"-> {Path(args.out) / 'world_model.json'}")
    return result


def format_table(result: dict) -> str:
    calib = result["detector"]["on_real_frames"]
    lines = [f"{result['game']}: player detector on real frames, error vs RAM {calib['mean_error_px']:.2f} px "
             f"(found in {calib['found_rate']:.0%})",
             "model        step   PSNR  >copy  err@1-8 true / shuffled / null   shuffled÷true"]
    for name, runs in result["models"].items():
        s = runs["summary"]
        fmt = lambda v: "  n/a" if v is None else f"{v:5.2f}"  # noqa: E731
        step = runs["model"]["step"]
        lines.append(f"{name:10s} {'-' if step is None else step:>6} {s['psnr_mean']:6.2f} {s['psnr_above_copy_steps']:3d}/"
                     f"{result['config']['horizon']}  {fmt(s['player_error_first8_px'])} / "
                     f"{fmt(s['player_error_first8_shuffled_px'])} / {fmt(s['player_error_first8_null_px'])}"
                     f"        {fmt(s['shuffled_over_true_first8'])}")
    base = result["baselines"]["copy_last_frame"]
    lines.append(f"copy-last  {'':6s} {np.mean(base['psnr']):6.2f}         "
                 f"{_mean(base['error_px'], 0, 8) or float('nan'):5.2f}")
    return "\n".join(lines)


__all__ = ["PlayerDetector", "PLAYER_DETECTORS", "player_detector", "calibrate", "held_out_rollouts",
           "roll_out", "evaluate_world_model", "WorldModelEvalConfig", "format_table"]


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(0 if run(parser.parse_args()) else 1)
