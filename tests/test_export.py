"""`magi export onnx` (docs/export.md): the play setting's graphs in onnxruntime against PyTorch on the same
inputs and noise (latents within 1e-4, decoded frames within 1/255), the ONNX engine's stream against
`Magi.stream` from the same seed, the manifest, the refusals, and the command line. A tiny model with
random weights (an untrained head's zero output layer would make every frame a function of the noise
alone) in the default suite; the shipped pretrained/atari where it is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from magi.export.graphs import ContextPart, DecoderPart, FramePart, PlayShape, draw_noise
from magi.export.onnx import example_inputs, export_onnx, play_shape, read_manifest
from magi.play.engine import OnnxEngine, TorchEngine
from magi.play.loop import opening_frames, play
from magi.play.session import load_world
from magi.pretrained import SamplingOptions
from test_play import BOXING, tiny_world_model

import onnxruntime as ort  # noqa: E402  a hard dependency: fail, never skip

LATENT_TOL = 1e-4  # on the latents: absolute, scaled by their largest magnitude past 1 (`assert_latents_close`)
PIXEL_TOL = 1  # uint8 levels: 1/255
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained" / "atari"


def setting(mask_steps: int = 1, diffusion_steps: int = 3, window=None, **kw) -> SamplingOptions:
    return SamplingOptions(mask_steps=mask_steps, diffusion_steps=diffusion_steps, sampler="ddim",
                           long_video="window", window=window, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Boxing world model in colour (pixels:4), every weight perturbed so the head is not zero."""
    directory = tiny_world_model(tmp_path_factory.mktemp("export_model"), vae="pixels:4")
    world = load_world(directory)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in world.ckpt.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return world


