"""Stand-ins for NVIDIA's Cosmos CV4x8x8 TorchScript files, scripted by the tests themselves.

Same call signature as the published `encoder.jit` / `decoder.jit` (cosmos_tokenizer/video_lib.py):
the encoder takes (B, 3, T, H, W) in [-1, 1] with T = 1 + 4k and returns a tuple `(latent, (a, b))`
whose first element is the latent (B, 16, 1 + k, H/8, W/8) (the AE formulation's placeholder posterior
follows it); the decoder takes that latent and returns (B, 3, 1 + 4k, H, W).

The stand-in is causal like the tokenizer (the first frame is encoded alone): each latent cell is the
mean of its 1x8x8 (first frame) or 4x8x8 block, projected to 16 channels by a fixed matrix of full
column rank, and the decoder applies its pseudo-inverse and repeats the cell. Video that is constant
on those blocks therefore round-trips exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch
from torch import nn

CHANNELS, SPATIAL, TEMPORAL = 16, 8, 4


def _projection(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(CHANNELS, 3, generator=g)  # (16, 3), full column rank


class StandInEncoder(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.proj = nn.Conv3d(3, CHANNELS, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(_projection(seed)[:, :, None, None, None])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 5 or x.shape[1] != 3 or (x.shape[2] - 1) % 4 != 0:
            raise RuntimeError("expected (B, 3, 1 + 4k, H, W)")
        x = torch.cat([x[:, :, :1].repeat(1, 1, 4, 1, 1), x[:, :, 1:]], dim=2)  # causal: (B, 3, 4 + 4k, H, W)
        B, C, T, H, W = x.shape
        cells = x.reshape(B, C, T // 4, 4, H // 8, 8, W // 8, 8).mean(dim=(3, 5, 7))  # (B, 3, 1 + k, H/8, W/8)
        return self.proj(cells), (torch.zeros(1), torch.zeros(1))


class StandInDecoder(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.proj = nn.Conv3d(CHANNELS, 3, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.linalg.pinv(_projection(seed))[:, :, None, None, None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cells = self.proj(z)  # (B, 3, 1 + k, h, w)
        x = cells.repeat_interleave(4, dim=2)[:, :, 3:]  # (B, 3, 1 + 4k, h, w)
        return x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)  # (B, 3, 1 + 4k, H, W)


def make_cosmos_dir(directory: Path, seed: int = 0, encoder: bool = True, decoder: bool = True) -> Path:
    """A directory laid out like the hub's nvidia/Cosmos-0.1-Tokenizer-CV4x8x8 (scripted stand-ins)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if encoder:
        torch.jit.script(StandInEncoder(seed)).save(str(directory / "encoder.jit"))
    if decoder:
        torch.jit.script(StandInDecoder(seed)).save(str(directory / "decoder.jit"))
    return directory


def block_video(B: int, latent_frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(B, 1 + 4 (latent_frames - 1), 3, 8h, 8w) in [-1, 1], constant on the stand-in's cells."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.rand(B, latent_frames, 3, h, w, generator=g) * 2 - 1  # (B, T', 3, h, w)
    video = cells.repeat_interleave(4, dim=1)[:, 3:]  # (B, T, 3, h, w)
    return video.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)  # (B, T, 3, H, W)
