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
    from magi.train import Trainer

    path = next(p for p in CONFIGS if p.stem == name)
    run = RunConfig.load(path, ["data.options.num_videos=16", "data.sample_options.num_videos=4",
                                "train.global_batch_size=8"])
    trainer = Trainer(run, tmp_path)  # builds data, VAE and model; raises if the latents do not fit
    assert trainer.latent_frames == run.model.num_frames
