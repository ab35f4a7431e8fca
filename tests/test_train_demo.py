"""`magi demo` end to end on tiny settings, the export of a run into a pretrained directory, and the
checkpoint shipped in pretrained/."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_train import write_config

from magi.config import RunConfig
from magi.demo import export_pretrained, main as demo_main
from magi.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def test_export_then_demo_end_to_end(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    run_dir = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(run_dir), "--set", "train.max_steps=4",
                       "--set", "train.sample.context_frames=1"]) == 0
    pretrained = tmp_path / "pretrained"
    info = export_pretrained(run_dir, pretrained, command="test")
    assert info["steps"] == 4 and len(info["loss_curve"]) == 4 and info["wall_time_s"] > 0
    assert sorted(p.name for p in pretrained.iterdir()) == ["config.json", "ema.safetensors",
                                                             "train_config.yaml", "training.json"]
    # a fine-tuning stage started from that export keeps its record
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "stage2"), "--set", "train.max_steps=2",
                       "--set", f"train.init_from={pretrained}"]) == 0
    stage2 = export_pretrained(tmp_path / "stage2", tmp_path / "pretrained2", command="test")
    assert stage2["init_from"]["path"] == str(pretrained) and stage2["init_from"]["training"]["steps"] == 4
    out = tmp_path / "demo"
    assert demo_main(["--out", str(out), "--pretrained", str(pretrained), "--config", str(cfg),
                      "--videos", "2", "--score-videos", "3", "--train-minutes", "0.001", "--set", "train.max_steps=3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pred = summary["predict"]
    assert pred["videos"] == 2 and pred["scored_videos"] == 3 and pred["predicted_frames"] == 2
    assert len(pred["psnr_db_per_predicted_frame"]) == 2
    for f in pred["files"].values():
        assert Path(f).stat().st_size > 0
    train = summary["train"]
    assert train["steps"] >= 1 and Path(train["loss_curve"]).stat().st_size > 0
    assert Path(train["checkpoint"], "ema.safetensors").is_file()
    assert all(Path(s).stat().st_size > 0 for s in train["samples"])


@pytest.mark.skipif(not (ROOT / "pretrained" / "config.json").is_file(), reason="no shipped checkpoint")
def test_shipped_checkpoint_matches_its_config_and_loads():
    from magi import Magi

    shipped = RunConfig.load(ROOT / "pretrained" / "train_config.yaml")
    committed = RunConfig.load(ROOT / "configs" / "demo_pretrained.yaml")
    assert shipped.model == committed.model
    assert dataclasses.replace(shipped.data, num_workers=0) == dataclasses.replace(committed.data, num_workers=0)
    for key in ("max_steps", "global_batch_size", "lr", "warmup_steps", "decay_steps", "ema_decay", "ema_warmup",
                "sample"):
        assert getattr(shipped.train, key) == getattr(committed.train, key), key
    model = Magi.from_pretrained(ROOT / "pretrained")
    assert model.config == committed.model
    info = json.loads((ROOT / "pretrained" / "training.json").read_text())
    assert info["steps"] > 1000 and info["wall_time_s"] > 0
