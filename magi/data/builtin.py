"""Built-in datasets that are generated on this machine: moving digits and Atari recordings.

`MovingDigits` is Moving-MNIST made from scikit-learn's bundled 8x8 handwritten digits: each video
has `num_digits` digits flying in straight lines and bouncing off the canvas borders. The trajectory
is in closed form (a triangle wave per axis), so any frame of any video is computed directly: clips
of any length and any frame interval come from the same underlying video, and the first frames of a
long clip equal the short clip. Everything is a pure function of `(seed, index)` (plus the epoch for
dynamic intervals), so two runs, two workers or two machines see the same data.

`record_atari` plays Arcade Learning Environment games (ROMs bundled with `ale-py`) and writes each
episode as an MP4 plus its per-frame actions, in the class-folder layout `VideoFolder` reads: real
game dynamics through the same decoding path as a downloaded dataset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from magi.data.clips import MAX_INTERVAL, ClipSource, choose_clip, clip_span
from magi.video_io import to_float_video, write_lossless

Interval = Union[int, str]


def _digit_bank(digit_size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upscaled to `digit_size` px: uint8 (K, s, s) images and int64 (K,) labels.

    `split` keeps the first 1,500 images ("train"), the remaining 297 ("test") or all 1,797 ("all"),
    so held-out videos can use digit images never seen in training.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # (K, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    cut = 1500
    if split == "train":
        images, labels = images[:cut], labels[:cut]
    elif split == "test":
        images, labels = images[cut:], labels[cut:]
    elif split != "all":
        raise ValueError(f"MovingDigits.split: expected 'train', 'test' or 'all', got {split!r}")
    if digit_size != 8:
        images = torch.nn.functional.interpolate(
            images[:, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False
        )[:, 0]  # (K, s, s)
    bank = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return bank, labels


def _bounce(x: np.ndarray, span: float) -> np.ndarray:
    """Positions of points moving freely along a line, reflected into [0, span] (a triangle wave)."""
    if span <= 0:
        return np.zeros_like(x)
    m = np.mod(x, 2 * span)
    return span - np.abs(m - span)


class MovingDigits(torch.utils.data.Dataset, ClipSource):
    """Deterministic moving and bouncing handwritten digits, rendered as 3-channel grayscale video.

    Items are dicts: `video` float (T, 3, size, size) in [-1, 1] (black background at -1), `label` the
    class of the first digit, `interval` the frame interval used, `path` a synthetic id such as
    "moving-digits/000012".

    Args:
        num_videos: number of distinct videos (items).
        num_frames: frames per clip (any length; long clips for long-video evaluation are fine).
        size: canvas side in pixels.
        num_digits: digits per video.
        speed: pixels per underlying frame; a number or a (low, high) range drawn per digit.
        digit_size: digit side in pixels (default: half the canvas).
        seed: selects the videos; the same seed gives the same videos.
        interval: frame interval (an int >= 1) or "dynamic": each item draws an interval uniformly
            from 1..max_interval (re-drawn per epoch, see `set_epoch`). With interval k, frame j of the
            clip is frame j*k of the underlying video, so motion per clip frame scales with k.
        max_interval: upper bound of dynamic intervals (the paper's 25).
        split: which digit images to draw from: "train" (first 1,500), "test" (last 297) or "all".
        cache: keep rendered clips in memory (uint8, one channel), keyed by (index, interval).
    """

    def __init__(
        self,
        num_videos: int = 10_000,
        num_frames: int = 16,
        size: int = 32,
        num_digits: int = 2,
        speed: Union[float, tuple[float, float]] = (1.0, 2.0),
        digit_size: int | None = None,
        seed: int = 0,
        interval: Interval = 1,
        max_interval: int = MAX_INTERVAL,
        split: str = "all",
        cache: bool = True,
    ) -> None:
        for name, value in (("num_videos", num_videos), ("num_frames", num_frames), ("size", size),
                            ("num_digits", num_digits), ("max_interval", max_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MovingDigits.{name}: expected a positive integer, got {value!r}")
        if interval != "dynamic" and (isinstance(interval, bool) or not isinstance(interval, int)
                                      or interval < 1):
            raise ValueError(f"MovingDigits.interval: expected an integer >= 1 or 'dynamic', got {interval!r}")
        digit_size = size // 2 if digit_size is None else digit_size
        if not 1 <= digit_size <= size:
            raise ValueError(f"MovingDigits.digit_size: expected 1..{size}, got {digit_size}")
        low, high = (speed, speed) if isinstance(speed, (int, float)) else tuple(speed)
        if not 0 <= low <= high:
            raise ValueError(f"MovingDigits.speed: expected 0 <= low <= high, got {speed!r}")

        self.num_videos, self.num_frames, self.size = num_videos, num_frames, size
        self.num_digits, self.digit_size, self.seed = num_digits, digit_size, seed
        self.interval, self.max_interval, self.split = interval, max_interval, split
        self.epoch = 0
        self.skipped = 0  # nothing is ever skipped; kept so every dataset reports the same counters
        self.too_short = 0
        self._bank, bank_labels = _digit_bank(digit_size, split)
        self._cache: dict[tuple[int, int], np.ndarray] | None = {} if cache else None

        # Per-video parameters, each video from its own seed so video i does not depend on num_videos.
        span = float(size - digit_size)
        self._ids = np.empty((num_videos, num_digits), np.int64)  # which digit image
        self._p0 = np.empty((num_videos, num_digits, 2), np.float64)  # start position (y, x)
        self._v = np.empty((num_videos, num_digits, 2), np.float64)  # velocity (y, x) px/frame
        for i in range(num_videos):
            rng = np.random.default_rng([seed, i, 0, 2])
            self._ids[i] = rng.integers(0, len(self._bank), num_digits)
            self._p0[i] = rng.uniform(0.0, span, (num_digits, 2))
            angle = rng.uniform(0.0, 2 * math.pi, num_digits)
            s = rng.uniform(low, high, num_digits)
            self._v[i] = np.stack([s * np.sin(angle), s * np.cos(angle)], axis=-1)
        self.labels = bank_labels[self._ids[:, 0]]  # (num_videos,) class of the first digit
        self.num_classes = 10

    def __len__(self) -> int:
        return self.num_videos

    def set_epoch(self, epoch: int) -> None:
        """Re-draw dynamic intervals for a new epoch (deterministically from seed, epoch and index)."""
        self.epoch = int(epoch)

    def choose(self, index: int) -> tuple[int, int]:
        """(interval, start) of item `index` in the current epoch; start is always 0 (see `choose_clip`)."""
        return choose_clip(self.seed, self.epoch, index, self.num_frames, None, self.interval, self.max_interval)

    def pick(self, index: int) -> tuple[int, int, int]:
        """(video, interval, start) of item `index`: every item is its own video."""
        return (index, *self.choose(index))

    def interval_for(self, index: int) -> int:
        """The frame interval item `index` uses in the current epoch."""
        return self.choose(index)[0]

    @property
    def full_length(self) -> int:
        """Frames that hold every clip this dataset can draw (what a latent cache stores per video)."""
        longest = self.max_interval if self.interval == "dynamic" else int(self.interval)
        return clip_span(self.num_frames, longest)

    def full_video(self, index: int) -> torch.Tensor:
        """uint8 (full_length, 3, S, S): the first frames of video `index`, enough for any of its clips."""
        return self.frames(index, num_frames=self.full_length, interval=1)

    # ---- the ClipSource interface (magi.data.clips), shared with VideoFolder
    def video_frames(self, index: int) -> None:
        """Generated videos have no end: any start and length are valid."""
        return None

    def label_of(self, index: int) -> int:
        return int(self.labels[index])

    def path_of(self, index: int) -> str:
        return f"moving-digits/{index:06d}"

    def frames(self, index: int, num_frames: int | None = None, interval: int = 1,
               start: int = 0) -> torch.Tensor:
        """uint8 (T, 3, size, size): frames start, start+interval, ... of video `index`."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"MovingDigits: index {index} out of range 0..{self.num_videos - 1}")
        num_frames = self.num_frames if num_frames is None else num_frames
        key = (index, interval) if (start == 0 and num_frames == self.num_frames) else None
        gray = self._cache.get(key) if (self._cache is not None and key is not None) else None
        if gray is None:
            gray = self._render(index, start + interval * np.arange(num_frames))
            if self._cache is not None and key is not None:
                self._cache[key] = gray
        frames = torch.from_numpy(gray)[:, None]  # (T, 1, S, S)
        return frames.expand(-1, 3, -1, -1).contiguous()  # (T, 3, S, S)

    def _render(self, index: int, times: np.ndarray) -> np.ndarray:
        """uint8 (T, S, S) frames of video `index` at the given underlying times."""
        s, span = self.digit_size, float(self.size - self.digit_size)
        pos = self._p0[index][None] + times[:, None, None] * self._v[index][None]  # (T, digits, 2)
        pos = np.rint(_bounce(pos, span)).astype(np.int64)
        canvas = np.zeros((len(times), self.size, self.size), np.uint8)  # (T, S, S)
        for d in range(self.num_digits):
            digit = self._bank[self._ids[index, d]]
            for t in range(len(times)):
                y, x = pos[t, d]
                patch = canvas[t, y:y + s, x:x + s]
                np.maximum(patch, digit, out=patch)
        return canvas

    def __getitem__(self, index: int) -> dict:
        interval, start = self.choose(index)
        return {
            "video": to_float_video(self.frames(index, interval=interval, start=start)),
            "label": self.label_of(index),
            "interval": interval,
            "path": self.path_of(index),
        }

    def __repr__(self) -> str:
        return (f"MovingDigits(num_videos={self.num_videos}, num_frames={self.num_frames}, size={self.size}, "
                f"num_digits={self.num_digits}, interval={self.interval!r}, seed={self.seed})")


# --------------------------------------------------------------------------------------------------
# Atari recordings

ATARI_POLICIES = ("random", "sticky", "agent", "mix")


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _boxing_agent(ram: np.ndarray, meanings: list[str]) -> int:
    """Walk toward the opponent (RAM 32/34: player x/y, 33/35: opponent x/y) and punch when close."""
    dx, dy = int(ram[33]) - int(ram[32]), int(ram[35]) - int(ram[34])
    close = abs(dx) < 30 and abs(dy) < 10
    vertical = {-1: "UP", 0: "", 1: "DOWN"}[_sign(dy) if abs(dy) > 3 else 0]
    horizontal = {-1: "LEFT", 0: "", 1: "RIGHT"}[_sign(dx) if abs(dx) > 28 else 0]
    name = (vertical + horizontal + ("FIRE" if close else "")) or "NOOP"
    return meanings.index(name)


def _pong_agent(ram: np.ndarray, meanings: list[str]) -> int:
    """Keep the paddle (RAM 51) level with the ball (RAM 54); "RIGHT" moves it up."""
    dy = int(ram[54]) - int(ram[51]) - 8
    if int(ram[54]) == 0 or abs(dy) < 4:
        return meanings.index("FIRE")
    return meanings.index("LEFT" if dy > 0 else "RIGHT")


def _breakout_agent(ram: np.ndarray, meanings: list[str]) -> int:
    """Keep the paddle (RAM 72) under the ball (RAM 99); serve when the ball is out (RAM 101 = 0)."""
    if int(ram[101]) == 0:
        return meanings.index("FIRE")
    dx = int(ram[99]) - int(ram[72]) - 8
    return meanings.index("NOOP" if abs(dx) < 4 else ("RIGHT" if dx > 0 else "LEFT"))


def _freeway_agent(ram: np.ndarray, meanings: list[str]) -> int:
    """Cross the road: mostly UP."""
    return meanings.index("UP")


# Scripted players reading the emulator's RAM (addresses as in Anand et al. 2019, AtariARI), so
# recordings show the game progressing instead of a random policy losing the ball in seconds.
ATARI_AGENTS: dict[str, Callable[[np.ndarray, list[str]], int]] = {
    "Boxing": _boxing_agent, "Pong": _pong_agent, "Breakout": _breakout_agent, "Freeway": _freeway_agent,
}


def _atari_policy(policy, game: str, episode: int, meanings: list[str], rng: np.random.Generator,
                  noise: float) -> tuple[Callable, str]:
    """(policy(observation, ram, previous_action) -> action, the policy's name for this episode).

    "sticky" repeats the last action 3 times in 4, else draws uniformly; "agent" is the game's scripted
    player taking a sticky random action with probability `noise`; "mix" alternates the two by episode
    (even episodes sticky, odd ones agent), so the data covers the action space and the game progresses.
    """
    n = len(meanings)
    if policy == "mix":
        policy = "sticky" if episode % 2 == 0 or game not in ATARI_AGENTS else "agent"

    def sticky(prev: int) -> int:
        return prev if (prev >= 0 and rng.random() < 0.75) else int(rng.integers(n))

    if callable(policy):
        return (lambda obs, ram, prev: int(policy(obs, rng))), getattr(policy, "__name__", "callable")
    if policy == "random":
        return (lambda obs, ram, prev: int(rng.integers(n))), policy
    if policy == "sticky":
        return (lambda obs, ram, prev: sticky(prev)), policy
    if policy == "agent":
        if game not in ATARI_AGENTS:
            raise ValueError(f"record_atari.policy: no scripted agent for {game!r}; agents exist for "
                             f"{', '.join(ATARI_AGENTS)}")
        agent = ATARI_AGENTS[game]
        return (lambda obs, ram, prev: sticky(prev) if rng.random() < noise else agent(ram, meanings)), policy
    raise ValueError(f"record_atari.policy: expected one of {ATARI_POLICIES} or a callable, got {policy!r}")


def _resize_frame(obs: np.ndarray, size) -> np.ndarray:
    """(210, 160, 3) ALE screen -> uint8 (3, H, W): the whole screen, area-resized (no crop)."""
    frame = torch.from_numpy(obs).permute(2, 0, 1)  # (3, 210, 160)
    if size is None:
        return frame.numpy()
    hw = (size, size) if isinstance(size, int) else tuple(size)
    out = torch.nn.functional.interpolate(frame[None].float(), size=hw, mode="area")[0]  # (3, H, W)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


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
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Play ALE games and write each episode as `out_dir/<Game>/episode_<k>.mkv` with its actions.

    Beside each video: `episode_<k>.actions.npy` (int64, one per frame: the action taken at that frame,
    leading to the next; -1 after the last frame), `episode_<k>.ram.npy` (uint8 (T, 128): the
    emulator's RAM at each frame, the ground truth for detectors) and `episode_<k>.json` (game, seed,
    policy, frameskip, fps, action meanings, per-frame rewards, total reward). The folder-per-game
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
        overwrite: re-record episodes whose files exist (otherwise they are kept, so calls are idempotent).

    Returns the paths of the episode videos.
    """
    from tqdm.auto import tqdm

    from magi.video_io import write_mp4

    games = [game] if isinstance(game, str) else list(game)
    if episodes < 1 or max_frames < 2:
        raise ValueError(f"record_atari: need episodes >= 1 and max_frames >= 2, got {episodes}, {max_frames}")
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
            continue
        env_id = f"ALE/{name}-v5"
        env = atari_env(name, frameskip, "record_atari")
        meanings = env.unwrapped.get_action_meanings()
        env_seed = int(np.random.SeedSequence([seed, games.index(name), k]).generate_state(1)[0])
        rng = np.random.default_rng([seed, games.index(name), k, 1])
        act, policy_name = _atari_policy(policy, name, k, meanings, rng, agent_noise)
        ale = env.unwrapped.ale
        obs, _ = env.reset(seed=env_seed)
        frames, actions, rewards, rams = [_resize_frame(obs, size)], [], [0.0], [ale.getRAM().copy()]
        previous = -1
        done = False
        while not done and len(frames) < max_frames:
            previous = act(obs, rams[-1], previous)
            obs, reward, terminated, truncated, _ = env.step(previous)
            actions.append(previous)
            rewards.append(float(reward))
            frames.append(_resize_frame(obs, size))
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
            "action_meanings": meanings, "rewards": rewards, "total_reward": sum(rewards),
            "game_over": bool(done),
        }, indent=1))
    return written


def load_ram(video_path) -> np.ndarray:
    """The emulator RAM recorded beside an Atari episode video: uint8 (T, 128), one row per frame."""
    path = Path(video_path).with_suffix(".ram.npy")
    if not path.is_file():
        raise FileNotFoundError(f"no RAM file beside {video_path} (expected {path})")
    return np.load(path, allow_pickle=False)


def load_actions(video_path) -> np.ndarray:
    """The per-frame actions recorded beside an Atari episode video (int64 (T,), -1 after the last frame)."""
    path = Path(video_path).with_suffix(".actions.npy")
    if not path.is_file():
        raise FileNotFoundError(f"no actions file beside {video_path} (expected {path})")
    return np.load(path, allow_pickle=False)


def atari(root, num_frames: int, size=64, game: str | list[str] = "Pong", episodes: int = 4,
          val_episodes: int = 0, split: str = "train", max_frames: int = 1000, policy: str = "sticky",
          record_seed: int = 0, frameskip: int = 4, codec: str = "ffv1", agent_noise: float = 0.25,
          actions: bool = True, **options):
    """Atari recordings as a dataset: record (once) into `root`, then read back with `VideoFolder`.

    Per game, `episodes` training and `val_episodes` validation episodes are recorded (skipped when
    already on disk); the split is by episode (`trainlist.txt` / `vallist.txt` in root) and `split`
    ("train", "val" or "all") picks one. Frames are recorded at `size`, so reading back needs no
    resize. Items carry `actions` (see `VideoFolder`). `options` go to `VideoFolder`.
    """
    from magi.data.video import VideoFolder

    if split not in ("train", "val", "all"):
        raise ValueError(f"atari.split: expected 'train', 'val' or 'all', got {split!r}")
    if split == "val" and val_episodes < 1:
        raise ValueError("atari.split: 'val' needs val_episodes >= 1")
    games = [game] if isinstance(game, str) else list(game)
    paths = record_atari(root, game=games, episodes=episodes + val_episodes, max_frames=max_frames,
                         size=size, policy=policy, seed=record_seed, frameskip=frameskip, codec=codec,
                         agent_noise=agent_noise, progress=options.get("progress", True))
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
