"""A world model measured against the emulator (docs/design.md §8, docs/world-model.md).

From held-out episodes: give the model k real frames, then feed it the recorded actions for H frames
and compare its frames with the emulator's:

- colour PSNR and SSIM per horizon step against the emulator's RGB frames (PSNR from the squared
  error pooled over rollouts), next to the copy-the-last-frame baseline. Before the colour tokens the reported
  PSNR/SSIM compared with the truth's VAE round trip (gray for `pixels:4:gray`, so a gray model was
  not charged for colour); those numbers are kept as `psnr_vae_space` / `ssim_vae_space`;
- controllability: the player's and the opponent's positions read from every frame by small
  detectors (`magi.world.detect`; Boxing's white and black boxers), whose own error on real frames is
  measured against the emulator's RAM; their error per horizon step with the true actions, with the
  actions of another rollout ("shuffled") and with the null action. Positions are compared with the
  sprite found in the emulator's frame;
- `--play-setting`: the same again at each model's play setting (its play.json), next to the
  evaluation setting (default 4 mask x 10 DDIM steps);
- `--stream-frames N`: an N-frame stream as `magi play` runs it (`magi.world.stream_check`): how often both
  sprites are found in the model's frames and the ms per frame, per 1,000 frames.

    magi eval world-model runs/atari_ctf runs/atari_mtf --out results/world_model --rollouts 64
    magi eval world-model pretrained/atari --out results/world_model/shipped --play-setting
    magi eval world-model pretrained/atari --out results/world_model --rollouts 0 --stream-frames 10000

Legend: R rollouts, L = k + H frames, A actions.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from magi.world.detect import PlayerDetector, calibrate, opponent_detector, player_detector
from magi.world.stream_check import frame_layout, stream_check, stream_cost, write_stream_check


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
    from magi.world.atari import load_ram

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
             batch_size: int = 64, progress: bool = True, window: Optional[int] = None,
             cfg: float = 1.0) -> torch.Tensor:
    """Continue `context` uint8 (R, k, 3, H, W) to `length` frames under `actions` (R, >= length-1)
    with a sliding window (of `window` frames; default the training length), guided towards the
    actions by `cfg`.
    -> uint8 (R, length, 3, H, W) (context included, through the VAE round trip)."""
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
                              temperature=temperature, cfg=cfg, generator=gen, long_video="window",
                              progress=progress, window=window)  # (b, L, C, h, w)
        out.append(to_uint8(vae.decode(pred.float())).cpu())  # (b, L, 3, H, W)
    return torch.cat(out)


def pooled_psnr(pred: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """PSNR per frame from the squared error pooled over rollouts: uint8 (R, L, ...) -> L values."""
    from magi.data import to_float_video
    from magi.visualize import psnr

    return psnr(to_float_video(pred), to_float_video(truth), dims=(0, -3, -2, -1)).tolist()


def position_error(detector: PlayerDetector, pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per frame: mean distance (px at 64x64) between the sprite `detector` finds in `pred` and in
    `truth`, over rollouts where the truth shows it; a prediction without the sprite counts as missing
    (its rate is reported) and is scored at the frame's half-diagonal, not dropped."""
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

METRICS = {  # written into world_model.json: what each number is
    "psnr": "colour PSNR (dB) per horizon step against the emulator's RGB frames, from the squared error "
            "pooled over rollouts (peak-to-peak 2 in [-1, 1])",
    "ssim": "colour SSIM per horizon step against the emulator's RGB frames (magi.evaluate.metrics.ssim: "
            "per RGB channel, channels averaged), mean over rollouts",
    "psnr_vae_space": "the same PSNR against the truth's VAE round trip (what the evaluation reported as "
                      "'psnr' before colour: gray for a pixels:F:gray VAE, so a gray model is not "
                      "charged for the colour it cannot draw, nor any VAE for its own loss)",
    "ssim_vae_space": "SSIM against the truth's VAE round trip (the former 'ssim')",
    "error_px": "the player's position error per step (px at 64x64), detector on the prediction vs on the "
                "emulator's frame; a missing sprite scores the half-diagonal",
    "opponent": "the same for the opponent (Boxing: the black boxer)",
    "copy_last_frame": "baseline: the last real context frame repeated (colour for the colour metrics, its "
                       "VAE round trip for the *_vae_space ones)",
}


