"""Every shipped run config loads and validates; the demo configs also fit their data and VAE."""

from __future__ import annotations

from pathlib import Path

import pytest

from magi.config import RunConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_the_configs_issue_4_asks_for_exist():
    names = {p.stem for p in CONFIGS}
    assert {"ucf101_cosmos", "ucf101_2dvae", "k600_cosmos", "ucf101_cosmos_mtf", "demo",
            "demo_pretrained"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    if "_tokenizer" in path.stem:  # a frame tokenizer's run (magi tokenizer train), not a MAGI run
        from magi.config_io import to_dict
        from magi.world.tokenizer import TokenizerRunConfig

        run = TokenizerRunConfig.load(path)
        assert TokenizerRunConfig.from_dict(to_dict(run)) == run
        return
    run = RunConfig.load(path)
    assert RunConfig.from_dict(run.to_dict()) == run  # the resolved form round-trips
    if path.stem.startswith("ucf101"):
        assert run.model.num_classes == 101 and run.train.global_batch_size == 128
        assert run.train.epochs == 1400 and run.data.options["interval"] == "dynamic"
    if path.stem == "k600_cosmos":
        assert run.train.global_batch_size == 256 and run.train.epochs == 150
        assert run.data.sample_options["interval"] == 1
    if path.stem == "ucf101_cosmos_mtf":
        base = RunConfig.load(path.with_name("ucf101_cosmos.yaml"))
        assert run.model.teacher_forcing == "mtf" and base.model.teacher_forcing == "ctf"
        assert run.model.replace(teacher_forcing="ctf") == base.model and run.train == base.train


@pytest.mark.parametrize("name", ["demo", "demo_pretrained"])
def test_demo_configs_fit_their_data(tmp_path, name):
    from magi.trainer import Trainer

    path = next(p for p in CONFIGS if p.stem == name)
    run = RunConfig.load(path, ["data.options.num_videos=16", "data.sample_options.num_videos=4",
                                "train.global_batch_size=8"])
    trainer = Trainer(run, tmp_path)  # builds data, VAE and model; raises if the latents do not fit
    assert trainer.latent_frames == run.model.num_frames


@pytest.mark.parametrize("name", ["ucf101_cosmos", "ucf101_cosmos_mtf", "k600_cosmos"])
def test_paper_3d_configs_use_the_4x8x8_tokenizer(name, tmp_path):
    """The paper's 3D setup: Cosmos 0.1 CV4x8x8, 17-frame clips -> 5 latent frames of 16 x 16 x 16 at
    128 px (a scripted stand-in with the tokenizer's geometry takes the hub files' place)."""
    from cosmos_standin import make_cosmos_dir
    from magi.config import MagiConfig
    from magi.vae import COSMOS_CV4x8x8, load_vae

    run = RunConfig.load(next(p for p in CONFIGS if p.stem == name))
    assert run.vae.spec == COSMOS_CV4x8x8 and "subfolder" not in run.vae.options
    vae = load_vae(str(make_cosmos_dir(tmp_path / "cv4x8x8")), **run.vae.options)
    size, frames = run.data.options["size"], run.data.options["num_frames"]
    h = run.model.latent_size
    assert (frames, size) == (17, 128)
    assert vae.latent_shape(frames, size, size) == (run.model.num_frames, run.model.latent_channels, h, h)
    assert run.model.num_frames == 5 == MagiConfig.preset("magi-850m").num_frames == MagiConfig.preset("magi-b").num_frames
    if name == "k600_cosmos":  # samples continue 2 latent frames = the K600 protocol's 5 video frames
        assert vae.video_frames(run.train.sample.context_frames) == 5
