"""Who presses the keys in Atari recordings: the policies `record_atari` plays with.

"random" draws uniformly; "sticky" repeats the last action 3 times in 4; "agent" is the game's
scripted player (`ATARI_AGENTS`, reading the emulator's RAM) with sticky noise; "mix" alternates
sticky and agent episodes. A callable (observation, numpy Generator) -> action plays as given.
Every draw comes from the numpy Generator passed in; none from the global RNG.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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


def atari_policy(policy, game: str, episode: int, meanings: list[str], rng: np.random.Generator,
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