@dataclass
class WorldModelEvalConfig:
    context_frames: int = 0  # real frames given; 0 = the model's training length minus one
    horizon: int = 32
    rollouts: int = 64
    mask_steps: int = 4
    diffusion_steps: int = 10
    sampler: str = "ddim"
    temperature: float = 1.0
    cfg: float = 1.0  # action guidance (`Magi.stream`): > 1 weighs what the key changes more
    seed: int = 0
    batch_size: int = 64
    window: int = 0  # frames the sliding window holds, the new one included; 0 = the training length
    play_setting: bool = False  # also evaluate each model at its play setting (`at_play_setting`)
    policy: str = "recorded"  # whose keys: EVAL_POLICIES; several, comma-separated, on the command line


#: The evaluation's policies: "recorded" is the training recordings' held-out (val) episodes, played by
#: their recording policy (today's `mix`: sticky and scripted-agent episodes); "person" records fresh
#: episodes played by `magi.world.policies.PersonPlayer` (keys held 1-60 frames, ropes, corners,
#: clinches) on emulator seeds never recorded for training (record seed EVAL_RECORD_SEED + the
#: evaluation's seed; the training configs record with seed 0), the same 8 episodes of EVAL_PERSON_FRAMES
#: frames for every model, whatever its training recordings' length, in the model's frame layout.
EVAL_POLICIES = ("recorded", "person")
EVAL_RECORD_SEED = 1_000_003
EVAL_PERSON_FRAMES = 1000


def evaluation_data_options(options: dict, policy: str, seed: int = 0) -> dict:
    """The `atari` dataset options of the held-out episodes an evaluation policy plays on, from the
    training run's data options. ValueError for an unknown policy, or a person seed the run trained on."""
    options = dict(options)
    if policy == "recorded":
        return {**options, "split": "val"}
    if policy != "person":
        raise ValueError(f"--policy: expected one or more of {', '.join(EVAL_POLICIES)}, got {policy!r}")
    record_seed = EVAL_RECORD_SEED + seed
    if record_seed == options.get("record_seed", 0):
        raise ValueError(f"--policy person: record seed {record_seed} is the training recordings' own")
    root = Path(options.get("root", "data_cache/atari"))
    return {**options, "root": str(root.with_name(f"{root.name}_eval_person_seed{record_seed}")),
            "policy": "person", "record_seed": record_seed, "episodes": 0, "max_frames": EVAL_PERSON_FRAMES,
            "val_episodes": options.get("val_episodes") or 8, "split": "val"}


def play_setting_of(path: str | Path) -> dict:
    """The sampler setting `magi play` runs a model folder at (its play.json, else play's default;
    `magi.play.server.play_setting`), with where it came from."""
    from magi.play.server import play_setting

    setting, threads = play_setting(Path(path))
    source = Path(path) / "play.json"
    return {"mask_steps": setting.mask_steps, "diffusion_steps": setting.diffusion_steps,
            "sampler": setting.sampler, "temperature": setting.temperature, "threads": threads,
            "window": setting.window, "cfg": setting.cfg,
            "source": str(source) if source.is_file() else "magi play's default (no play.json)"}


def score_frames(pred: torch.Tensor, real: torch.Tensor, vae_truth: torch.Tensor,
                 detectors: dict[str, PlayerDetector], pred_vae: Optional[torch.Tensor] = None) -> dict:
    """Scores of predicted frames uint8 (R, H', 3, H, W) against the emulator's `real` frames and their
    VAE round trip `vae_truth` (same shapes): colour PSNR/SSIM against `real`, the same against
    `vae_truth` (`*_vae_space`; `pred_vae` stands in for `pred` there, for the copy baseline), and
    the position error of each sprite in `detectors` ({"player": ..., "opponent": ...}) against the
    sprite found in `real` (the player's at the top level, the others under their name)."""
    from magi.evaluate.metrics import ssim

    pv = pred if pred_vae is None else pred_vae
    out = {"psnr": pooled_psnr(pred, real), "ssim": ssim(pred, real).mean(dim=0).tolist(),
           "psnr_vae_space": pooled_psnr(pv, vae_truth), "ssim_vae_space": ssim(pv, vae_truth).mean(dim=0).tolist()}
    for sprite, detector in detectors.items():
        error = position_error(detector, pred, real)
        if sprite == "player":
            out.update(error)
        else:
            out[sprite] = error
    return out


