"""`magi export onnx MODEL --out DIR`: a world model's play setting as ONNX graphs and a manifest
(docs/design.md §10, docs/export.md).

DIR/context.onnx   ContextPart: the window's W-1 frames -> their keys/values (runs before the key)
DIR/frame.onnx     FramePart: keys/values + action + noise -> the new frame's latents (DDIM unrolled)
DIR/decoder.onnx   DecoderPart: latents -> uint8 frame
DIR/manifest.json  shapes, the play setting, the game's actions and keys, the null action, openings

Static shapes, batch 1, TorchScript exporter at opset 17 (`torch.onnx.export(dynamo=False)`).
The noise is an input: `magi.export.graphs.draw_noise` draws it as `Magi.stream` does, so onnxruntime
plays the frames PyTorch plays (tests/test_export.py).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from magi.export.graphs import ContextPart, DecoderPart, FramePart, PlayShape

FORMAT = "magi-play-onnx"
FORMAT_VERSION = 1
OPSET = 17
MANIFEST = "manifest.json"
GRAPHS = ("context", "frame", "decoder")


def play_shape(world, options) -> PlayShape:
    """The static shapes of a sampler setting (a `SamplingOptions`) for `world`'s model; refuses what the
    graphs cannot compute, naming the option."""
    config = world.ckpt.model.config
    if options.sampler != "ddim":
        raise ValueError(f"sampler: the exported frame unrolls DDIM; got {options.sampler!r} (use --sampler ddim)")
    if options.cfg != 1.0:
        raise ValueError(f"cfg: the exported frame runs without guidance (cfg 1); got {options.cfg:g}")
    window = options.window or config.num_frames
    if not 2 <= window <= config.num_frames:
        raise ValueError(f"window: expected 2..{config.num_frames} (the model's training length), got {window}")
    return PlayShape(window, options.mask_steps, options.diffusion_steps)


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on Python-side constants: the shapes are static
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def example_inputs(world, shape: PlayShape) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs of the right shapes and dtypes for each graph (random latents and noise, NOOP actions)."""
    c = world.ckpt.model.config
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, shape.window - 1, c.latent_channels, *c.grid, generator=g)
    L, H = c.depth, c.num_heads
    kv = torch.zeros(L, 2, 1, H, (shape.window - 1) * c.tokens_per_frame, c.width // H)
    frame = {"kv": kv, "action": torch.zeros(1, dtype=torch.long),
             "noise": torch.randn(shape.mask_steps, c.tokens_per_frame, c.token_dim, generator=g)}
    if shape.mask_steps > 1:
        frame["rank"] = torch.randperm(c.tokens_per_frame, generator=g)
    return {"context": {"latents": latents, "actions": torch.zeros(shape.window - 1, dtype=torch.long)},
            "frame": frame, "decoder": {"latents": latents[:, 0]}}


def export_graphs(world, shape: PlayShape, out: Path) -> dict:
    """Write context.onnx, frame.onnx, decoder.onnx into `out`; -> their manifest entries."""
    model, vae = world.ckpt.model.eval(), world.ckpt.vae.eval()
    inputs = example_inputs(world, shape)
    parts = {"context": (ContextPart(model, shape), ["kv"]), "frame": (FramePart(model, shape), ["latents"]),
             "decoder": (DecoderPart(vae), ["frame"])}
    entries = {}
    for name, (module, output_names) in parts.items():
        args = tuple(inputs[name].values())
        path = out / f"{name}.onnx"
        _export(module, args, path, list(inputs[name]), output_names)
        with torch.no_grad():
            result = module(*args)
        entries[name] = {
            "file": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                       for k, v in inputs[name].items()},
            "outputs": {output_names[0]: {"shape": list(result.shape), "dtype": str(result.dtype).replace("torch.", "")}},
        }
    return entries


def key_table(world) -> list[dict]:
    """Every combination of held keys and the game action it plays (`magi.play.session.action_table`)."""
    from magi.play.session import action_table

    table = action_table(world.meanings)
    return [{"keys": sorted(keys), "action": action} for keys, action in sorted(table.items(), key=lambda kv: sorted(kv[0]))]


