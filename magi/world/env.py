"""The world model as an environment an RL library can step (docs/world-model.md; DIAMOND's `WorldModelEnv`, our code).

- `WorldModelEnv`: a `gymnasium.Env` (registered as `magi/Boxing-v0` when `magi.world` is imported):
  the game's actions (`Discrete(18)` for Boxing), 64x64x3 uint8 observations, each `step` one frame of
  the model at its play setting (the model folder's `play.json`, as `magi play`), reward and episode end
  from the reward/end model beside it (`<model>/reward/`, `magi.world.reward`; without one: reward 0,
  never terminated; the episode terminates `end_delay` frames after the model's first end call, Boxing's
  clock entering its last second; in the "hud_lag" frame layout the score strip, and with it the reward
  read off it, comes one frame after the punch), `render_mode="rgb_array"`.
- `WorldModelVectorEnv`: B of them stepped in one forward pass (a `gymnasium.vector.VectorEnv`,
  `gymnasium.make_vec("magi/Boxing-v0", num_envs=B)`), each resetting on its own (next-step autoreset).

Every episode starts from real frames: `reset` takes a fresh emulator episode on a held-out seed (one
that training never used: `OPENING_SEED` + a draw from the env's `np_random`, as `magi play` opens its
sessions from `FIRST_SEED` on), its `k` opening frames (reset, then NOOPs; `k` = the model's training
length - 1, `magi.play.loop.opening_frames`) encoded as the model's context. `reset(seed=...)` is the
only seeding: it seeds the opening and the model's sampling noise, so the same seed and actions give
the same frames. `info["emulator_seed"]` names the opening's episode, so the same episode can be played
in the emulator beside the model (`experiments/world_env_returns.py`).

One step runs `Magi.stream` from the last `window - 1` frames of each environment with the actions
that led into them, exactly the sliding window `magi play` rebuilds every frame, so a batch of
environments at different times and openings shares one forward pass; a single environment's frames
equal the play loop's from the same seed and actions (tests/test_world_env.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from magi.world.reward import EndLatch

OPENING_SEED = 3_000_000  # emulator seeds of the env's openings start here (recordings: 32-bit hashed seeds;
# magi play: 1,000,000 on; the evaluation's person episodes: record seed 1,000,003)
OPENING_SEEDS = 1_000_000  # how many held-out openings reset draws from
DEFAULT_MODEL = "pretrained/atari"
ROUND_FRAMES = {"Boxing": 1_787}  # frames of a whole round from reset at frameskip 4 (the emulator's clock)
MAX_STEPS = 2_000  # truncation for other games


def default_max_steps(core: "WorldModelCore") -> int:
    """Steps until truncation: to the frame where the emulator's round ends (Boxing: frame 1,786 counted from
    reset, the opening included; the world model's clock does not reliably run out), else `MAX_STEPS`."""
    frames = ROUND_FRAMES.get(core.world.game) if core.world.frameskip == 4 else None
    return frames - core.k if frames else MAX_STEPS


def model_path(model: str | Path) -> Path:
    """`model` as given, or relative to the repository when it is the shipped default and the working
    directory is elsewhere."""
    path = Path(model)
    if not path.exists() and not path.is_absolute():
        here = Path(__file__).resolve().parents[2] / path
        if here.exists():
            return here
    return path