def assert_latents_close(actual, desired, scaled: bool = True) -> None:
    """Within LATENT_TOL where the latents are O(1), as the shipped model's are; a random-weight tiny
    model draws latents in the hundreds (its eps is no estimate of the noise, so DDIM's x0 blows up), and
    there the same tolerance holds relative to the largest one (float32 rounding is relative)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = max(1.0, float(np.abs(desired).max())) if scaled else 1.0
    np.testing.assert_allclose(actual, desired, atol=LATENT_TOL * scale, rtol=0)


def run_graph(path: Path, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


def check_graphs(world, options, out: Path, scaled: bool = True) -> dict:
    """Export, then run each graph in onnxruntime and its module in PyTorch on the same inputs."""
    record = export_onnx(world, options, out)
    shape = play_shape(world, options)
    model = world.ckpt.model
    inputs = example_inputs(world, shape)
    g = torch.Generator().manual_seed(1)
    c = model.config
    window = torch.randn(1, shape.window - 1, c.latent_channels, *c.grid, generator=g)
    actions = torch.tensor([c.num_actions] + [3] * (shape.window - 2))  # the first led into by nothing
    with torch.no_grad():
        kv = ContextPart(model, shape)(window, actions)
    got_kv = run_graph(out / "context.onnx", {"latents": window, "actions": actions})
    assert got_kv.shape == tuple(kv.shape) == tuple(record["graphs"]["context"]["outputs"]["kv"]["shape"])
    assert_latents_close(got_kv, kv.numpy(), scaled)

    noise, rank = draw_noise(c.tokens_per_frame, c.token_dim, shape.mask_steps, g)
    feeds = {"kv": kv, "action": torch.tensor([5]), "noise": noise}
    if shape.mask_steps > 1:
        feeds["rank"] = rank
    assert set(feeds) == set(inputs["frame"])
    with torch.no_grad():
        latent = FramePart(model, shape)(*feeds.values())
    got = run_graph(out / "frame.onnx", feeds)
    assert got.shape == (1, c.latent_channels, *c.grid)
    assert float(latent.abs().max()) > 0.1  # the weights draw something, not only the noise
    assert_latents_close(got, latent.numpy(), scaled)

    with torch.no_grad():
        frame = DecoderPart(world.ckpt.vae)(latent)
    got_frame = run_graph(out / "decoder.onnx", {"latents": latent})
    assert got_frame.dtype == np.uint8 and got_frame.shape == (1, 3, *world.size)
    assert np.abs(got_frame.astype(int) - frame.numpy().astype(int)).max() <= PIXEL_TOL
    return record


@pytest.mark.parametrize("mask_steps", [1, 3])
def test_graphs_match_torch(world, tmp_path, mask_steps):
    check_graphs(world, setting(mask_steps=mask_steps), tmp_path)


def stream_both(world, engine_dir: Path, options, frames: int = 6, seed: int = 7):
    """The play loop on both engines from the same opening latents, player and seed."""
    c = world.ckpt.model.config
    context = torch.randn(1, opening_frames(c), c.latent_channels, *c.grid, generator=torch.Generator().manual_seed(2))
    runs = []
    for engine in (TorchEngine(world.ckpt), OnnxEngine(engine_dir, threads=1)):
        rng = np.random.default_rng(0)
        frames_ = play(engine, context, lambda t: int(rng.integers(-1, len(BOXING))), options, seed)
        runs.append([next(frames_) for _ in range(frames)])
        frames_.close()
    return runs


@pytest.mark.parametrize("mask_steps", [1, 2])
def test_onnx_engine_plays_torch_frames(world, tmp_path, mask_steps):
    """Same seed, same keys: the ONNX engine's frames are `Magi.stream`'s (its noise drawn the same way)."""
    options = setting(mask_steps=mask_steps, temperature=0.9)
    export_onnx(world, options, tmp_path)
    torch_run, onnx_run = stream_both(world, tmp_path, options)
    for a, b in zip(torch_run, onnx_run):
        assert a.t == b.t
        assert_latents_close(b.latent.numpy(), a.latent.numpy())
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= PIXEL_TOL
        assert b.latency_ms <= b.ms + 1e-6


def test_manifest(world, tmp_path):
    options = setting(mask_steps=2, diffusion_steps=4, window=2, temperature=0.8)
    record = export_onnx(world, options, tmp_path, openings=2)
    assert read_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text()) == record
    c = world.ckpt.model.config
    assert record["setting"] == {"mask_steps": 2, "diffusion_steps": 4, "sampler": "ddim", "window": 2, "cfg": 1.0,
                                 "temperature": 0.8}
    assert record["actions"] == BOXING and record["null_action"] == c.num_actions == 18 and record["noop"] == 0
    assert record["opening_frames"] == opening_frames(c) == 2
    assert record["latent"] == [c.latent_channels, *c.grid] and record["frame_size"] == [64, 64]
    table = {tuple(e["keys"]): e["action"] for e in record["key_table"]}
    assert len(table) == 32 and table[()] == 0 and BOXING[table[("fire", "right", "up")]] == "UPRIGHTFIRE"
    frame = record["graphs"]["frame"]
    assert frame["inputs"]["noise"]["shape"] == [2, c.tokens_per_frame, c.token_dim]
    assert frame["inputs"]["rank"]["dtype"] == "int64"
    assert record["graphs"]["context"]["inputs"]["latents"]["shape"] == [1, 1, c.latent_channels, *c.grid]
    for name, entry in record["graphs"].items():
        assert (tmp_path / entry["file"]).stat().st_size == entry["bytes"]
        session = ort.InferenceSession(str(tmp_path / entry["file"]), providers=["CPUExecutionProvider"])
        assert {i.name: i.shape for i in session.get_inputs()} == {k: v["shape"] for k, v in entry["inputs"].items()}
    assert [o["seed"] for o in record["openings"]] == [1_000_000, 1_000_001]
    first = record["openings"][0]
    frames = np.fromfile(tmp_path / first["frames"], np.uint8).reshape(first["frames_shape"])
    latents = np.fromfile(tmp_path / first["latents"], "<f4").reshape(first["latents_shape"])
    assert frames.shape == (2, 3, 64, 64) and latents.shape == (2, c.latent_channels, *c.grid)
    np.testing.assert_allclose(latents, world.ckpt.encode(torch.from_numpy(frames)[None])[0].numpy(), atol=1e-6)


def test_refusals(world, tmp_path):
    with pytest.raises(ValueError, match="sampler"):
        export_onnx(world, SamplingOptions(mask_steps=1, diffusion_steps=2, sampler="ddpm", long_video="window"), tmp_path)
    with pytest.raises(ValueError, match="cfg"):
        export_onnx(world, setting(cfg=1.5), tmp_path)
    with pytest.raises(ValueError, match="window"):
        export_onnx(world, setting(window=9), tmp_path)
    export_onnx(world, setting(), tmp_path)
    engine = OnnxEngine(tmp_path, threads=1)
    with pytest.raises(ValueError, match=r"diffusion_steps 5 \(exported: 3\)"):
        next(engine.stream(torch.zeros(1, 2, 48, 16, 16), lambda t: 0, setting(diffusion_steps=5), torch.Generator()))
    with pytest.raises(ValueError, match="actions"):
        next(engine.stream(torch.zeros(1, 2, 48, 16, 16), lambda t: 99, setting(), torch.Generator()))
    (tmp_path / "frame.onnx").unlink()
    with pytest.raises(ValueError, match="frame.onnx: missing"):
        OnnxEngine(tmp_path)
    with pytest.raises(ValueError, match="manifest.json: not found"):
        OnnxEngine(tmp_path / "nothing")
    with pytest.raises(ValueError, match="window"):
        PlayShape(1, 1, 1)


def test_command_line(world, tmp_path, capsys):
    from magi.cli import main

    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(world.ckpt.path), "--out", str(out), "--mask-steps", "1",
                 "--diffusion-steps", "2"]) == 0
    assert "context.onnx" in capsys.readouterr().out
    assert read_manifest(out)["setting"]["diffusion_steps"] == 2
    assert main(["export", "onnx", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "config.json: not found" in capsys.readouterr().err


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="pretrained/atari is not present")
def test_shipped_model(tmp_path):
    """The shipped Boxing model at its play setting: graphs and stream (its AutoencoderKL decoder too)."""
    from magi.play.server import play_setting

    world = load_world(SHIPPED)
    options, _ = play_setting(SHIPPED, compile=False)
    record = check_graphs(world, options, tmp_path, scaled=False)  # absolute: its latents are O(1)
    assert record["setting"]["window"] == options.window
    torch_run, onnx_run = stream_both(world, tmp_path, options, frames=4)
    for a, b in zip(torch_run, onnx_run):
        assert_latents_close(b.latent.numpy(), a.latent.numpy(), scaled=False)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= PIXEL_TOL


def test_play_engine_choice(world, tmp_path):
    """`magi play --engine`: as asked, else the model's play.json, else onnx where the setting allows it."""
    from magi.play.server import DEFAULT_ENGINE, play_engine

    model = Path(world.ckpt.path)
    assert DEFAULT_ENGINE == "onnx"
    assert play_engine(model, setting()) == "onnx" and play_engine(model, setting(), "torch") == "torch"
    ddpm = SamplingOptions(mask_steps=1, diffusion_steps=2, sampler="ddpm", long_video="window")
    assert play_engine(model, ddpm) == "torch" and play_engine(model, setting(cfg=2.0)) == "torch"
    with pytest.raises(ValueError, match="--engine onnx: the ONNX graphs unroll DDIM"):
        play_engine(model, ddpm, "onnx")
    other = tmp_path / "model"
    other.mkdir()
    (other / "play.json").write_text(json.dumps({"engine": "torch"}))
    assert play_engine(other, setting()) == "torch"
    (other / "play.json").write_text(json.dumps({"engine": "tpu"}))
    with pytest.raises(ValueError, match="engine: expected one of onnx, torch, got 'tpu'"):
        play_engine(other, setting())


