"""One player's game: a real Atari emulator for the opening frames (and the "reality" pane), the
player's held keys mapped to the game's action, and the play loop (`magi.play.loop.play`, on the
world's engine: `Magi.stream` in PyTorch or the exported graphs in onnxruntime) drawing every frame
after the opening (docs/design.md §8, docs/export.md).

Conventions are the recordings' (`magi.world.atari.record_atari`): `gymnasium.make("ALE/<game>-v5",
frameskip=4, full_action_space=False)`, frames area-resized to the training size, and `actions[t]`
is the action taken at frame t, leading to frame t + 1. The stream asks for `actions(t)` just before
it generates frame t + 1, so the key held at that moment is the one the next frame answers.

Everything heavy here (emulator, VAE, model) runs on one worker thread per session, one call of
`PlaySession.next_frame` at a time; the event loop only sets plain attributes (`set_keys`,
`request_reset`, `reality`), which the worker reads between frames.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from magi.checkpoint import RUN_CONFIG_FILE
from magi.play.engine import TorchEngine
from magi.play.loop import MIN_CONTEXT, opening_frames, play  # noqa: F401 - MIN_CONTEXT re-exported
from magi.pretrained import LoadedCheckpoint, SamplingOptions

KEYS = ("up", "down", "left", "right", "fire")  # what the page may hold; arrows/WASD + space
NULL_ACTION = -1  # "no action" for Magi.stream: the action that led into frame 0
FIRST_SEED = 1_000_000  # emulator seeds for play start here (recordings use 32-bit hashed seeds)


class ModelLoadError(Exception):
    """The model given to `magi play` cannot be played; the message names the file at fault."""


# --------------------------------------------------------------------------------------------------
# Keys -> actions


def action_name(keys) -> str:
    """Held keys -> the ALE action name they spell: vertical, horizontal, FIRE ("UPRIGHTFIRE").
    Opposite directions held together cancel; nothing held is "NOOP"."""
    keys = set(keys)

    def one_of(a: str, b: str) -> str:
        return a.upper() if a in keys and b not in keys else b.upper() if b in keys and a not in keys else ""

    vertical, horizontal = one_of("up", "down"), one_of("right", "left")
    name = vertical + horizontal + ("FIRE" if "fire" in keys else "")
    return name or "NOOP"


def action_table(meanings: list[str]) -> dict[frozenset, int]:
    """Every combination of held keys -> an index into the game's `meanings`.

    A combination the game lacks falls back to the closest one it has: drop as few parts as possible,
    FIRE first, then the vertical, then the horizontal direction (Breakout: RIGHT+FIRE -> RIGHT,
    UP -> NOOP). NOOP when nothing matches (every ALE game has NOOP at index 0)."""
    index = {name: i for i, name in enumerate(meanings)}
    noop = index.get("NOOP", 0)
    table = {}
    for held in itertools.product((False, True), repeat=len(KEYS)):
        keys = frozenset(k for k, on in zip(KEYS, held) if on)
        parts = [p for p in ("fire", "vertical", "horizontal") if _part(keys, p)]  # dropped in this order
        candidates = (action_name(k for k in keys if _kind(k) not in dropped)
                      for n in range(len(parts) + 1) for dropped in itertools.combinations(parts, n))
        table[keys] = next((index[name] for name in candidates if name in index), noop)
    return table


def _kind(key: str) -> str:
    return {"up": "vertical", "down": "vertical", "left": "horizontal", "right": "horizontal"}.get(key, key)


def _part(keys: frozenset, part: str) -> bool:
    """Whether `part` ("fire", "vertical", "horizontal") contributes to the action name of `keys`."""
    return action_name(k for k in keys if _kind(k) == part) != "NOOP"


# --------------------------------------------------------------------------------------------------
# The shared model and game


@dataclass
class World:
    """What every session shares, loaded once: the model and VAE, and the game they were trained on."""

    ckpt: LoadedCheckpoint
    game: str
    frameskip: int
    size: tuple[int, int]  # (H, W) of the frames, as recorded
    meanings: list[str]  # the game's minimal action set, index = action
    context_frames: int  # k real opening frames given to the model
    sees: dict  # what the model sees, from its VAE (`describe_view`): shown on the page
    engine: object = None  # what draws the frames (`magi.play.engine`); None: PyTorch (`TorchEngine`)
    layout: str = "screen"  # how the emulator's screen becomes a frame, as recorded (`magi.world.atari.FRAME_LAYOUTS`)

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = TorchEngine(self.ckpt)

    @property
    def fps(self) -> float:
        """The game's own frame rate at this frameskip (Atari runs at 60 Hz)."""
        return 60.0 / self.frameskip

    @property
    def name(self) -> str:
        """A short name for the page: the run and step, or the checkpoint folder."""
        path = Path(self.ckpt.path)
        return f"{path.parent.parent.name} step {self.ckpt.step}" if self.ckpt.step is not None else path.name


