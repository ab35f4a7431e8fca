"""Reading Boxing's score digits off 64x64 frames (docs/world-model.md): is the score legible, in real frames, through
the frame tokenizer, in the world model's frames?

Boxing draws each side's score in the top rows (the player's left of the clock, the opponent's right of
it; `experiments/score_on_punch.py` measures change in the same regions) and keeps it in the emulator's
RAM as BCD (byte 18 the player's, 19 the opponent's: 0x38 is 38). `ScoreReader` is a small classifier per
side and digit (tens, units) over the region's pixels, fitted on real frames with the RAM as labels
(`fit`); `read` gives the scores it reads. Fitted on reconstructions instead, it asks whether the
digits' information survives the tokenizer at all.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SCORE_BYTES = {"player": 18, "opponent": 19}
#: (rows, cols) of each side's score at 64x64, per frame layout (`magi.world.atari.FRAME_LAYOUTS`): in the
#: resized screen, a little wider than score_on_punch's regions (rows 0-4; cols 14-23 and 39-48); in the
#: "hud" strip, its first and last 16 columns (each side's two digits at the screen's resolution).
REGIONS = {"screen": {"player": (slice(0, 6), slice(12, 26)), "opponent": (slice(0, 6), slice(37, 51))},
           "hud": {"player": (slice(0, 7), slice(0, 16)), "opponent": (slice(0, 7), slice(48, 64))}}
REGIONS["hud_lag"] = REGIONS["hud"]  # the same strip, one frame late


def ram_scores(ram: np.ndarray) -> dict[str, np.ndarray]:
    """The scores in the RAM: uint8 (T, 128) -> {side: int (T,)} (BCD decoded: 0x38 -> 38)."""
    return {side: (ram[:, b] >> 4).astype(int) * 10 + (ram[:, b] & 15).astype(int) for side, b in SCORE_BYTES.items()}


class ScoreReader(nn.Module):
    """Per side, an MLP over the region's pixels with two softmax heads: the tens and the units digit.
    `layout` is the frames' (`magi.world.atari.FRAME_LAYOUTS`): where the digits are."""

    def __init__(self, hidden: int = 64, layout: str = "screen") -> None:
        super().__init__()
        if layout not in REGIONS:
            raise ValueError(f"ScoreReader.layout: expected one of {list(REGIONS)}, got {layout!r}")
        self.layout, self.regions = layout, REGIONS[layout]
        self.nets = nn.ModuleDict()
        for side, (rows, cols) in self.regions.items():
            n = 3 * (rows.stop - rows.start) * (cols.stop - cols.start)
            self.nets[side] = nn.Sequential(nn.Linear(n, hidden), nn.SiLU(), nn.Linear(hidden, 20))

    def features(self, frames: np.ndarray, side: str) -> torch.Tensor:
        rows, cols = self.regions[side]
        x = torch.from_numpy(np.ascontiguousarray(frames[:, :, rows, cols])).float() / 255.0
        return x.flatten(1)

    def fit(self, frames: np.ndarray, ram: np.ndarray, steps: int = 400, lr: float = 3e-3, batch: int = 256,
            seed: int = 0) -> "ScoreReader":
        """Fit on uint8 frames (N, 3, 64, 64) with their RAM (N, 128) as labels."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        scores = ram_scores(ram)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        feats = {side: self.features(frames, side) for side in self.regions}
        for _ in range(steps):
            idx = torch.from_numpy(rng.integers(len(frames), size=min(batch, len(frames))))
            loss = 0
            for side, net in self.nets.items():
                s = torch.from_numpy(scores[side])[idx]
                out = net(feats[side][idx])
                loss = loss + F.cross_entropy(out[:, :10], s // 10) + F.cross_entropy(out[:, 10:], s % 10)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return self.eval()

    @torch.no_grad()
    def read(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, 3, 64, 64) -> {side: the score read, int (N,)}."""
        out = {}
        for side, net in self.nets.items():
            o = net(self.features(frames, side))
            out[side] = (o[:, :10].argmax(-1) * 10 + o[:, 10:].argmax(-1)).numpy()
        return out


def accuracy(reader: ScoreReader, frames: np.ndarray, ram: np.ndarray, events: Optional[np.ndarray] = None) -> dict:
    """The fraction of frames whose score the reader reads right, per side (both digits)."""
    read, truth = reader.read(frames), ram_scores(ram)
    return {side: round(float((read[side] == truth[side]).mean()), 4) for side in reader.regions}
