"""Atari through the Arcade Learning Environment (ROMs bundled with `ale-py`): the emulator every
recording, evaluation and play session uses (`atari_env`), recording episodes (`record_atari`), reading
their actions and RAM back (`load_actions`, `load_ram`), and the `atari` dataset
(`magi.data.build_dataset("atari", ...)`): real game dynamics through the same decoding path as a
downloaded dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from magi.video_io import write_lossless
from magi.world.policies import atari_policy


#: How a 210x160 screen becomes a frame (`resize_frame`): "screen" area-resizes the whole screen; "hud" does
#: the same, then draws Boxing's score strip over the frame's top HUD_ROWS rows at the screen's own
#: resolution (the area-resize leaves a digit 2 px tall, which no tokenizer keeps legible). The strip
#: replaces only rows that show the score line and the clock in the resized screen (screen rows 0-22;
#: the ring's top rope starts at row 25), so the ring, the boxers and their pixel positions are the same
#: in both layouts. "hud_lag" is "hud" with the strip drawn from the screen before (`previous`): the score a
#: punch lands on frame t shows on frame t + 1, so a model that predicts frames sees the punch in its context
#: before it has to draw the new score (on the punch's own frame the digits change with nothing to foresee it).
FRAME_LAYOUTS = ("screen", "hud", "hud_lag")
HUD_LAYOUTS = ("hud", "hud_lag")
HUD_ROWS = 7
#: The strip's three blocks, left to right, as (screen rows, screen columns): the player's score (white),
#: the clock, the opponent's score (black); 16 + 32 + 16 = 64 columns, each digit 7 rows by 6 columns.
BOXING_HUD = (((5, 12), (38, 54)), ((17, 24), (62, 94)), ((5, 12), (102, 118)))


def check_layout(layout: str, size, game, who: str = "layout") -> None:
    """ValueError unless `layout` is one of FRAME_LAYOUTS and, for a hud layout, the game is Boxing at width 64."""
    if layout not in FRAME_LAYOUTS:
        raise ValueError(f"{who}: expected one of {list(FRAME_LAYOUTS)}, got {layout!r}")
    if layout in HUD_LAYOUTS:
        games = [game] if isinstance(game, str) else list(game)
        width = size if isinstance(size, int) else (None if size is None else tuple(size)[1])
        if games != ["Boxing"] or width != 64:
            raise ValueError(f"{who}: {layout!r} draws Boxing's score strip into 64-wide frames; got game {game!r}, "
                             f"size {size!r}")


def resize_frame(obs: np.ndarray, size, layout: str = "screen", previous: np.ndarray | None = None) -> np.ndarray:
    """(210, 160, 3) ALE screen -> uint8 (3, H, W): the whole screen, area-resized (no crop); with
    layout "hud", Boxing's score strip at full resolution over the top HUD_ROWS rows (FRAME_LAYOUTS); with
    "hud_lag", the strip of `previous`, the screen one step before (None on an episode's first frame: its own)."""
    frame = torch.from_numpy(obs).permute(2, 0, 1)  # (3, 210, 160)
    if size is None:
        return frame.numpy()
    hw = (size, size) if isinstance(size, int) else tuple(size)
    out = torch.nn.functional.interpolate(frame[None].float(), size=hw, mode="area")[0]  # (3, H, W)
    out = out.round().clamp(0, 255).to(torch.uint8)
    if layout in HUD_LAYOUTS:
        source = torch.from_numpy(previous).permute(2, 0, 1) if layout == "hud_lag" and previous is not None else frame
        strip = [source[:, r0:r1, c0:c1] for (r0, r1), (c0, c1) in BOXING_HUD]  # 3 x (3, 7, w)
        out[:, :HUD_ROWS] = torch.cat(strip, dim=2)  # (3, 7, 64)
    elif layout != "screen":
        raise ValueError(f"resize_frame.layout: expected one of {list(FRAME_LAYOUTS)}, got {layout!r}")
    return out.numpy()


def resize_screens(screens, size, layout: str = "screen") -> np.ndarray:
    """Consecutive (210, 160, 3) screens of one episode, from its first -> uint8 (T, 3, H, W), each drawn by
    `resize_frame` with the screen before it as `previous` (what "hud_lag" draws its strip from)."""
    return np.stack([resize_frame(s, size, layout, screens[i - 1] if i else None) for i, s in enumerate(screens)])


def noop_opening(env, seed: int, count: int, noop: int) -> list:
    """The first `count` raw (210, 160, 3) screens of a fresh episode: `env.reset(seed=seed)`, then NOOPs, as
    `magi play`, the env's `reset` and the stream check open an episode (draw them with `resize_screens`)."""
    screens = [env.reset(seed=seed)[0]]
    while len(screens) < count:
        screens.append(env.step(noop)[0])
    return screens


def atari_env(game: str, frameskip: int = 4, who: str = "atari_env"):
    """The emulator every recording, evaluation and play session uses: gymnasium's `ALE/<game>-v5`
    (its sticky actions included) with the game's minimal action set. ValueError for an unknown game."""
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    env_id = f"ALE/{game}-v5"
    if env_id not in gymnasium.envs.registry:
        raise ValueError(f"{who}: unknown game {game!r} (no {env_id} in gymnasium's registry)")
    return gymnasium.make(env_id, frameskip=frameskip, full_action_space=False)


ATARI_CODECS = {"ffv1": ".mkv", "h264": ".mp4"}  # lossless FFV1 in Matroska; lossy H.264 for viewing


def record_atari(
    out_dir,
    game: str | list[str] = "Pong",
    episodes: int = 4,
    max_frames: int = 1000,
    size=64,
    policy="sticky",
    seed: int = 0,
    frameskip: int = 4,
    codec: str = "ffv1",
    agent_noise: float = 0.25,
    layout: str = "screen",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Play ALE games and write each episode as `out_dir/<Game>/episode_<k>.mkv` with its actions.

    Beside each video: `episode_<k>.actions.npy` (int64, one per frame: the action taken at that frame,
    leading to the next; -1 after the last frame), `episode_<k>.ram.npy` (uint8 (T, 128): the
    emulator's RAM at each frame, the ground truth for detectors) and `episode_<k>.json` (game, seed,
    policy, frameskip, fps, action meanings, per-frame rewards (`rewards[t]`: the emulator's reward on
    arriving at frame t), total reward, `game_over` and `terminated`: the episode ended at its last frame,
    by the game's rules rather than the emulator's time limit; `load_rewards`). The folder-per-game
    layout is the one `VideoFolder` reads (label = game index in sorted order).

    Args:
        game: ALE game name(s), e.g. "Pong", "Breakout", "Boxing" (ROMs are bundled with ale-py).
        episodes: episodes per game; each ends at game over or after `max_frames` frames.
        size: frame size, int or (H, W); the whole 210x160 screen is area-resized. None keeps it.
        policy: "random", "sticky" (repeat the previous action with probability 0.75), "agent" (the
            game's scripted player, `ATARI_AGENTS`, with `agent_noise`), "mix" (sticky and agent
            episodes alternating) or a callable (observation uint8 (210, 160, 3), numpy Generator) -> action.
        seed: seeds the environment (ALE v5 sticky actions) and the policy, per episode.
        frameskip: emulator frames per step; the video plays at 60 / frameskip fps.
        codec: "ffv1" (lossless: decoded frames equal the emulator's exactly; `.mkv`) or "h264"
            (`.mp4`, lossy: a one-pixel ball smears).
        layout: how the screen becomes a frame: "screen", "hud" (Boxing's score strip kept legible) or
            "hud_lag" (the strip one frame late); FRAME_LAYOUTS. Rewards and RAM stay the emulator's own.
        overwrite: re-record episodes whose files exist (otherwise they are kept, so calls are idempotent).

    Returns the paths of the episode videos.
    """
    from tqdm.auto import tqdm

    from magi.video_io import write_mp4

    games = [game] if isinstance(game, str) else list(game)
    if episodes < 1 or max_frames < 2:
        raise ValueError(f"record_atari: need episodes >= 1 and max_frames >= 2, got {episodes}, {max_frames}")
    check_layout(layout, size, games, "record_atari.layout")
    if codec not in ATARI_CODECS:
        raise ValueError(f"record_atari.codec: expected one of {list(ATARI_CODECS)}, got {codec!r}")
    out_dir = Path(out_dir)
    fps = 60 / frameskip
    written = []
    jobs = [(g, k) for g in games for k in range(episodes)]
    for name, k in tqdm(jobs, desc="recording Atari", unit="episode", disable=not progress):
        video = out_dir / name / f"episode_{k:04d}{ATARI_CODECS[codec]}"
        meta_path = video.with_suffix(".json")
        written.append(video)
        if video.is_file() and meta_path.is_file() and not overwrite:
            recorded = json.loads(meta_path.read_text()).get("layout", "screen")
            if recorded != layout:
                raise ValueError(f"{meta_path}: recorded with layout {recorded!r}, asked for {layout!r}; record into "
                                 "another folder (or pass overwrite=True)")
            continue
        env_id = f"ALE/{name}-v5"
        env = atari_env(name, frameskip, "record_atari")
        meanings = env.unwrapped.get_action_meanings()
        env_seed = int(np.random.SeedSequence([seed, games.index(name), k]).generate_state(1)[0])
        rng = np.random.default_rng([seed, games.index(name), k, 1])
        act, policy_name = atari_policy(policy, name, k, meanings, rng, agent_noise)
        ale = env.unwrapped.ale
        obs, _ = env.reset(seed=env_seed)
        frames, actions, rewards, rams = [resize_frame(obs, size, layout)], [], [0.0], [ale.getRAM().copy()]
        previous = -1
        done = terminated = False
        while not done and len(frames) < max_frames:
            previous = act(obs, rams[-1], previous)
            last_obs = obs
            obs, reward, terminated, truncated, _ = env.step(previous)
            actions.append(previous)
            rewards.append(float(reward))
            frames.append(resize_frame(obs, size, layout, last_obs))
            rams.append(ale.getRAM().copy())
            done = terminated or truncated
        actions.append(-1)
        env.close()
        video.parent.mkdir(parents=True, exist_ok=True)
        if codec == "ffv1":
            write_lossless(video, np.stack(frames), fps=fps)  # (T, 3, H, W)
        else:
            write_mp4(video, np.stack(frames), fps=fps, crf=12)
        np.save(video.with_suffix(".actions.npy"), np.asarray(actions, np.int64))
        np.save(video.with_suffix(".ram.npy"), np.stack(rams))  # (T, 128) uint8
        meta_path.write_text(json.dumps({
            "game": name, "episode": k, "seed": seed, "env_seed": env_seed, "env": env_id,
            "policy": policy_name, "agent_noise": agent_noise if policy_name == "agent" else None,
            "codec": codec, "frameskip": frameskip, "fps": fps, "num_frames": len(frames), "size": size,
            "layout": layout,
            "action_meanings": meanings, "rewards": rewards, "total_reward": sum(rewards),
            "game_over": bool(done), "terminated": bool(terminated),
        }, indent=1))
    return written


def load_ram(video_path) -> np.ndarray:
    """The emulator RAM recorded beside an Atari episode video: uint8 (T, 128), one row per frame."""
    path = Path(video_path).with_suffix(".ram.npy")
    if not path.is_file():
        raise FileNotFoundError(f"no RAM file beside {video_path} (expected {path})")
    return np.load(path, allow_pickle=False)


def load_rewards(video_path) -> tuple[np.ndarray, np.ndarray]:
    """The emulator's per-frame reward and terminal flag of a recorded episode, from its JSON: float32 (T,)
    (`rewards[t]` received on arriving at frame t; 0 at frame 0) and bool (T,) (True at the last frame
    only, when the game ended there). Recordings from before `terminated` was stored read `game_over`
    (the same for Atari, whose episodes are never cut by the emulator's time limit at these lengths)."""
    path = Path(video_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no JSON beside {video_path} (expected {path})")
    meta = json.loads(path.read_text())
    rewards = np.asarray(meta["rewards"], np.float32)
    terminals = np.zeros(len(rewards), bool)
    terminals[-1] = bool(meta.get("terminated", meta.get("game_over", False)))
    return rewards, terminals


def recorded_layout(video_path) -> str:
    """The frame layout an episode was recorded in (FRAME_LAYOUTS; its JSON's `layout`, "screen" before it was stored)."""
    path = Path(video_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no JSON beside {video_path} (expected {path})")
    return json.loads(path.read_text()).get("layout", "screen")


def as_shown(values: np.ndarray, layout: str) -> np.ndarray:
    """Per-frame labels (rewards, RAM) moved to the frames whose score strip shows them: in "hud_lag" frame t
    draws frame t - 1's strip, so its labels are t - 1's (frame 0 keeps its own); in other layouts unchanged.
    For what is read off the strip (score, clock, a score change), never for the boxers' positions."""
    if layout != "hud_lag" or len(values) < 2:
        return values
    return np.concatenate([values[:1], values[:-1]])  # (T, ...)


def load_actions(video_path) -> np.ndarray:
    """The per-frame actions recorded beside an Atari episode video (int64 (T,), -1 after the last frame)."""
    path = Path(video_path).with_suffix(".actions.npy")
    if not path.is_file():
        raise FileNotFoundError(f"no actions file beside {video_path} (expected {path})")
    return np.load(path, allow_pickle=False)


def atari(root, num_frames: int, size=64, game: str | list[str] = "Pong", episodes: int = 4,
          val_episodes: int = 0, split: str = "train", max_frames: int = 1000, policy: str = "sticky",
          record_seed: int = 0, frameskip: int = 4, codec: str = "ffv1", agent_noise: float = 0.25,
          layout: str = "screen", actions: bool = True, **options):
    """Atari recordings as a dataset: record (once) into `root`, then read back with `VideoFolder`.

    Per game, `episodes` training and `val_episodes` validation episodes are recorded (skipped when
    already on disk); the split is by episode (`trainlist.txt` / `vallist.txt` in root) and `split`
    ("train", "val" or "all") picks one. Frames are recorded at `size`, so reading back needs no
    resize; `layout` is how the screen becomes a frame (FRAME_LAYOUTS). Items carry `actions` (see
    `VideoFolder`). `options` go to `VideoFolder`.
    """
    from magi.data.video import VideoFolder

    if split not in ("train", "val", "all"):
        raise ValueError(f"atari.split: expected 'train', 'val' or 'all', got {split!r}")
    if split == "val" and val_episodes < 1:
        raise ValueError("atari.split: 'val' needs val_episodes >= 1")
    games = [game] if isinstance(game, str) else list(game)
    paths = record_atari(root, game=games, episodes=episodes + val_episodes, max_frames=max_frames,
                         size=size, policy=policy, seed=record_seed, frameskip=frameskip, codec=codec,
                         agent_noise=agent_noise, layout=layout, progress=options.get("progress", True))
    root = Path(root)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i, path in enumerate(paths):  # per game: episodes 0..episodes-1 train, the rest validation
        game_name, k = games[i // (episodes + val_episodes)], i % (episodes + val_episodes)
        lists["train" if k < episodes else "val"].append(f"{game_name}/{path.name}")
    (root / "classInd.txt").write_text("".join(f"{i + 1} {g}\n" for i, g in enumerate(games)))
    for name, lines in lists.items():
        (root / f"{name}list.txt").write_text("".join(f"{line}\n" for line in lines))
    split_file = None if split == "all" else root / f"{split}list.txt"
    return VideoFolder(root, num_frames, size, split_file=split_file, actions=actions, **options)
