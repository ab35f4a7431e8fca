"""The engines the play loop (`magi.play.loop.play`) runs a world model on (docs/export.md):

- `TorchEngine`: `Magi.stream` (long_video="window") and the VAE's decode, in PyTorch.
- `OnnxEngine`: the play setting exported by `magi export onnx` (`magi.export.onnx`), in onnxruntime: per
  frame the context graph (the window's keys/values), then the key, then the frame graph and the decoder.
  It draws its noise from the loop's `torch.Generator` exactly as `Magi.stream` does
  (`magi.export.graphs.draw_noise`), so both engines play the same frames from the same seed, to float
  rounding (tests/test_export.py).

Both: `stream(context, actions, options, generator)` -> latents (1, C, h, w) per frame, endlessly;
`decode(latents)` -> uint8 (3, H, W); `describe()` -> what the page shows.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

ENGINES = ("onnx", "torch")


class TorchEngine:
    name = "torch"

    def __init__(self, ckpt) -> None:
        self.ckpt = ckpt

    @property
    def device(self) -> torch.device:
        return self.ckpt.device

    def stream(self, context: torch.Tensor, actions: Callable[[int], int], options,
               generator: torch.Generator) -> Iterator[torch.Tensor]:
        o = self.ckpt
        return o.model.stream(None, context=context.to(o.device), actions=actions, mask_steps=options.mask_steps,
                              diffusion_steps=options.diffusion_steps, sampler=options.sampler,
                              temperature=options.temperature, cfg=options.cfg, generator=generator,
                              long_video="window", window=options.window)

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return self.ckpt.decode(latent[:, None])[0, 0].numpy()  # (3, H, W) uint8

    def describe(self) -> dict:
        return {"engine": "torch", "threads": torch.get_num_threads(), "compiled": self.ckpt.compiled}


def session_options(threads: Optional[int]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only
    return so


class OnnxEngine:
    name = "onnx"
    device = torch.device("cpu")  # where its noise is drawn

    def __init__(self, directory: str | Path, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        from magi.export.onnx import GRAPHS, read_manifest

        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.threads = threads or torch.get_num_threads()
        so = session_options(self.threads)
        self.sessions = {name: ort.InferenceSession(str(self.directory / self.manifest["graphs"][name]["file"]),
                                                    so, providers=["CPUExecutionProvider"]) for name in GRAPHS}
        self.frame_inputs = {i.name for i in self.sessions["frame"].get_inputs()}

    @classmethod
    def for_world(cls, world, options, directory: str | Path, threads: Optional[int] = None) -> "OnnxEngine":
        """Export `world`'s model at `options` into `directory` (the graphs only) and load it."""
        from magi.export.onnx import export_onnx

        export_onnx(world, options, Path(directory))
        return cls(directory, threads)

    def check(self, options) -> None:
        """Refuse a sampler setting the exported graphs were not made for, naming what differs."""
        s = self.manifest["setting"]
        asked = {"mask_steps": options.mask_steps, "diffusion_steps": options.diffusion_steps,
                 "sampler": options.sampler, "window": options.window or s["window"], "cfg": float(options.cfg)}
        differ = [f"{k} {v!r} (exported: {s[k]!r})" for k, v in asked.items() if v != s[k]]
        if differ:
            raise ValueError(f"{self.directory}: the ONNX graphs were exported for another setting: "
                             + ", ".join(differ))

    def stream(self, context: torch.Tensor, actions: Callable[[int], int], options,
               generator: torch.Generator) -> Iterator[torch.Tensor]:
        self.check(options)
        m = self.manifest
        W, null, k = m["setting"]["window"], m["null_action"], context.shape[1]
        if k < W - 1:
            raise ValueError(f"context: {k} frames, the window needs at least {W - 1}")
        history = {f: context[0, f].float().cpu().numpy() for f in range(k)}  # frame -> (C, h, w)
        taken: dict[int, int] = {}  # frame t -> the action taken at t (recent frames only)
        asked = [0]

        def led_into(f: int) -> int:
            """The action that led into frame f, asking `actions` in order (as `Magi.stream` does)."""
            while asked[0] < f:
                t = asked[0]
                a = int(actions(t))
                if not -1 <= a <= null:
                    raise ValueError(f"actions(t): expected an action index in 0..{null - 1} (-1 or {null} for "
                                     f"none), got {a}")
                taken[t] = null if a < 0 else a
                taken.pop(t - W - 1, None)
                asked[0] += 1
            return null if f == 0 else taken[f - 1]

        from magi.export.graphs import draw_noise

        context_run, frame_run = self.sessions["context"].run, self.sessions["frame"].run
        for t in itertools.count(k):
            window = range(t - W + 1, t)
            latents = np.stack([history[f] for f in window])[None]  # (1, W-1, C, h, w)
            acts = np.array([led_into(f) for f in window], dtype=np.int64)
            kv = context_run(None, {"latents": latents, "actions": acts})[0]  # before the key is read
            action = np.array([led_into(t)], dtype=np.int64)  # the key: actions(t - 1)
            noise, rank = draw_noise(m["tokens_per_frame"], m["token_dim"], m["setting"]["mask_steps"], generator,
                                     options.temperature)
            feeds = {"kv": kv, "action": action, "noise": noise.numpy()}
            if "rank" in self.frame_inputs:
                feeds["rank"] = rank.numpy()
            latent = frame_run(None, feeds)[0]  # (1, C, h, w)
            history[t] = latent[0]
            history.pop(t - W + 1, None)
            yield torch.from_numpy(latent)

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(latent.numpy(), dtype=np.float32)
        return self.sessions["decoder"].run(None, {"latents": x})[0][0]  # (3, H, W) uint8

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"engine": "onnx", "threads": self.threads, "onnxruntime": ort.__version__}