def load_world(path: str | Path, device: str | torch.device = "cpu") -> World:
    """Load an action-conditioned checkpoint (a run or checkpoint directory) for play.

    Raises `ModelLoadError` naming the file at fault: a missing `config.json`, a model without
    actions, a `train_config.yaml` that names no Atari game, weights that do not load."""
    from magi.model.magi import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_config
    from magi.pretrained import load_pretrained, read_run_config, resolve_checkpoint
    from magi.world.atari import check_layout

    try:
        directory, _ = resolve_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise ModelLoadError(f"{Path(path) / CONFIG_NAME}: not found ({e})") from e
    directory = Path(directory)
    try:
        config = load_config(directory)
    except Exception as e:  # noqa: BLE001 - any failure here is the config file's
        raise ModelLoadError(f"{directory / CONFIG_NAME}: cannot read the model config ({e})") from e
    if config.num_actions < 1:
        raise ModelLoadError(f"{directory / CONFIG_NAME}: num_actions = {config.num_actions}; this model is "
                             "not action-conditioned, so it cannot be played")
    run = read_run_config(directory)
    if run is None:
        raise ModelLoadError(f"{directory / RUN_CONFIG_FILE}: not found; it names the game and the VAE")
    options = ((run.get("data") or {}).get("options") or {})
    game = options.get("game")
    if isinstance(game, (list, tuple)) and len(game) == 1:
        game = game[0]
    if not isinstance(game, str):
        raise ModelLoadError(f"{directory / RUN_CONFIG_FILE}: data.options.game should name one Atari game, "
                             f"got {game!r}")
    frameskip = int(options.get("frameskip", 4))
    size = options.get("size", 64)
    size = (size, size) if isinstance(size, int) else tuple(size)
    layout = options.get("layout", "screen")
    try:
        check_layout(layout, size, game, "data.options.layout")
    except ValueError as e:
        raise ModelLoadError(f"{directory / RUN_CONFIG_FILE}: {e}") from e

    weights = directory / (EMA_WEIGHTS_NAME if (directory / EMA_WEIGHTS_NAME).is_file() else WEIGHTS_NAME)
    try:
        ckpt = load_pretrained(directory, device=device)
    except Exception as e:  # noqa: BLE001 - corrupt or mismatched weights, a bad VAE spec
        text = str(e)
        where = "" if str(directory) in text else f"{weights}: "
        raise ModelLoadError(f"{where}cannot load the model ({type(e).__name__}: {text})") from e
    if ckpt.vae.temporal_stride != 1:
        raise ModelLoadError(f"{directory / RUN_CONFIG_FILE}: VAE {ckpt.vae_spec!r} merges frames; play "
                             "needs one latent frame per video frame (one action per frame)")
    if tuple(ckpt.frame_size) != size:
        raise ModelLoadError(f"{directory / RUN_CONFIG_FILE}: the model draws {ckpt.frame_size} frames but "
                             f"the game was recorded at {size}")
    env = make_env(game, frameskip)
    meanings = list(env.unwrapped.get_action_meanings())
    env.close()
    if len(meanings) > config.num_actions:
        raise ModelLoadError(f"{directory / CONFIG_NAME}: num_actions = {config.num_actions} but {game} has "
                             f"{len(meanings)} actions")
    context = opening_frames(config)
    return World(ckpt, game, frameskip, size, meanings, context, describe_view(ckpt), layout=layout)