def test_sessions_play_the_same_frames_on_both_engines(world, tmp_path):
    """A `magi play` session (emulator opening, keys, the play loop) on the ONNX engine shows the frames
    the PyTorch engine shows, and the server's hello names the engine."""
    import dataclasses

    from magi.play.server import BackgroundServer, create_app
    from magi.play.session import PlaySession, SeedSource
    from test_play import Client

    options = setting(mask_steps=1, diffusion_steps=2)
    onnx_world = dataclasses.replace(world, engine=OnnxEngine.for_world(world, options, tmp_path, threads=1))
    runs = []
    for w in (world, onnx_world):
        session = PlaySession(w, options, SeedSource())
        frames = []
        for i in range(world.context_frames + 5):
            session.set_keys(["up", "fire"] if i % 3 else ["left"])
            frames.append(session.next_frame())
        session.close()
        runs.append(frames)
    for a, b in zip(*runs):
        assert (a.index, a.action) == (b.index, b.action)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= PIXEL_TOL
    with BackgroundServer(create_app(onnx_world, options, max_sessions=1)) as url:
        client = Client(url)
        hello = client.next()
        assert hello["setting"]["engine"] == "onnx" and hello["setting"]["threads"] == 1
        assert len(client.frames(world.context_frames + 2)) == world.context_frames + 2
        client.close()