def _summary(runs: dict, base: dict) -> dict:
    """One model at one setting in a few numbers: errors over the first 8 steps, PSNR/SSIM means and
    steps above copying."""
    true, shuf, null = runs["true_actions"], runs["shuffled_actions"], runs["null_action"]
    e8, s8 = _mean(true["error_px"], 0, 8), _mean(shuf["error_px"], 0, 8)
    above = lambda key: int(sum(a > b for a, b in zip(true[key], base[key])))  # noqa: E731
    out = {
        "player_error_first8_px": e8, "player_error_first8_shuffled_px": s8,
        "player_error_first8_null_px": _mean(null["error_px"], 0, 8),
        "shuffled_over_true_first8": (s8 / e8) if e8 and s8 else None,
        "psnr_mean": float(np.mean(true["psnr"])), "ssim_mean": float(np.mean(true["ssim"])),
        "psnr_above_copy_steps": above("psnr"),
        "psnr_step1_above_copy_db": float(true["psnr"][0] - base["psnr"][0]),
        "psnr_mean_vae_space": float(np.mean(true["psnr_vae_space"])),
        "ssim_mean_vae_space": float(np.mean(true["ssim_vae_space"])),
        "psnr_above_copy_steps_vae_space": above("psnr_vae_space"),
    }
    if "opponent" in true:
        out.update({f"opponent_error_first8{suffix}_px": _mean(r["opponent"]["error_px"], 0, 8)
                    for suffix, r in (("", true), ("_shuffled", shuf), ("_null", null))})
    return out