@torch.no_grad()
def compile_world(world: World, options: SamplingOptions, log=None) -> bool:
    """Compile the model's per-frame hot spots (`LoadedCheckpoint.compile`) and draw a few frames at
    `options` from a blank opening, so every shape a game uses is compiled before a player connects.
    Where compilation fails (e.g. no C++ compiler) the model goes back to eager, with a warning through
    `log` (a logging.Logger); returns whether it runs compiled."""
    ckpt, k = world.ckpt, world.context_frames
    blank = torch.zeros(1, k, 3, *world.size, dtype=torch.uint8)  # (1, k, 3, H, W)
    try:
        ckpt.compile()
        frames = play(TorchEngine(ckpt), ckpt.encode(blank), lambda t: 0, options, seed=0)
        for _ in range(2):  # the first generated frame and one of the sliding window after it
            next(frames)
        frames.close()
        return True
    except Exception as e:  # noqa: BLE001 - torch.compile fails in many ways; eager still plays
        ckpt.compile(False)
        if log is not None:
            log.warning("compile: torch.compile failed (%s: %s); playing eager", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
        return False


@torch.no_grad()
def describe_view(ckpt: LoadedCheckpoint) -> dict:
    """What the model sees and draws, read off its VAE rather than assumed: the frame size, whether the
    VAE keeps colour (a colour probe frame sent through encode -> decode comes back gray or not), the
    VAE's spec and the latent grid per frame. {"size", "colour", "vae", "latent", "text"}."""
    H, W = ckpt.frame_size
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    probe = torch.stack([xs * 255 // max(W - 1, 1), ys * 255 // max(H - 1, 1),
                         torch.full_like(xs, 60)]).to(torch.uint8)  # (3, H, W): red across, green down
    back = ckpt.decode(ckpt.encode(probe[None, None]))[0, 0].int()  # (3, H, W) uint8 as the model sees it
    gray = bool(((back[0] - back[1]).abs().max() <= 2) and ((back[0] - back[2]).abs().max() <= 2))
    colour = "gray" if gray else "colour"
    C, (h, w) = ckpt.model.config.latent_channels, ckpt.model.config.grid
    spec = ckpt.vae_spec if len(str(ckpt.vae_spec)) <= 60 else "..." + str(ckpt.vae_spec)[-57:]
    text = (f"The model sees and draws {W}x{H} {colour} frames: its VAE ({spec}) turns each frame into "
            f"{h}x{w} latents of {C} channels.")
    return {"size": [H, W], "colour": colour, "vae": str(ckpt.vae_spec), "latent": [C, h, w], "text": text}


def make_env(game: str, frameskip: int):
    """The emulator exactly as the recordings made it (`magi.world.atari.atari_env`)."""
    from magi.world.atari import atari_env

    try:
        return atari_env(game, frameskip)
    except ValueError as e:
        raise ModelLoadError(f"{RUN_CONFIG_FILE}: {e}") from e


class Emulators:
    """A few idle emulators kept for the next sessions: making one loads the ROM (~0.1 s on this CPU),
    and every session resets its own with a new seed anyway. Thread-safe; shared by a server."""

    def __init__(self, game: str, frameskip: int, keep: int = 2) -> None:
        self.game, self.frameskip, self.keep = game, frameskip, keep
        self._idle: list = []
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return make_env(self.game, self.frameskip)

    def give_back(self, env) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(env)
                return
        env.close()


class SeedSource:
    """Held-out emulator seeds, a new one on every (re)start: FIRST_SEED, FIRST_SEED + 1, ...
    Thread-safe; shared by all sessions of a server."""

    def __init__(self, first: int = FIRST_SEED) -> None:
        self._next, self._lock = first, threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            seed, self._next = self._next, self._next + 1
            return seed


# --------------------------------------------------------------------------------------------------
# A session


@dataclass
class Frame:
    """One frame of play, ready to send."""

    index: int  # t, from 0 at each (re)start; the first `context_frames` are the real opening
    action: int  # the action that led into this frame (NULL_ACTION for frame 0)
    image: np.ndarray  # uint8 (3, H, W): what the model sees or drew
    reality: Optional[np.ndarray] = None  # uint8 (3, H, W): the emulator's frame t, when the pane is on
    latency_ms: float = 0.0  # time to produce the frame (model + decode); 0 for opening frames
    seed: int = 0


class PlaySession:
    """A player's game. Call `next_frame()` repeatedly from one worker thread; the event loop sets the
    keys (`set_keys`), asks for a restart (`request_reset`) and toggles `reality`."""

    def __init__(self, world: World, options: SamplingOptions, seeds: SeedSource,
                 emulators: Optional[Emulators] = None, reality: bool = False):
        self.world, self.options, self.seeds = world, options, seeds
        self._emulators = emulators or Emulators(world.game, world.frameskip, keep=0)
        self.reality = reality  # send the emulator's frames too
        self._table = action_table(world.meanings)
        self._noop = self._table[frozenset()]
        self.action = self._noop  # the game action the held keys map to (index into world.meanings)
        self.seed = seeds()  # the emulator seed of the current (or about to start) episode
        self.reality_over = False  # the emulator's episode ended; the model plays on
        self.reality_over_at: Optional[int] = None  # the frame index t at which it ended
        self._env = self._emulators.take()  # reset with this session's seed at the first frame
        self._frames: Optional[Iterator] = None  # the play loop (`magi.play.loop.play`)
        self._lock = threading.Lock()  # one frame at a time; close() waits for it
        self._reset_lock = threading.Lock()  # guards the hand-over of a requested seed
        self._pending_seed: Optional[int] = self.seed
        self._closed = False

    # -- called from the event loop: plain attribute writes, read by the worker between frames

    def set_keys(self, keys) -> int:
        """The keys now held (a subset of KEYS) -> the action the next frames use."""
        self.action = self._table[frozenset(keys)]
        return self.action

    def request_reset(self) -> int:
        """Start again from real opening frames of a new held-out episode, at the next frame.
        Returns the episode's emulator seed."""
        with self._reset_lock:
            self._pending_seed = self.seeds()
            return self._pending_seed

    # -- called from the worker thread

    @torch.no_grad()
    def next_frame(self) -> Frame:
        """The next frame: an opening frame from the emulator, or one the model generates."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the session is closed")
            with self._reset_lock:
                seed, self._pending_seed = self._pending_seed, None
            if seed is not None:
                self._start(seed)
            t, k = self._t, self.world.context_frames
            self._t += 1
            if t < k:
                return Frame(t, NULL_ACTION if t == 0 else self._noop, self._opening_view[t],
                             self._opening[t] if self.reality else None, seed=self.seed)
            played = next(self._frames)  # calls self._act(t - 1) after the frame's context part
            reality = None
            if self.reality and not self.reality_over:
                reality = self._resize(self._obs, self._last_obs)
            return Frame(t, self._last_action, played.image, reality, played.ms, self.seed)

    def close(self) -> None:
        """Stop the stream and hand the emulator back; waits for a frame in progress."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._frames is not None:
                self._frames.close()
                self._frames = None
            self._emulators.give_back(self._env)
            self._env = None

    def _start(self, seed: int) -> None:
        """Reset the emulator with a held-out seed, take k - 1 NOOPs for k real opening frames,
        encode them as the context and start the play loop from them."""
        if self._frames is not None:
            self._frames.close()
        from magi.world.atari import noop_opening, resize_screens

        w, k = self.world, self.world.context_frames
        self.seed = seed
        self.reality_over, self.reality_over_at = False, None
        screens = noop_opening(self._env, seed, k, self._noop)
        self._obs, self._last_obs, self._last_action = screens[-1], screens[-2] if k > 1 else None, NULL_ACTION
        opening = resize_screens(screens, w.size, w.layout)  # (k, 3, H, W) uint8, colour
        self._opening = list(opening)
        clip = torch.from_numpy(opening)[None]  # (1, k, 3, H, W)
        context = w.ckpt.encode(clip)  # (1, k, C, h, w)
        self._opening_view = list(w.ckpt.decode(context)[0].numpy())  # k x (3, H, W): as the model sees them
        self._frames = play(w.engine, context, self._act, self.options, self.seed)
        self._t = 0

    def _act(self, t: int) -> int:
        """`Magi.stream`'s action callback: the action taken at frame t. The opening's NOOPs for
        t < k - 1; after that the held keys, and the emulator takes the same step (reality)."""
        if t < self.world.context_frames - 1:
            return self._noop
        a = self._last_action = self.action
        if not self.reality_over:  # the emulator plays along even when the pane is off
            self._last_obs = self._obs
            self._obs, _, terminated, truncated, _ = self._env.step(a)
            if terminated or truncated:
                self.reality_over, self.reality_over_at = True, t + 1  # frame t + 1 is its last
        return a

    def _resize(self, obs: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        """(210, 160, 3) screen -> uint8 (3, H, W) in the model's frame layout; `previous` is the screen one step
        before (the "hud_lag" layout draws its score strip)."""
        from magi.world.atari import resize_frame

        return resize_frame(obs, self.world.size, self.world.layout, previous)