class WorldModelCore:
    """What the environments share, loaded once: the world (`magi.play.session.load_world`), the
    sampler setting, the reward/end model and an emulator for openings. `step_latents` is the batched
    step; the envs keep the state."""

    def __init__(self, model: str | Path = DEFAULT_MODEL, device: str = "cpu", setting: Optional[dict] = None,
                 reward_model: str | Path | None | bool = None) -> None:
        from magi.play.server import play_setting
        from magi.play.session import load_world, make_env

        path = model_path(model)
        self.world = load_world(path, device=device)
        options, _ = play_setting(path)
        for key, value in (setting or {}).items():
            if not hasattr(options, key):
                raise ValueError(f"setting: unknown sampler option {key!r}")
            setattr(options, key, value)
        options.long_video = "window"
        options.validate()
        self.options = options
        c = self.world.ckpt.model.config
        self.window = options.window or c.num_frames  # frames the sliding window holds, the new one included
        self.k = self.world.context_frames
        self.meanings = self.world.meanings
        self.noop = self.meanings.index("NOOP") if "NOOP" in self.meanings else 0
        self.null = self.world.ckpt.model.null_action
        self.frame_shape = (*self.world.size, 3)  # (H, W, 3)
        self._emulator = make_env(self.world.game, self.world.frameskip)
        self.reward = self._load_reward(path, reward_model)

    @staticmethod
    def _load_reward(path: Path, reward_model):
        """None (no reward/end model), or the `RewardEndModel` to use."""
        if reward_model is False:
            return None
        if reward_model is None or reward_model is True:
            from magi.world.reward import REWARD_DIR

            folder = path / REWARD_DIR
            if not folder.is_dir():
                if reward_model is True:
                    raise FileNotFoundError(f"reward_model: no reward/end model in {folder}")
                return None
            reward_model = folder
        from magi.world.reward import RewardEndModel

        if isinstance(reward_model, RewardEndModel):
            return reward_model.eval()
        return RewardEndModel.from_pretrained(reward_model)

    @property
    def history(self) -> int:
        """Frames of latents each environment keeps: the window's past frames."""
        return self.window - 1

    def opening(self, emulator_seed: int) -> np.ndarray:
        """uint8 (k, 3, H, W): a fresh emulator episode's first k frames (reset, then NOOPs), as `magi play`."""
        from magi.world.atari import noop_opening, resize_screens

        screens = noop_opening(self._emulator, emulator_seed, self.k, self.noop)
        return resize_screens(screens, self.world.size, self.world.layout)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> latents (B, T, C, h, w)."""
        return self.world.ckpt.encode(torch.from_numpy(frames))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> uint8 (B, 3, H, W)."""
        return self.world.ckpt.decode(latents[:, None])[:, 0].numpy()

    @torch.no_grad()
    def step_latents(self, latents: torch.Tensor, led: torch.Tensor, actions: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
        """One frame for each of B environments in one pass: `latents` (B, window-1, C, h, w) the last
        frames, `led` (B, window-1) the action that led into each (the null action for an episode's
        frame 0), `actions` (B,) the action taken at the last frame. Returns the new latents (B, C, h, w).

        `Magi.stream` from a context of `window` frames slides at once: the first (a placeholder here) leaves,
        the other window-1 enter the cache at positions 0.. with their actions, the new frame is made at
        the last position: what `magi play`'s window holds after its first frames."""
        o, model = self.options, self.world.ckpt.model
        B = latents.shape[0]
        context = torch.cat([latents[:, :1], latents], dim=1)  # (B, window, C, h, w); frame 0 leaves unread
        acts = torch.cat([led, actions[:, None]], dim=1)  # (B, window): acts[:, t] taken at context frame t
        stream = model.stream(None, context=context.to(self.world.ckpt.device), actions=acts.to(torch.long),
                              mask_steps=o.mask_steps, diffusion_steps=o.diffusion_steps, sampler=o.sampler,
                              temperature=o.temperature, cfg=o.cfg, generator=generator, long_video="window",
                              window=self.window, batch_size=B)
        try:
            return next(stream)
        finally:
            stream.close()

    def close(self) -> None:
        if self._emulator is not None:
            self._emulator.close()
            self._emulator = None


class _Batch:
    """The state of B environments: latents and led actions of the window, the last decoded frames and
    the actions between them (for the reward/end model), the frame counter."""

    def __init__(self, core: WorldModelCore, num_envs: int, device) -> None:
        self.core = core
        c = core.world.ckpt.model.config
        h = w = c.latent_size
        self.frames_kept = max(core.history + 1, core.reward.frames if core.reward is not None else 1)
        H, W = core.world.size
        self.latents = torch.zeros(num_envs, core.history, c.latent_channels, h, w, device=device)
        self.led = torch.full((num_envs, core.history), core.null, dtype=torch.long)
        self.frames = np.zeros((num_envs, self.frames_kept, 3, H, W), np.uint8)
        self.taken = np.full((num_envs, self.frames_kept - 1), core.noop, np.int64)  # actions between frames
        self.t = np.zeros(num_envs, np.int64)
        self.emulator_seed = np.zeros(num_envs, np.int64)
        self.end = EndLatch(num_envs, core.reward.config.end_delay if core.reward is not None else 0)

    def start(self, i: int, emulator_seed: int) -> None:
        """Environment i from a fresh opening: its last window-1 frames as latents (through the tokenizer),
        the frames the reward model sees as the model sees them (round trip)."""
        core = self.core
        frames = core.opening(emulator_seed)  # (k, 3, H, W)
        latents = core.encode(frames[None])[0]  # (k, C, h, w)
        n = core.history
        self.latents[i] = latents[-n:] if latents.shape[0] >= n else torch.cat(
            [latents[:1].expand(n - latents.shape[0], *latents.shape[1:]), latents])
        k = len(frames)
        led = [core.null] + [core.noop] * (k - 1)  # the action that led into each opening frame
        self.led[i] = torch.tensor((led[-n:] if k >= n else [core.null] * (n - k) + led), dtype=torch.long)
        seen = core.decode(latents)  # (k, 3, H, W) as the model sees them
        m = self.frames_kept
        self.frames[i] = seen[-m:] if k >= m else np.concatenate([np.repeat(seen[:1], m - k, 0), seen])
        self.taken[i] = core.noop
        self.t[i] = k - 1
        self.emulator_seed[i] = emulator_seed
        self.end.clear(i)

    def step(self, rows: np.ndarray, actions: np.ndarray, generator: torch.Generator):
        """Step the environments `rows` with `actions` (len(rows),) in one pass. Returns
        (frames uint8 (n, 3, H, W), reward (n,) float, terminated (n,) bool)."""
        core = self.core
        index = torch.as_tensor(rows, dtype=torch.long)
        acts = torch.as_tensor(actions, dtype=torch.long)
        new = core.step_latents(self.latents[index], self.led[index], acts, generator)  # (n, C, h, w)
        self.latents[index] = torch.cat([self.latents[index, 1:], new[:, None]], dim=1)
        self.led[index] = torch.cat([self.led[index, 1:], acts[:, None]], dim=1)
        image = core.decode(new)  # (n, 3, H, W)
        self.frames[rows] = np.concatenate([self.frames[rows, 1:], image[:, None]], axis=1)
        if self.taken.shape[1]:
            self.taken[rows] = np.concatenate([self.taken[rows, 1:], np.asarray(actions)[:, None]], axis=1)
        self.t[rows] += 1
        if core.reward is None:
            return image, np.zeros(len(rows), np.float64), np.zeros(len(rows), bool)
        f = core.reward.frames
        reward, called = core.reward.predict(self.frames[rows, -f:], self.taken[rows, -(f - 1):] if f > 1 else None)
        return image, reward.astype(np.float64), self.end.step(rows, called)


def _hwc(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(frame, -3, -1))  # (..., 3, H, W) -> (..., H, W, 3)


class WorldModelEnv(gymnasium.Env):
    """A world model stepped as a Gymnasium environment (see the module's docstring).

    Args:
        model: a world-model folder, run or checkpoint (default the shipped `pretrained/atari`).
        render_mode: None or "rgb_array" (`render()` returns the last frame, uint8 (H, W, 3)).
        device: where the model runs ("cpu", "cuda", ...).
        setting: sampler options over the model's play setting, e.g. {"diffusion_steps": 10}.
        reward_model: None (the model folder's `reward/` when present), False (none: reward 0, never
            terminated), or a folder / `RewardEndModel`.
        max_steps: steps after which an episode is truncated (default: where the emulator's round ends,
            Boxing 1,787 frames from reset, opening included; `default_max_steps`).
        core: a `WorldModelCore` to share (then model/device/setting/reward_model are its).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, model: str | Path = DEFAULT_MODEL, render_mode: Optional[str] = None, device: str = "cpu",
                 setting: Optional[dict] = None, reward_model=None, max_steps: Optional[int] = None,
                 core: Optional[WorldModelCore] = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.core = core or WorldModelCore(model, device, setting, reward_model)
        self.render_mode = render_mode
        self.max_steps = max_steps or default_max_steps(self.core)
        self.metadata = {**self.metadata, "render_fps": self.core.world.fps}
        self.action_space = spaces.Discrete(len(self.core.meanings))
        self.observation_space = spaces.Box(0, 255, self.core.frame_shape, np.uint8)
        self._state = _Batch(self.core, 1, self.core.world.ckpt.device)
        self._generator = torch.Generator(device=self.core.world.ckpt.device)
        self._steps = 0
        self._started = False

    def get_action_meanings(self) -> list[str]:
        return list(self.core.meanings)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        emulator_seed = (options or {}).get("emulator_seed")
        if emulator_seed is None:
            emulator_seed = OPENING_SEED + int(self.np_random.integers(OPENING_SEEDS))
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        self._state.start(0, int(emulator_seed))
        self._steps, self._started = 0, True
        return self._obs(), self._info()

    def step(self, action):
        if not self._started:
            raise RuntimeError("WorldModelEnv.step: call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected an index in 0..{self.action_space.n - 1}, got {action!r}")
        _, reward, end = self._state.step(np.array([0]), np.array([int(action)]), self._generator)
        self._steps += 1
        truncated = self._steps >= self.max_steps
        return self._obs(), float(reward[0]), bool(end[0]), truncated, self._info()

    def render(self):
        if self.render_mode == "rgb_array":
            return self._obs()
        return None

    def close(self) -> None:
        self.core.close()

    def _obs(self) -> np.ndarray:
        return _hwc(self._state.frames[0, -1])

    def _info(self) -> dict[str, Any]:
        return {"frame": int(self._state.t[0]), "emulator_seed": int(self._state.emulator_seed[0])}


class WorldModelVectorEnv(VectorEnv):
    """`num_envs` world-model environments stepped in one forward pass. Autoreset is next-step (gymnasium's
    default): the step after an episode ends resets that environment (its action ignored, reward 0)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, model: str | Path = DEFAULT_MODEL, render_mode: Optional[str] = None,
                 device: str = "cpu", setting: Optional[dict] = None, reward_model=None,
                 max_steps: Optional[int] = None, core: Optional[WorldModelCore] = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs}")
        if render_mode is not None and render_mode != "rgb_array":
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.core = core or WorldModelCore(model, device, setting, reward_model)
        self.num_envs, self.render_mode = num_envs, render_mode
        self.max_steps = max_steps or default_max_steps(self.core)
        self.single_action_space = spaces.Discrete(len(self.core.meanings))
        self.single_observation_space = spaces.Box(0, 255, self.core.frame_shape, np.uint8)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, len(self.core.meanings)))
        self.observation_space = spaces.Box(0, 255, (num_envs, *self.core.frame_shape), np.uint8)
        self._state = _Batch(self.core, num_envs, self.core.world.ckpt.device)
        self._generator = torch.Generator(device=self.core.world.ckpt.device)
        self._steps = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._started = False

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._np_random, self._np_random_seed = gymnasium.utils.seeding.np_random(
                seed if isinstance(seed, int) else int(seed[0]))
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        for i in range(self.num_envs):
            self._start(i)
        self._done[:] = False
        self._started = True
        return self._obs(), self._info()

    def _start(self, i: int) -> None:
        self._state.start(i, OPENING_SEED + int(self.np_random.integers(OPENING_SEEDS)))
        self._steps[i] = 0

    def step(self, actions):
        if not self._started:
            raise RuntimeError("WorldModelVectorEnv.step: call reset() first")
        actions = np.asarray(actions, np.int64).reshape(self.num_envs)
        if ((actions < 0) | (actions >= self.single_action_space.n)).any():
            raise ValueError(f"actions: expected indices in 0..{self.single_action_space.n - 1}, got {actions}")
        reward = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        for i in np.flatnonzero(self._done):
            self._start(i)
        rows = np.flatnonzero(~self._done)
        if len(rows):
            _, r, end = self._state.step(rows, actions[rows], self._generator)
            reward[rows], terminated[rows] = r, end
            self._steps[rows] += 1
            truncated[rows] = self._steps[rows] >= self.max_steps
        self._done = terminated | truncated
        return self._obs(), reward, terminated, truncated, self._info()

    def render(self):
        return self._obs() if self.render_mode == "rgb_array" else None

    def close_extras(self, **kwargs) -> None:
        self.core.close()

    def _obs(self) -> np.ndarray:
        return _hwc(self._state.frames[:, -1])

    def _info(self) -> dict[str, Any]:
        return {"frame": self._state.t.copy(), "emulator_seed": self._state.emulator_seed.copy()}


ENV_ID = "magi/Boxing-v0"


def register() -> None:
    """Register `magi/Boxing-v0` (idempotent): `gymnasium.make("magi/Boxing-v0", model=..., render_mode=...)`,
    `gymnasium.make_vec("magi/Boxing-v0", num_envs=B)` (one forward pass for all B)."""
    if ENV_ID in gymnasium.envs.registry:
        return
    gymnasium.register(id=ENV_ID, entry_point="magi.world.env:WorldModelEnv",
                       vector_entry_point="magi.world.env:WorldModelVectorEnv", disable_env_checker=False)
