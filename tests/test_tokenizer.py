"""The frame tokenizer (magi/world/tokenizer.py): its loss, its training path on a tiny real recording, exact
resumption, and the export that `load_vae` reads like any diffusers VAE folder."""

import pytest
import torch
from safetensors.torch import load_file

from magi.world.tokenizer import (FramePairs, TokenizerRunConfig, change_weights, export_tokenizer,
                            train_tokenizer)
from magi.vae import DiffusersImageVAE, load_vae


def _run(root, **train) -> TokenizerRunConfig:
    return TokenizerRunConfig.from_dict({
        "model": {"block_out_channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8},
        "data": {"kind": "atari", "options": {"root": str(root), "num_frames": 2, "size": 32, "game": "Boxing",
                                              "episodes": 2, "max_frames": 12, "policy": "sticky",
                                              "progress": False}},
        "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "decay_steps": 2,
                  "checkpoint_every": 2, "log_every": 1, "num_threads": 1, "stats_frames": 64, **train},
    })


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxing")
    run = _run(root)
    from magi.data import build_dataset

    return root, FramePairs(build_dataset(run.data.kind, **run.data.options), progress=False)


def test_change_weights_mark_changed_pixels_and_their_neighbours():
    prev = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    cur = prev.clone()
    cur[0, 2, 4, 4] = 200  # one pixel changes, in one channel
    w = change_weights(prev, cur, change_weight=9.0)  # (1, 1, 8, 8)
    assert w.shape == (1, 1, 8, 8)
    assert (w[0, 0, 3:6, 3:6] == 10).all()  # the pixel and its 3x3 neighbourhood
    assert w.sum() == 64 + 9 * 9
    assert (change_weights(prev, prev, 9.0) == 1).all()