def manifest(world, options, shape: PlayShape, graphs: dict) -> dict:
    from magi.play.session import KEYS

    ckpt, c = world.ckpt, world.ckpt.model.config
    noop = world.meanings.index("NOOP") if "NOOP" in world.meanings else 0
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "opset": OPSET,
        "model": {"path": str(ckpt.path), "step": ckpt.step, "name": world.name, "ema": ckpt.ema,
                  "vae": str(ckpt.vae_spec), "parameters": sum(p.numel() for p in ckpt.model.parameters())},
        "game": world.game, "frameskip": world.frameskip, "fps": world.fps, "frame_size": list(world.size),
        "sees": world.sees,
        "setting": {"mask_steps": shape.mask_steps, "diffusion_steps": shape.diffusion_steps, "sampler": "ddim",
                    "window": shape.window, "cfg": 1.0, "temperature": options.temperature},
        "latent": [c.latent_channels, *c.grid], "tokens_per_frame": c.tokens_per_frame, "token_dim": c.token_dim,
        "patch_size": c.patch_size,
        "actions": list(world.meanings), "null_action": c.num_actions, "noop": noop,
        "keys": list(KEYS), "key_table": key_table(world),
        "opening_frames": world.context_frames,
        "conventions": ("actions[t] is the action taken at frame t, leading to frame t+1; a frame is conditioned "
                        "on the action that led into it (the null action for the first frame). Per frame: "
                        "context(latents of the last W-1 frames, the actions that led into them) -> kv; "
                        "frame(kv, the action that led into the new frame, noise (S, N, P) of N(0, 1) x temperature"
                        "[, rank]) -> latents; decoder(latents) -> uint8 frame. Token i of the noise is "
                        "latent[:, y*p:(y+1)*p, x*p:(x+1)*p] of patch (y, x), i = y*(w/p)+x, channels C-major."),
        "graphs": graphs,
        "openings": [],
    }


def write_openings(world, out: Path, count: int, first_seed: Optional[int] = None) -> list[dict]:
    """`count` held-out real openings (emulator seeds from play's first, NOOPs): for each, the k frames
    as the emulator drew them (uint8 (k, 3, H, W)) and their latents (float32 (k, C, h, w)), raw
    little-endian files in out/openings/."""
    from magi.world.stream_check import emulator_opening
    from magi.play.session import FIRST_SEED

    first_seed = FIRST_SEED if first_seed is None else first_seed
    folder = out / "openings"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        seed = first_seed + i
        frames = emulator_opening(world.game, world.context_frames, world.size, seed,
                                  world.layout)  # (1, k, 3, H, W)
        latents = world.ckpt.encode(frames)[0].float().cpu().numpy().astype("<f4")  # (k, C, h, w)
        (folder / f"{seed}.frames.u8").write_bytes(frames[0].numpy().astype(np.uint8).tobytes())
        (folder / f"{seed}.latents.f32").write_bytes(latents.tobytes())
        entries.append({"seed": seed, "frames": f"openings/{seed}.frames.u8", "frames_shape": list(frames[0].shape),
                        "latents": f"openings/{seed}.latents.f32", "latents_shape": list(latents.shape)})
    return entries


def export_onnx(world, options, out: Path, openings: int = 0) -> dict:
    """Export `world`'s model at the sampler setting `options` into `out`; -> the manifest written."""
    shape = play_shape(world, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graphs = export_graphs(world, shape, out)
    record = manifest(world, options, shape, graphs)
    if openings:
        record["openings"] = write_openings(world, out, openings)
    (out / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
    return record


def read_manifest(directory: Path) -> dict:
    """The manifest of an export folder; ValueError naming the file when it is missing or not ours."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: not found; write it with `magi export onnx MODEL --out {directory}`")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if record.get("format") != FORMAT or record.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {record.get('format')!r} version {record.get('version')!r}; expected "
                         f"{FORMAT!r} version {FORMAT_VERSION}")
    for name in GRAPHS:
        file = Path(directory) / record["graphs"][name]["file"]
        if not file.is_file():
            raise ValueError(f"{file}: missing (listed in {path})")
    return record
