"""The one play loop (docs/export.md): what `magi play`'s sessions, the evaluation's play stream
(`magi.world.stream_check.play_stream`) and `benchmarks/play.py` all run, so the benchmark times the
code a player gets.

An engine (`magi.play.engine`: PyTorch's `Magi.stream`, or the exported graphs in onnxruntime) streams
latent frames from real opening frames while asking a player callback for the action taken at each
frame; the loop decodes every frame to uint8 and times it: `ms` the whole step (the context part, the
key, the new frame, the decode), `latency_ms` from the moment the key was read to the decoded frame
(what a player feels: the context part of a frame runs before its key is read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

MIN_CONTEXT = 2  # real opening frames given to the model, at least


def opening_frames(config) -> int:
    """Real opening frames a world model is played from (a `MagiConfig`): its training length minus
    one, at least `MIN_CONTEXT`. The one place this number is computed (session, evaluation stream,
    benchmark, export)."""
    return max(MIN_CONTEXT, config.num_frames - 1)


@dataclass
class PlayedFrame:
    """One generated frame of the loop."""

    t: int  # frame index, counted from the first opening frame
    latent: torch.Tensor  # (1, C, h, w)
    image: np.ndarray  # uint8 (3, H, W)
    ms: float  # the whole step: engine (context part, key, new frame) + decode
    latency_ms: float  # from reading the key (the player's action at frame t - 1) to the decoded frame


def play(engine, context: torch.Tensor, player: Callable[[int], int], options, seed: int) -> Iterator[PlayedFrame]:
    """Endless frames after `context` (1, k, C, h, w) latents: `engine.stream` with `player(t)`, the action
    taken at frame t (asked once per frame, in order, just before frame t + 1 is made), noise from a
    `torch.Generator` seeded with `seed`, each frame decoded by `engine.decode`."""
    k = context.shape[1]
    asked = {"t": -1, "at": time.perf_counter()}

    def read(t: int) -> int:
        asked["t"], asked["at"] = t, time.perf_counter()
        return player(t)

    generator = torch.Generator(device=engine.device).manual_seed(seed)
    stream = engine.stream(context, read, options, generator)
    try:
        for t in range(k, 2**62):
            start = time.perf_counter()
            latent = next(stream)  # (1, C, h, w); reads the key (player(t - 1)) after the context part
            image = engine.decode(latent)  # (3, H, W) uint8
            end = time.perf_counter()
            key_at = asked["at"] if asked["t"] == t - 1 else start
            yield PlayedFrame(t, latent, image, (end - start) * 1000, (end - key_at) * 1000)
    finally:
        stream.close()