def evaluate_world_model(checkpoints: dict[str, str], out_dir: str | Path,
                         config: WorldModelEvalConfig = WorldModelEvalConfig(), data_root: Optional[str] = None,
                         device: str = "cpu", progress: bool = True, gif_rollouts: int = 6) -> dict:
    """Evaluate world-model checkpoints ({name: checkpoint or run dir}) on the same held-out rollouts
    at the config's sampler setting (and, with `config.play_setting`, again at each model's play
    setting, under `at_play_setting`); write `world_model.json`, `world_model.png` (curves) and per
    model two GIFs of the emulator (colour) next to the model: `rollouts_NAME.gif` (the first
    `gif_rollouts` rollouts) and `rollouts_NAME_worst.gif` (the rollouts with the largest player
    error over the first 8 frames, listed in the JSON)."""
    from magi.checkpoint import training_behind
    from magi.data import build_dataset
    from magi.pretrained import load_pretrained

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: load_pretrained(path, device=device) for name, path in checkpoints.items()}
    first = next(iter(loaded.values()))
    from magi.play.loop import opening_frames

    c = replace(config, context_frames=config.context_frames or opening_frames(first.model.config))
    length = c.context_frames + c.horizon
    for name, ckpt in loaded.items():
        if ckpt.model.config.num_actions == 0:
            raise ValueError(f"{checkpoints[name]}: not an action-conditioned model (num_actions=0)")
    data = (first.run_config or {}).get("data") or {}
    if data.get("kind") != "atari":
        raise ValueError(f"{checkpoints[next(iter(checkpoints))]}: trained on data.kind="
                         f"{data.get('kind')!r}; the world-model evaluation reads Atari recordings")
    options = dict(data.get("options") or {})
    layouts = {name: frame_layout(ckpt) for name, ckpt in loaded.items()}
    if len(set(layouts.values())) > 1:
        raise ValueError(f"the checkpoints see frames in different layouts ({layouts}); evaluate them apart")
    if data_root is not None:
        options["root"] = data_root
    options = evaluation_data_options(options, c.policy, c.seed)
    options.update(num_frames=length, interval=1)
    dataset = build_dataset("atari", **options)
    game = options.get("game", "Pong")
    game = game if isinstance(game, str) else game[0]
    detectors = {"player": player_detector(game)}
    if opponent_detector(game) is not None:
        detectors["opponent"] = opponent_detector(game)
    rollouts = held_out_rollouts(dataset, c.rollouts, length, c.seed)

    real = rollouts.frames  # (R, L, 3, H, W) uint8: the emulator's colour frames
    truth = _round_trip(first.vae, real, device)  # (R, L, 3, H, W) uint8: as the (first) VAE sees them
    k = c.context_frames
    calib = {sprite: calibrate(d, real.flatten(0, 1), rollouts.ram.reshape(-1, 128)) for sprite, d in detectors.items()}

    def copy_last(frames: torch.Tensor) -> torch.Tensor:  # (R, L, 3, H, W): the last context frame held
        return frames[:, k - 1:k].expand(-1, c.horizon, -1, -1, -1)

    base = score_frames(copy_last(real), real[:, k:], truth[:, k:], detectors, pred_vae=copy_last(truth))
    variants = {"true_actions": rollouts.actions,
                "shuffled_actions": rollouts.actions.roll(1, dims=0),  # every rollout: the next one's actions
                "null_action": torch.full_like(rollouts.actions, -1)}
    result = {"game": game, "config": asdict(c), "metrics": METRICS, "rollout_sources": rollouts.sources,
              "policy": {"name": c.policy, "recordings": {k: options.get(k) for k in
                                                          ("root", "policy", "record_seed", "val_episodes")}},
              "detector": {"game": game, "ram_bytes": list(detectors["player"].ram_bytes),
                           "on_real_frames": calib["player"]},
              "opponent_detector": None if "opponent" not in detectors else {
                  "game": game, "ram_bytes": list(detectors["opponent"].ram_bytes),
                  "on_real_frames": calib["opponent"]},
              "baselines": {"copy_last_frame": base}, "models": {}}

    def at_setting(ckpt, setting: dict) -> tuple[dict, torch.Tensor]:
        """The three action variants at one sampler setting -> (runs, true-action predictions)."""
        vae_truth = truth if ckpt.vae_spec == first.vae_spec else _round_trip(ckpt.vae, real, device)
        runs, videos = {}, {}
        for variant, acts in variants.items():
            videos[variant] = roll_out(ckpt.model, ckpt.vae, real[:, :k], acts, length,
                                       mask_steps=setting["mask_steps"], diffusion_steps=setting["diffusion_steps"],
                                       sampler=setting["sampler"], temperature=c.temperature, seed=c.seed,
                                       batch_size=c.batch_size, progress=progress, window=setting.get("window"),
                                       cfg=setting["cfg"])
            runs[variant] = score_frames(videos[variant][:, k:], real[:, k:], vae_truth[:, k:], detectors)
        runs["summary"] = _summary(runs, base)
        runs["cost"] = stream_cost(ckpt, game, setting, seed=c.seed)
        runs["summary"]["cpu_ms_per_frame"] = runs["cost"]["cpu_ms_per_frame_median"]
        return runs, videos["true_actions"]

    videos = {}
    for name, ckpt in loaded.items():
        model = ckpt.model
        setting = {"mask_steps": c.mask_steps, "diffusion_steps": c.diffusion_steps, "sampler": c.sampler,
                   "window": c.window or None, "cfg": c.cfg}
        runs, videos[name] = at_setting(ckpt, setting)
        runs["setting"] = setting
        per_rollout = np.array([np.nan if v is None else v
                                for v in runs["true_actions"]["rollout_error_first8_px"]])
        scored = np.flatnonzero(~np.isnan(per_rollout))
        worst = [int(i) for i in scored[np.argsort(-per_rollout[scored], kind="stable")][:gif_rollouts]]
        runs["worst_rollouts"] = [{"rollout": i, "player_error_first8_px": float(per_rollout[i]),
                                   **rollouts.sources[i]} for i in worst]
        if c.play_setting:
            play = play_setting_of(checkpoints[name])
            play_runs, _ = at_setting(ckpt, play)
            runs["at_play_setting"] = {"setting": play, **play_runs}
        record = Path(ckpt.path) / "training.json"  # an exported model: the step it was exported at
        step = ckpt.step if ckpt.step is not None or not record.is_file() else json.loads(record.read_text()).get("steps")
        runs["model"] = {"checkpoint": ckpt.path, "step": step, "ema": ckpt.ema,
                         "teacher_forcing": model.config.teacher_forcing, "vae": ckpt.vae_spec,
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "trained": training_behind(ckpt.path)}  # recorded now: the folder may change
        result["models"][name] = runs
    gifs = {}  # GIF name -> (rollout indices, predictions): the first rollouts and the worst ones
    for name, pred in videos.items():
        gifs[name] = list(range(min(gif_rollouts, len(pred)))), pred
        gifs[f"{name}_worst"] = [w["rollout"] for w in result["models"][name]["worst_rollouts"]], pred
    result["files"] = _write_outputs(out, result, real, gifs, k)
    (out / "world_model.json").write_text(json.dumps(result, indent=1))
    return result


