"""Who presses the keys in Atari recordings: the policies `record_atari` plays with.

"random" draws uniformly; "sticky" repeats the last action 3 times in 4; "agent" is the game's
scripted player (`ATARI_AGENTS`, reading the emulator's RAM) with sticky noise; "mix" alternates
sticky and agent episodes. "person" (`PersonPlayer`, Boxing) plays as a person at the keyboard does:
keys held 1-60 frames in all 18 actions, long walks along the ropes and into the corners, clinches,
punches while moving; "person-mix" alternates person and agent episodes (the agent makes the game
progress); "all-mix" cycles person, sticky and agent episodes (long holds, short ones, game progress).
A callable (observation, numpy Generator) -> action plays as given. `StickyPlayer` is the seeded player
at the keys of a stream (`Magi.stream(actions=...)`, the play benchmarks).
Every draw comes from the numpy Generator passed in; none from the global RNG.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ATARI_POLICIES = ("random", "sticky", "agent", "mix", "person", "person-mix", "all-mix")


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


# --------------------------------------------------------------------------------------------------
# A person at the keyboard (Boxing)

MAX_HOLD = 60  # the longest a key is held, in frames (4 s at 15 frames/s)
BOXING_RING = (30, 109, 3, 87)  # the player's RAM x (byte 32) and y (byte 34) range: (x_min, x_max, y_min, y_max)
_DIRECTIONS = {(0, -1): "UP", (1, 0): "RIGHT", (-1, 0): "LEFT", (0, 1): "DOWN", (1, -1): "UPRIGHT",
               (-1, -1): "UPLEFT", (1, 1): "DOWNRIGHT", (-1, 1): "DOWNLEFT"}  # (dx, dy) in RAM units


class StickyPlayer:
    """A seeded player for `Magi.stream(actions=...)`: NOOP (`noop`, the game's NOOP index) for the
    opening's frames t < k - 1, then a key held that changes, with probability `change` per frame, to
    one drawn uniformly from the game's `num_actions` (a player who keeps a key for a few frames, as
    people do)."""

    def __init__(self, num_actions: int, context_frames: int, seed: int, change: float = 0.25,
                 noop: int = 0) -> None:
        self.num_actions, self.k, self.change, self.noop = num_actions, context_frames, change, noop
        self.rng, self.held, self.taken = np.random.default_rng(seed), noop, []

    def __call__(self, t: int) -> int:
        if t >= self.k - 1 and self.rng.random() < self.change:
            self.held = int(self.rng.integers(self.num_actions))
        a = self.held if t >= self.k - 1 else self.noop
        self.taken.append(a)
        return a


class PersonPlayer:
    """Boxing played as a person plays it: a sequence of intents, each holding one key.

    - "key" (35%): any of the game's actions, held for a length drawn log-uniformly from 1-60 frames;
    - "rope" (25%): walk to one of the 4 ropes or 4 corners (a direction key, with FIRE 30% of the
      time: punching while moving), keep pushing into it for 4-30 frames once blocked, then, half the
      time, walk along that rope (a new direction held 10-60 frames);
    - "clinch" (20%): walk into the opponent (the key towards it, FIRE 50% of the time) and keep pushing
      10-40 frames;
    - "idle" (10%): NOOP for 5-40 frames;
    - "jab" (10%): FIRE or a directional punch tapped for 1-8 frames.

    No key is held longer than `MAX_HOLD` frames in a row (a longer run is cut, the next intent starting
    early). Reads the player's and the opponent's positions from RAM (bytes 32-35). Every draw comes
    from `rng` (a numpy Generator): the same seed plays the same episode. Call as
    `player(observation, ram, previous_action) -> action`, once per frame."""

    INTENTS = (("key", 0.35), ("rope", 0.25), ("clinch", 0.2), ("idle", 0.1), ("jab", 0.1))

    def __init__(self, meanings: list[str], rng: np.random.Generator, ring: tuple = BOXING_RING) -> None:
        missing = sorted((set(_DIRECTIONS.values()) | {"NOOP", "FIRE"}) - set(meanings))
        if missing:
            raise ValueError(f"PersonPlayer: the game lacks the actions {missing} (Boxing's 18 are expected)")
        self.meanings, self.rng, self.ring = list(meanings), rng, ring
        self.plan: list[tuple[str, int, dict]] = []  # queued (intent, frames, details) after the current one
        self.action, self.left, self.run = meanings.index("NOOP"), 0, 0  # current key, frames left, run length
        self.walk: dict | None = None  # a walk under way: {"key", "pushed", "push", "last", "still"}
        self.intents: list[str] = []  # the intent of every hold started (for coverage reports)

    def _hold_length(self, lo: int = 1, hi: int = MAX_HOLD) -> int:
        return int(np.clip(np.round(np.exp(self.rng.uniform(np.log(lo), np.log(hi + 1)))) , lo, hi))

    def _key(self, direction: tuple[int, int], fire: bool) -> int:
        name = _DIRECTIONS[direction] + ("FIRE" if fire else "")
        return self.meanings.index(name)

    def _start(self, ram: np.ndarray) -> None:
        """Choose the next intent and the key it holds."""
        names, weights = zip(*self.INTENTS)
        intent = self.plan.pop(0) if self.plan else (names[int(self.rng.choice(len(names), p=weights))], 0, {})
        kind, frames, details = intent
        x, y, ox, oy = (int(ram[b]) for b in (32, 34, 33, 35))
        self.walk = None
        if kind == "key":
            action, hold = int(self.rng.integers(len(self.meanings))), self._hold_length()
        elif kind == "idle":
            action, hold = self.meanings.index("NOOP"), int(self.rng.integers(5, 41))
        elif kind == "jab":
            direction = [(0, 0)] + list(_DIRECTIONS)
            d = direction[int(self.rng.integers(len(direction)))]
            action = self.meanings.index("FIRE") if d == (0, 0) else self._key(d, True)
            hold = int(self.rng.integers(1, 9))
        elif kind == "along":  # along a rope after reaching it
            action, hold = self._key(details["direction"], self.rng.random() < 0.3), int(self.rng.integers(10, 61))
        elif kind == "rope":
            x0, x1, y0, y1 = self.ring
            targets = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
            dx, dy = targets[int(self.rng.integers(len(targets)))]
            action = self._key((dx, dy), self.rng.random() < 0.3)
            hold = MAX_HOLD
            self.walk = {"push": int(self.rng.integers(4, 31)), "pushed": 0, "last": (x, y), "still": 0,
                         "direction": (dx, dy)}
        else:  # clinch: towards the opponent, pushing once there
            dx, dy = _sign(ox - x), _sign(oy - y)
            direction = (dx, dy) if (dx, dy) != (0, 0) else (1, 0)
            action, hold = self._key(direction, self.rng.random() < 0.5), int(self.rng.integers(10, 41))
        if action == self.action and self.run >= MAX_HOLD:  # the same key again would hold it too long
            action = int((action + 1 + self.rng.integers(len(self.meanings) - 1)) % len(self.meanings))
        elif action == self.action:
            hold = min(hold, MAX_HOLD - self.run)
        self.intents.append(kind)
        self.action, self.left = action, max(1, hold)

    def __call__(self, observation, ram: np.ndarray, previous: int = -1) -> int:
        if self.walk is not None:  # a walk ends once blocked (rope, corner or opponent) and pushed a while
            x, y = int(ram[32]), int(ram[34])
            self.walk["still"] = self.walk["still"] + 1 if (x, y) == self.walk["last"] else 0
            self.walk["last"] = (x, y)
            if self.walk["still"] >= 3:
                self.walk["pushed"] += 1
                if self.walk["pushed"] >= self.walk["push"]:
                    self.left = 0
                    if self.rng.random() < 0.5 and not self.plan:  # then along the rope it reached
                        dx, dy = self.walk["direction"]
                        along = [(0, -1), (0, 1)] if dx and not dy else [(-1, 0), (1, 0)] if dy and not dx \
                            else [(-dx, 0), (0, -dy)]
                        self.plan.append(("along", 0, {"direction": along[int(self.rng.integers(len(along)))]}))
        if self.left <= 0 or self.run >= MAX_HOLD:
            before = self.action
            self._start(ram)
            self.run = self.run if self.action == before else 0
        self.left -= 1
        self.run += 1
        return self.action


def atari_policy(policy, game: str, episode: int, meanings: list[str], rng: np.random.Generator,
                  noise: float) -> tuple[Callable, str]:
    """(policy(observation, ram, previous_action) -> action, the policy's name for this episode).

    "sticky" repeats the last action 3 times in 4, else draws uniformly; "agent" is the game's scripted
    player taking a sticky random action with probability `noise`; "mix" alternates the two by episode
    (even episodes sticky, odd ones agent), so the data covers the action space and the game progresses;
    "person" is `PersonPlayer` (Boxing) and "person-mix" alternates it with the agent likewise;
    "all-mix" cycles person, sticky and agent (episode % 3), so the data holds keys as a person does, as
    briefly as sticky does (whose wild punches also run the scores up), and makes the game progress.
    """
    n = len(meanings)
    if policy == "mix":
        policy = "sticky" if episode % 2 == 0 or game not in ATARI_AGENTS else "agent"
    if policy == "person-mix":
        policy = "person" if episode % 2 == 0 or game not in ATARI_AGENTS else "agent"
    if policy == "all-mix":
        if game != "Boxing":
            raise ValueError(f"record_atari.policy: 'all-mix' plays PersonPlayer, which plays Boxing, not {game!r}")
        policy = ("person", "sticky", "agent")[episode % 3]

    def sticky(prev: int) -> int:
        return prev if (prev >= 0 and rng.random() < 0.75) else int(rng.integers(n))

    if callable(policy):
        return (lambda obs, ram, prev: int(policy(obs, rng))), getattr(policy, "__name__", "callable")
    if policy == "random":
        return (lambda obs, ram, prev: int(rng.integers(n))), policy
    if policy == "sticky":
        return (lambda obs, ram, prev: sticky(prev)), policy
    if policy == "person":
        if game != "Boxing":
            raise ValueError(f"record_atari.policy: 'person' plays Boxing (its RAM layout), not {game!r}")
        return PersonPlayer(meanings, rng), policy
    if policy == "agent":
        if game not in ATARI_AGENTS:
            raise ValueError(f"record_atari.policy: no scripted agent for {game!r}; agents exist for "
                             f"{', '.join(ATARI_AGENTS)}")
        agent = ATARI_AGENTS[game]
        return (lambda obs, ram, prev: sticky(prev) if rng.random() < noise else agent(ram, meanings)), policy
    raise ValueError(f"record_atari.policy: expected one of {ATARI_POLICIES} or a callable, got {policy!r}")