def test_frame_pairs_stay_inside_episodes_and_batches_are_a_function_of_the_step(recording):
    _, frames = recording
    assert frames.frames.shape[1:] == (3, 32, 32) and frames.frames.dtype == torch.uint8
    starts = set(int(s) for s in frames.episode_starts)
    assert not starts & set(frames.current.tolist())  # the first frame of an episode has no previous one
    a, b = frames.batch(0, 5, 4), frames.batch(0, 5, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(frames.batch(0, 6, 4)[1], a[1])


def test_training_lowers_the_loss(recording, tmp_path):
    """Training learns: on the same fixed frames the loss of the trained weights is well below the
    initial weights' (the loss is deterministic here: the posterior noise comes from a seeded generator)."""
    from magi.world.tokenizer import tokenizer_loss

    root, frames = recording
    run = _run(root, max_steps=60, lr=3e-3, decay_steps=0, checkpoint_every=60, log_every=10)
    previous, current = frames.batch(123, 0, 16)

    def loss_of(model):
        with torch.no_grad():
            return float(tokenizer_loss(model, previous, current, run.train.change_weight, run.train.kl_weight,
                                        torch.Generator().manual_seed(0))["loss"])

    torch.manual_seed(run.train.seed)
    before = loss_of(run.model.build(frames.size).eval())
    train_tokenizer(run, tmp_path / "run", frames=frames, progress=False, device="cpu")
    trained = run.model.build(frames.size).eval()
    trained.load_state_dict(load_file(str(tmp_path / "run/checkpoints/60/model.safetensors")))
    after = loss_of(trained)
    print(f"tokenizer loss on fixed frames: {before:.4f} -> {after:.4f} after 60 steps")
    assert after < 0.5 * before, (before, after)


def test_training_learns_resumes_exactly_and_exports_a_load_vae_folder(recording, tmp_path):
    root, frames = recording
    run = _run(root, max_steps=6, lr=3e-3, decay_steps=0)  # constant lr: the 3-step run follows the same schedule
    full = train_tokenizer(run, tmp_path / "full", frames=frames, progress=False, device="cpu")
    assert full["step"] == 6 and full["loss"] > 0

    half = _run(root, max_steps=3, lr=3e-3, decay_steps=0)
    train_tokenizer(half, tmp_path / "split", frames=frames, progress=False, device="cpu")
    resumed = train_tokenizer(run, tmp_path / "split", resume="auto", frames=frames, progress=False,
                              device="cpu")
    assert resumed["step"] == 6
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "full/checkpoints/6" / name))
        b = load_file(str(tmp_path / "split/checkpoints/6" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    with pytest.raises(FileExistsError, match="--resume auto"):
        train_tokenizer(run, tmp_path / "full", frames=frames, progress=False, device="cpu")

    out = export_tokenizer(tmp_path / "full", tmp_path / "export", frames=frames)
    vae = load_vae(str(out))
    assert isinstance(vae, DiffusersImageVAE)
    assert (vae.latent_channels, vae.spatial_stride) == (4, 2)
    from magi.data.video import to_float_video

    video = to_float_video(frames.frames[:24])[None]  # (1, 24, 3, 32, 32): every frame the stats saw
    z = vae.encode(video)  # (1, 24, 4, 16, 16), normalized by the exported statistics
    assert z.shape == (1, 24, 4, 16, 16)
    per_channel = z[0].transpose(0, 1).flatten(1)  # (C, N)
    assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=1e-3)
    assert torch.allclose(per_channel.std(1), torch.ones(4), atol=1e-3)
    assert vae.decode(z).shape == video.shape


def test_config_errors_name_the_key(tmp_path):
    base = _run(tmp_path)
    data = {"model": {"block_out_channels": [12, 16], "norm_num_groups": 8}}
    with pytest.raises(ValueError, match="block_out_channels"):
        TokenizerRunConfig.from_dict(data)
    with pytest.raises(ValueError, match="train.batch_size"):
        TokenizerRunConfig.from_dict({"train": {"batch_size": 0}})
    with pytest.raises(ValueError, match="unknown config key.*train.steps"):
        TokenizerRunConfig.from_dict({"train": {"steps": 10}})
    assert base.model.spatial_stride == 2


def test_command_refuses_a_missing_config(tmp_path, capsys):
    from magi.cli import main

    assert main(["tokenizer", "train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err


def test_an_exported_world_model_carries_its_tokenizer(recording, tmp_path):
    """Train a tiny world model on tokenizer latents, export it, remove the tokenizer's original folder:
    the exported folder still loads (its train_config names the copy inside it) and decodes colour."""
    import shutil

    import yaml

    from magi.cli import main
    from magi.demo import export_pretrained
    from magi.pretrained import load_pretrained

    root, frames = recording
    train_tokenizer(_run(root, max_steps=2), tmp_path / "tok", frames=frames, progress=False)
    tokenizer = export_tokenizer(tmp_path / "tok", tmp_path / "tok_export", frames=frames)
    run = tmp_path / "wm"
    assert main(["train", "--config", "configs/atari_world_model_tokens.yaml", "--out", str(run),
                 "--set", f"vae.spec={tokenizer}", "--set", f"data.options.root={root}",
                 "--set", "data.options.episodes=2", "--set", "data.options.val_episodes=0",
                 "--set", "data.options.max_frames=12", "--set", "data.options.size=32",
                 "--set", "data.options.policy=sticky", "--set", "data.sample_options={}",
                 "--set", "model.width=32", "--set", "model.head_width=32", "--set", "model.depth=1",
                 "--set", "train.max_steps=2", "--set", "train.global_batch_size=2",
                 "--set", "train.sample.num_videos=0", "--set", "train.progress=false",
                 "--set", "train.num_threads=null"]) == 0
    dest = tmp_path / "pretrained"
    export_pretrained(run, dest, command="test")
    shutil.rmtree(tokenizer)
    assert yaml.safe_load((dest / "train_config.yaml").read_text())["vae"]["spec"] == "tokenizer"
    assert load_vae(str(dest / "tokenizer")).latent_channels == 4
    loaded = load_pretrained(dest)
    video = loaded.vae.decode(torch.zeros(1, 1, 4, 16, 16))  # (1, 1, 3, 32, 32)
    assert video.shape == (1, 1, 3, 32, 32)
    assert (video[:, :, 0] - video[:, :, 1]).abs().max() > 0  # colour, not a gray copy


def test_hud_rows_weigh_the_score_strip_even_when_it_holds_still():
    prev = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    w = change_weights(prev, prev, 9.0, hud_rows=7, hud_weight=10.0)  # nothing changed
    assert (w[:, :, :7] == 11).all() and (w[:, :, 7:] == 1).all()