def _round_trip(vae, frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 frames through the VAE and back, as the model sees them."""
    from magi.data import to_float_video
    from magi.video_io import to_uint8

    with torch.no_grad():
        return to_uint8(vae.decode(vae.encode(to_float_video(frames.to(device))))).cpu()


def _write_outputs(out: Path, result: dict, truth: torch.Tensor, gifs: dict, k: int) -> list[str]:
    """Curves (colour PSNR, player error) in one PNG; GIFs of truth | prediction, one per entry of
    `gifs` ({name: (rollout indices, predictions (R, L, 3, H, W))}), the predicted frames framed in red."""
    from matplotlib.figure import Figure

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
    ax1.set(xlabel="horizon step", ylabel="colour PSNR (dB, pooled)", title=f"{result['game']}: frames vs emulator")
    ax2.set(xlabel="horizon step", ylabel="player position error (px at 64x64)", title="controllability")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "world_model.png")
    files = ["world_model.png"]
    for name, (indices, pred) in gifs.items():
        files.append(write_rollout_gif(out / f"rollouts_{name}.gif", truth, pred, indices, k).name)
    return files


def write_rollout_gif(path: Path, truth: torch.Tensor, pred: torch.Tensor, indices: list[int], k: int,
                      fps: float = 8) -> Path:
    """A GIF of the rollouts `indices`, one row each: the emulator | the model, enlarged to ~128 px,
    the model's frames after the `k` context frames framed in red. truth, pred: uint8 (R, L, 3, H, W)."""
    from magi.video_io import side_by_side, write_gif
    from magi.visualize import mark_frames, stack_rows, upscale

    scale = max(1, 128 // truth.shape[-1])
    rows = [side_by_side(upscale(truth[i].permute(0, 2, 3, 1).numpy(), scale),
                         mark_frames(upscale(pred[i].permute(0, 2, 3, 1).numpy(), scale), k)) for i in indices]
    return write_gif(path, stack_rows(rows), fps=fps)


# --------------------------------------------------------------------------------------------------
# magi eval world-model


def add_arguments(p: argparse.ArgumentParser) -> None:
    from magi.pretrained import add_device_argument

    p.add_argument("checkpoints", nargs="+", help="checkpoint or run directories (NAME=PATH to name one)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-root", help="the recordings' root (default: the checkpoint's data.options.root)")
    d = WorldModelEvalConfig()
    for field, value in asdict(d).items():
        if isinstance(value, bool):
            continue
        text = {"rollouts": "held-out rollouts (0: no rollout evaluation, e.g. with --stream-frames only)",
                "policy": "whose keys (comma-separated for several, side by side in policies.json): recorded (the "
                          "training recordings' held-out episodes) or person (fresh PersonPlayer episodes on seeds "
                          "never recorded for training)"}.get(field)
        p.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value, help=text)
    p.add_argument("--play-setting", action="store_true",
                   help="also evaluate each model at its play setting (the mask and diffusion steps of its "
                   "play.json, as `magi play`), next to the setting above; both go into world_model.json")
    p.add_argument("--stream-frames", type=int, default=0,
                   help="also stream this many frames from each model at its play setting, as `magi play` "
                   "does, and measure how often both boxers are found and the ms per frame per 1,000 "
                   "frames (stream_NAME.json, stream_NAME.png); 10000 for the issue-19 check")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict:
    named = {}
    for item in args.checkpoints:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        named[name] = path
    if args.rollouts < 0 or args.stream_frames < 0:
        raise ValueError(f"--rollouts and --stream-frames: expected >= 0, got {args.rollouts}, {args.stream_frames}")
    if args.rollouts == 0 and args.stream_frames == 0:
        raise ValueError("--rollouts 0 and no --stream-frames: nothing to evaluate")
    from magi.pretrained import pick_device

    args.device = str(pick_device(args.device))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = {}
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    for policy in policies:
        if policy not in EVAL_POLICIES:
            raise ValueError(f"--policy: expected one or more of {', '.join(EVAL_POLICIES)} (comma-separated), "
                             f"got {policy!r}")
    if args.rollouts:
        fields = asdict(WorldModelEvalConfig())
        by_policy = {}
        for policy in policies:  # several: one folder each, and policies.json side by side
            config = WorldModelEvalConfig(**{**{f: getattr(args, f) for f in fields}, "policy": policy})
            out = Path(args.out) if len(policies) == 1 else Path(args.out) / policy
            by_policy[policy] = evaluate_world_model(named, out, config, args.data_root, args.device,
                                                     progress=not args.no_progress)
            print(f"policy {policy}:")
            print(format_table(by_policy[policy]))
            print(f"-> {out / 'world_model.json'}")
        result = by_policy[policies[0]] if len(policies) == 1 else {"policies": by_policy}
        if len(policies) > 1:
            side = policies_side_by_side(by_policy)
            (Path(args.out) / "policies.json").write_text(json.dumps(side, indent=1))
            print(format_policies(side))
            print(f"-> {Path(args.out) / 'policies.json'}")
    if args.stream_frames:
        from magi.pretrained import load_pretrained

        result["streams"] = {}
        for name, path in named.items():
            ckpt = load_pretrained(path, device=args.device)
            setting = play_setting_of(path)
            game = ((ckpt.run_config or {}).get("data") or {}).get("options", {}).get("game")
            game = game[0] if isinstance(game, (list, tuple)) else game
            if not isinstance(game, str):
                raise ValueError(f"{path}: its train_config.yaml names no Atari game (data.options.game)")
            report, snapshots = stream_check(ckpt, game, args.stream_frames, setting["mask_steps"],
                                             setting["diffusion_steps"], setting["sampler"], args.temperature,
                                             args.seed, progress=not args.no_progress, window=setting["window"],
                                             cfg=setting["cfg"])
            report = {"model": str(path), "play_setting_source": setting["source"], **report}
            files = write_stream_check(Path(args.out), name, report, snapshots)
            result["streams"][name] = report
            print(format_stream(name, report))
            print(f"-> {files[0]}")
    return result


def format_table(result: dict) -> str:
    lines = []
    for key, label in (("detector", "player"), ("opponent_detector", "opponent")):
        if result.get(key):
            calib = result[key]["on_real_frames"]
            lines.append(f"{result['game']}: {label} detector on real frames, error vs RAM "
                         f"{calib['mean_error_px']:.2f} px (found in {calib['found_rate']:.0%})")
    fmt = lambda v: "  n/a" if v is None else f"{v:5.2f}"  # noqa: E731
    horizon = result["config"]["horizon"]
    lines.append("colour PSNR/SSIM vs the emulator (VAE space: vs its round trip); errors over steps 1-8, px")
    lines.append("model      setting   step   PSNR   SSIM  >copy  PSNR(vae)  player true / shuf / null  "
                 "shuf/true  opponent true / shuf / null")
    for name, runs in result["models"].items():
        step = runs["model"]["step"]
        for r in (runs, runs.get("at_play_setting")):
            if r is None:
                continue
            s, st = r["summary"], r["setting"]
            lines.append(f"{name:10s} {setting_label(st):9s} {'-' if step is None else step:>6} "
                         f"{s['psnr_mean']:6.2f} {s['ssim_mean']:6.3f} {s['psnr_above_copy_steps']:3d}/{horizon}  "
                         f"{s['psnr_mean_vae_space']:6.2f}     {fmt(s['player_error_first8_px'])} / "
                         f"{fmt(s['player_error_first8_shuffled_px'])} / {fmt(s['player_error_first8_null_px'])}"
                         f"     {fmt(s['shuffled_over_true_first8'])}     "
                         f"{fmt(s.get('opponent_error_first8_px'))} / {fmt(s.get('opponent_error_first8_shuffled_px'))}"
                         f" / {fmt(s.get('opponent_error_first8_null_px'))}")
    base = result["baselines"]["copy_last_frame"]
    opp = base.get("opponent")
    lines.append(f"copy-last  {'':16s} {np.mean(base['psnr']):6.2f} {np.mean(base['ssim']):6.3f}        "
                 f"{np.mean(base['psnr_vae_space']):6.2f}     {fmt(_mean(base['error_px'], 0, 8))}"
                 + ("" if opp is None else f"{'':32s}{fmt(_mean(opp['error_px'], 0, 8))}"))
    return "\n".join(lines)


def policies_side_by_side(by_policy: dict) -> dict:
    """{model: {policy: summary + copy-last errors}} for the same models under several policies."""
    side: dict = {}
    for policy, result in by_policy.items():
        base = result["baselines"]["copy_last_frame"]
        copy = {"copy_last_player_first8_px": _mean(base["error_px"], 0, 8),
                "copy_last_opponent_first8_px": _mean(base["opponent"]["error_px"], 0, 8) if "opponent" in base else None,
                "copy_last_psnr_mean": float(np.mean(base["psnr"]))}
        for name, runs in result["models"].items():
            for r in (runs, runs.get("at_play_setting")):
                if r is None:
                    continue
                s = r["summary"]
                e8, c8 = s["player_error_first8_px"], copy["copy_last_player_first8_px"]
                side.setdefault(f"{name} {setting_label(r['setting'])}", {})[policy] = {
                    **s, **copy, "copy_over_true_first8": (c8 / e8) if e8 and c8 else None,
                    "recordings": result["policy"]["recordings"], "rollouts": result["config"]["rollouts"],
                    "horizon": result["config"]["horizon"]}
    return side


def format_policies(side: dict) -> str:
    fmt = lambda v: "  n/a" if v is None else f"{v:5.2f}"  # noqa: E731
    lines = ["player / opponent error over steps 1-8 (px), by the policy that pressed the keys",
             "model / setting        policy    player true  shuffled  null   copy   shuf/true  copy/true  "
             "opponent  copy   PSNR  copy  >copy"]
    for label, per in side.items():
        for policy, s in per.items():
            lines.append(f"{label:22s} {policy:9s} {fmt(s['player_error_first8_px'])}       "
                         f"{fmt(s['player_error_first8_shuffled_px'])}  {fmt(s['player_error_first8_null_px'])}  "
                         f"{fmt(s['copy_last_player_first8_px'])}  {fmt(s['shuffled_over_true_first8'])}      "
                         f"{fmt(s['copy_over_true_first8'])}      {fmt(s.get('opponent_error_first8_px'))}     "
                         f"{fmt(s['copy_last_opponent_first8_px'])} {s['psnr_mean']:6.2f} {s['copy_last_psnr_mean']:5.2f}"
                         f"  {s['psnr_above_copy_steps']}/{s['horizon']}")
    return "\n".join(lines)


def setting_label(setting: dict) -> str:
    """"m1-d5" (mask x diffusion steps), "m1-d5-w3" with a sliding window of 3 frames."""
    label = f"m{setting['mask_steps']}-d{setting['diffusion_steps']}"
    return label + (f"-w{setting['window']}" if setting.get("window") else "")


def format_stream(name: str, report: dict) -> str:
    st = report["setting"]
    lines = [f"{name}: {report['frames']} frames streamed at {setting_label(st)} "
             f"{st['sampler']}, {report['torch_threads']} thread(s): both boxers found in "
             f"{report['both_detected_fraction']:.1%} (target 95%: {'met' if report['passes'] else 'missed'}), "
             f"longest loss {report['longest_run_without_both']} frames",
             "frames          ms p50   ms p95  CPU ms p50   both   " + "   ".join(report["sprites"])]
    for b in report["blocks"]:
        cpu = f"{b['cpu_ms_median']:10.1f}" if "cpu_ms_median" in b else f"{'-':>10}"
        lines.append(f"{b['frames'][0]:>6}-{b['frames'][1]:<6}  {b['ms_median']:6.1f}   {b['ms_p95']:6.1f}  {cpu}   "
                     f"{b['both_detected']:.3f}  " + "   ".join(f"{b[f'{s}_detected']:.3f}" for s in report["sprites"]))
    return "\n".join(lines)


__all__ = ["held_out_rollouts", "roll_out", "score_frames", "evaluate_world_model", "WorldModelEvalConfig",
           "play_setting_of", "format_table", "format_stream"]


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(0 if run(parser.parse_args()) else 1)
