"""Sprite detectors: where the sprite the player controls and its opponent are in a frame (docs/design.md §8,
docs/world-model.md). Small hand-written readers (Boxing's white and black boxers, Breakout's paddle), whose
own error on real frames is measured against the emulator's RAM (`calibrate`); `magi.world.evaluate`
scores a world model's control with them and `magi.world.stream_check` counts the sprites in a long stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch



def _gray(frames: torch.Tensor) -> np.ndarray:
    """uint8 (..., 3, H, W) -> float (..., H, W) gray (channel mean)."""
    return frames.float().mean(dim=-3).numpy()


def _centroid(weight: np.ndarray, top: int, left: int, H: int, W: int, min_pixels: int = 2) -> np.ndarray:
    """Centroid (x, y) of a 0/1 `weight` (..., h, w) cut from a frame (H, W) at row `top`, column `left`
    -> (..., 2) in pixels of a 64x64 frame; NaN with fewer than `min_pixels` pixels."""
    mass = weight.sum(axis=(-2, -1))
    ys = np.arange(top, top + weight.shape[-2], dtype=np.float64)[:, None]
    xs = np.arange(left, left + weight.shape[-1], dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight * xs).sum(axis=(-2, -1)) / mass
        y = (weight * ys).sum(axis=(-2, -1)) / mass
    out = np.stack([x, y], axis=-1)
    out[mass < min_pixels] = np.nan
    return out * np.array([64 / W, 64 / H])


def _boxing_player(gray: np.ndarray) -> np.ndarray:
    """The white boxer: centroid (x, y) of pixels brighter than the ring (gray > 140) below the score
    line (rows 0-6 of 64 in either frame layout: the "hud" strip draws the player's white score there)
    and right of the black border. gray (..., H, W) at any size -> (..., 2), NaN when absent."""
    H, W = gray.shape[-2:]
    top, left, bottom = round(7 * H / 64), round(4 * W / 64), round(60 * H / 64)
    weight = (gray[..., top:bottom, left:] > 140).astype(np.float64)  # (..., h, w)
    return _centroid(weight, top, left, H, W)


def _boxing_opponent(gray: np.ndarray) -> np.ndarray:
    """The black boxer: centroid (x, y) of pixels darker than the ring (gray < 55; the ring is ~110,
    the boxer 0) inside the ring's rows 8..55 of 64, which leaves out the black score (rows 1-3), the
    clock (row 6) and the logo (row 58), and right of the black border. gray (..., H, W) at any size
    -> (..., 2) in pixels of a 64x64 frame, NaN when absent."""
    H, W = gray.shape[-2:]
    top, left, bottom = round(8 * H / 64), round(4 * W / 64), round(56 * H / 64)
    weight = (gray[..., top:bottom, left:] < 55).astype(np.float64)  # (..., h, w)
    return _centroid(weight, top, left, H, W)


def _breakout_player(gray: np.ndarray) -> np.ndarray:
    """The paddle: the bright run in the paddle row (row 58 of 64, columns 3..60; docs/design.md §8).
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
    """Reads a sprite's position from frames, and its true position from the emulator RAM.

    `detect(frames uint8 (..., 3, H, W)) -> (..., 2)` (x, y) in pixels of a 64x64 frame (NaN when no
    sprite is found); `ram_xy(ram (..., 128)) -> (..., 2)` the RAM bytes of the same position (in the
    emulator's own units; `calibrate` fits the linear map between the two on real frames). Detection
    reads the channel mean, so it scores gray and colour frames alike (a gray VAE's output included).
    `sprite` names what is tracked: "player" (the sprite the actions move) or "opponent"."""

    game: str
    detect_fn: Callable[[np.ndarray], np.ndarray]
    ram_bytes: tuple[int, int]  # (x, y) RAM addresses; y may repeat x for 1-D players
    sprite: str = "player"

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        return self.detect_fn(_gray(frames))

    def ram_xy(self, ram: np.ndarray) -> np.ndarray:
        return ram[..., list(self.ram_bytes)].astype(np.float64)


PLAYER_DETECTORS = {
    "Boxing": PlayerDetector("Boxing", _boxing_player, (32, 34)),  # AtariARI: player_x, player_y
    "Breakout": PlayerDetector("Breakout", _breakout_player, (72, 72)),  # paddle x (docs/design.md §8)
}
OPPONENT_DETECTORS = {  # games with a second sprite that the actions do not move
    "Boxing": PlayerDetector("Boxing", _boxing_opponent, (33, 35), sprite="opponent"),  # AtariARI: enemy_x, _y
}


def player_detector(game: str) -> PlayerDetector:
    if game not in PLAYER_DETECTORS:
        raise ValueError(f"no player detector for {game!r}; detectors exist for {', '.join(PLAYER_DETECTORS)}")
    return PLAYER_DETECTORS[game]


def opponent_detector(game: str) -> Optional[PlayerDetector]:
    """The opponent's detector, or None for a game without one (Breakout)."""
    return OPPONENT_DETECTORS.get(game)


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
